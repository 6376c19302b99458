"""Shared fixtures: real Fashion-MNIST slices (never synthetic images posing as data)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet_review.config import Paths
from resnet_review.data import RAW_FILES, load_splits, prepare

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Each pytest-xdist worker (pyproject's addopts) gets an equal share of the cores, in-process and in
# every process a test starts (dvc, papermill kernels, torchrun ranks), which inherit
# OMP_NUM_THREADS: two workers of two OpenMP threads each on two cores would stall on each other's
# spinning threads. A run without workers (`pytest -n 0`) keeps torch's default.
if "PYTEST_XDIST_WORKER" in os.environ:
    share = max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(share)
    torch.set_num_threads(share)


def project_env() -> dict[str, str]:
    """The environment a user's shell has in a copy of the project: this venv's tools first."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RESNET_REVIEW_ROOT", None)
    return env


def sh(cmd: str, cwd: Path, timeout: float = 900) -> str:
    """Run a shell command in ``cwd`` and return its output; fail the test with it if it fails."""
    out = subprocess.run(cmd, cwd=cwd, env=project_env(), capture_output=True, text=True, timeout=timeout, shell=True)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out.stdout + out.stderr


def copy_project(dest: Path, *, profile: str = "smoke", results: bool = True, edit=None) -> Path:
    """A copy of the working tree (git-tracked and untracked-but-not-ignored files) plus the raw
    data, under ``profile``, changed by ``edit(dest)`` and committed to a git repository of its own
    whose DVC cache links files instead of copying them. ``results=False`` leaves the committed
    results of the pipeline and ``dvc.lock`` out, so that every one comes from the copy's own runs
    (the archived gpu runs under ``reports/gpu``, which no stage writes, stay)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "data" / "raw", dest / "data" / "raw")
    if not results:  # the committed gpu runs stay: the report reads them, as in every clone
        for path in (dest / "reports").iterdir():
            if path.name != "gpu":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        (dest / "dvc.lock").unlink(missing_ok=True)
    params = (dest / "params.yaml").read_text()
    (dest / "params.yaml").write_text(re.sub(r"^profile: \w+", f"profile: {profile}", params, flags=re.M))
    if edit is not None:
        edit(dest)
    sh("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm init", dest)
    # a smoke run writes GBs of weights: the cache links them instead of holding a second copy
    sh("dvc config --local cache.type hardlink,copy", dest)
    return dest


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request):
    """A folder for a module's shared fixture, removed once the module's tests are done unless one
    of them failed (pyproject's tmp_path_retention_policy does the same for each test's tmp_path):
    the weights such fixtures train would otherwise stay on disk until the whole run ends."""
    failed = request.session.testsfailed
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    if request.session.testsfailed == failed:
        shutil.rmtree(path, ignore_errors=True)


def _ensure_prepared() -> Path:
    paths = Paths(ROOT)
    if not paths.prepared.is_file():
        if not all((paths.raw / f).is_file() for f, _, _ in RAW_FILES.values()):
            pytest.exit("data/raw is missing: run `make data` (or `make test`, which does it)", returncode=2)
        prepare(paths.raw, paths.prepared, val_size=5000, split_seed=0)
    return paths.prepared


# The full tier runs in two pytest-xdist workers, one test file per worker at a time (pyproject's
# addopts). The smoke `dvc repro` in test_pipeline.py is its longest path (about ten of its
# minutes), so that file is handed out first: one worker runs it while the other takes the rest.
FIRST = ("test_pipeline.py",)


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: item.path.name not in FIRST)  # stable: files and tests keep their order


def pytest_sessionstart(session):
    # the tests, and a notebook checked by hand under nbval (`pytest --nbval-lax notebooks/…`), read
    # data/prepared like the pipeline does
    _ensure_prepared()


@pytest.fixture(scope="session")
def paths() -> Paths:
    return Paths(ROOT)


@pytest.fixture(scope="session")
def small_splits():
    """2000 training, 500 validation and 1000 test images of the real data set."""
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

