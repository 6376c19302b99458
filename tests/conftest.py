"""Shared fixtures: real Fashion-MNIST slices (never synthetic images posing as data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from resnet_review.config import Paths
from resnet_review.data import RAW_FILES, load_splits, prepare

ROOT = Path(__file__).resolve().parents[1]


def _ensure_prepared() -> Path:
    paths = Paths(ROOT)
    if not paths.prepared.is_file():
        if not all((paths.raw / f).is_file() for f, _, _ in RAW_FILES.values()):
            pytest.exit("data/raw is missing: run `make data` (or `make test`, which does it)", returncode=2)
        prepare(paths.raw, paths.prepared, val_size=5000, split_seed=0)
    return paths.prepared


def pytest_sessionstart(session):
    # the notebooks under nbval read data/prepared like the pipeline does
    _ensure_prepared()


@pytest.fixture(scope="session")
def paths() -> Paths:
    return Paths(ROOT)


@pytest.fixture(scope="session")
def small_splits():
    """2000 training, 500 validation and 1000 test images of the real data set."""
    torch.set_num_threads(2)
    return load_splits(_ensure_prepared(), train_size=2000, val_size=500, test_size=1000, img_size=28)


@pytest.fixture(scope="session")
def tiny_splits():
    return load_splits(_ensure_prepared(), train_size=256, val_size=128, test_size=256, img_size=28)


@pytest.fixture(scope="session")
def load_repo_module():
    """Imports a file of the repository outside the package (a script or benchmark) by its path
    relative to the root, e.g. ``load_repo_module("benchmarks/repro_time.py")``."""
    def load(relative: str):
        path = ROOT / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
