"""Scaling past one process: data-parallel training under torchrun (gloo on the CPU), one Optuna
study shared by several workers on PostgreSQL, and experiments run in parallel by `dvc queue`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.scaling

# ResNet18 with group norm on the smoke profile's 128 images: a norm that works per example trains
# the same on two shards of a batch as on the whole batch (batch norm would not: without
# SyncBatchNorm, which PyTorch has only on GPUs, each rank normalises with its shard's statistics).
# A learning rate at which the run is stable: at the recipe's 0.1 the smoke run is chaotic, and the
# ~1e-7 by which two ranks' summed gradient differs from one process's grows to 1e-3 in 3 epochs
TINY_MODEL = ["--profile", "smoke", "--model", "resnet18", "--model-kwargs", '{"norm_layer": "groupnorm"}',
              "--lr", "0.02"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RESNET_REVIEW_ROOT": str(ROOT),
            "OMP_NUM_THREADS": "1"}


def train_command(out: Path, *args: str, nproc: int = 1) -> list[str]:
    entry = ["-m", "resnet_review.distributed", *TINY_MODEL, "--out", str(out), *args]
    if nproc == 1:
        return [sys.executable, *entry]
    return [str(BIN / "torchrun"), "--nproc_per_node", str(nproc), "--max-restarts", "0",
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *entry]


def train(out: Path, *args: str, nproc: int = 1, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(out, *args, nproc=nproc), cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def trained(out: Path) -> tuple[list[dict], dict[str, torch.Tensor]]:
    return json.loads((out / "history.json").read_text()), torch.load(out / "model.pt", weights_only=True)


def assert_same_training(a: Path, b: Path) -> None:
    """The same training within float tolerance: per-epoch losses and accuracies (one image may
    flip), and every weight (two ranks sum the gradient in another order than one process does:
    ~1e-5 after 6 epochs)."""
    (history_a, weights_a), (history_b, weights_b) = trained(a), trained(b)
    assert len(history_a) == len(history_b)
    for ha, hb in zip(history_a, history_b):
        assert ha["images"] == hb["images"]
        for key in ("train_loss", "val_loss", "lr"):
            assert ha[key] == pytest.approx(hb[key], rel=1e-4, abs=1e-6), (ha["epoch"], key)
        assert abs(ha["train_acc"] - hb["train_acc"]) <= 1 / ha["images"] + 1e-12, ha["epoch"]
        assert abs(ha["val_acc"] - hb["val_acc"]) <= 1 / 64 + 1e-12, ha["epoch"]  # the smoke profile's val_size
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        torch.testing.assert_close(weights_b[key], weights_a[key], rtol=1e-3, atol=1e-4, msg=key)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The reference: one process, 6 epochs of the global batch."""
    out = tmp_path_factory.mktemp("single")
    done = train(out, "--epochs", "6")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_gloo_ranks_train_like_one_process_on_the_global_batch(single_process, tmp_path):
    done = train(tmp_path, "--epochs", "6", nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 epochs on 2 process(es)" in done.stderr
    assert done.stderr.count("epoch 6/6") == 1  # only rank 0 logs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "model.pt", "resume.pt"]
    assert_same_training(single_process, tmp_path)


def rank_pid(launcher: psutil.Process, rank: int, timeout: float = 60) -> int:
    """The pid of the worker torchrun started as ``rank``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for child in launcher.children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank):
                    return child.pid
            except psutil.Error:  # a process that ended meanwhile
                continue
        time.sleep(0.1)
    raise AssertionError(f"torchrun started no rank {rank} within {timeout} s")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_killed_rank_fails_the_job_and_a_rerun_resumes_from_rank_0s_checkpoint(single_process, tmp_path):
    job = subprocess.Popen(train_command(tmp_path, "--epochs", "6", nproc=2), cwd=ROOT, env=env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    first_epoch = threading.Event()

    def read():
        for line in job.stdout:
            lines.append(line)
            if "epoch 1/6" in line:
                first_epoch.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert first_epoch.wait(120), "".join(lines)[-3000:]
        victim = rank_pid(psutil.Process(job.pid), rank=1)
        os.kill(victim, signal.SIGKILL)
        returncode = job.wait(timeout=120)  # torchrun tears the job down; no rank is left waiting
    finally:
        if job.poll() is None:
            job.kill()
    reader.join(10)
    log = "".join(lines)
    assert returncode != 0
    assert "Signal 9 (SIGKILL)" in log and "resnet_review.distributed FAILED" in log, log[-3000:]
    assert not (tmp_path / "model.pt").exists()
    assert (tmp_path / "resume.pt").is_file()  # rank 0 wrote a checkpoint after each finished epoch

    done = train(tmp_path, "--epochs", "6", nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr and "epoch 6/6" in done.stderr
    assert_same_training(single_process, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_diverging_loss_stops_every_rank_with_the_engines_message(tmp_path):
    done = train(tmp_path, "--epochs", "2", "--lr", "1e12", nproc=2, timeout=240)
    assert done.returncode != 0
    assert "training loss became" in done.stderr and "Lower the learning rate" in done.stderr
    # both ranks saw the summed loss and stopped at the same step: neither waited for the other
    assert done.stderr.count("NonFiniteLossError") >= 2, done.stderr[-3000:]
