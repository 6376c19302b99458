"""Scaling past one process: data-parallel training under torchrun (gloo on the CPU), one Optuna
study shared by several workers on PostgreSQL, and experiments run in parallel by `dvc queue`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import psutil
import pytest
import torch
from conftest import copy_project, sh
from optuna.trial import TrialState
from test_tuning import open_stage, tiny_tuning_params

from resnet_review.results import HEADLINE
from resnet_review.techniques import tuning

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.scaling, pytest.mark.timeout(600)]

# ResNet18 with group norm on the smoke profile's 128 images: a norm that works per example trains
# the same on two shards of a batch as on the whole batch (batch norm would not: without
# SyncBatchNorm, which PyTorch has only on GPUs, each rank normalises with its shard's statistics).
# A learning rate at which the run is stable: at the recipe's 0.05 the smoke run is chaotic, and the
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
    entry = ["-m", "resnet_review.train_model", *TINY_MODEL, "--out", str(out), *args]
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
def single_process(module_tmp):
    """The reference: one process, 6 epochs of the global batch."""
    out = module_tmp
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
    assert "Signal 9 (SIGKILL)" in log and "resnet_review.train_model FAILED" in log, log[-3000:]
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


# --------------------------------------------------------------------------- one study, several workers
def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them off PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 and a free port, with an empty database; it runs
    as the ``postgres`` user when the tests run as root (the server refuses root)."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL's initdb is not installed: `make postgres` (part of `make test`) installs it")
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    home = Path(tempfile.mkdtemp(prefix="resnet-review-pg-"))
    if as_owner:
        shutil.chown(home, "postgres", "postgres")
    data, port = home / "data", free_port()

    def pg(program: str, *args, check: bool = True):
        out = subprocess.run([*as_owner, str(bindir / program), *map(str, args)], cwd=home, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0 or not check, f"{program} failed:\n{out.stdout}\n{out.stderr}"

    pg("initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
    pg("pg_ctl", "-D", data, "-l", home / "server.log", "-w", "-o", f"-h 127.0.0.1 -p {port} -k {home} -c fsync=off",
       "start")
    try:
        pg("createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "optuna")
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        pg("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(home, ignore_errors=True)


# a machine of the study: opens the stage's study on the shared server and runs the missing trials;
# with a marker path its first trial never ends (a machine lost mid-trial) and names itself there
WORKER = """
import json, sys, time
from pathlib import Path
import torch
from resnet_review.techniques import tuning
from resnet_review.results import HEADLINE
from resnet_review.config import validate_params
from resnet_review.experiment import Stage

params, work, root, *marker = sys.argv[1:]
torch.set_num_threads(1)
if marker:
    def stuck(*args, desc, **kwargs):
        Path(marker[0]).write_text(desc.rsplit("trial", 1)[1])
        time.sleep(3600)
    tuning.fit = stuck
work = Path(work)
stage = Stage("hparam_tuning", params=validate_params(json.loads(Path(params).read_text())),
              reports_dir=str(work / "stages"), models_dir=str(work / "models"), root=root)
tuning.run_study(stage)
"""


def start_worker(raw: dict, work: Path, root: Path, *marker: Path) -> subprocess.Popen:
    work.mkdir(parents=True)
    (work / "params.json").write_text(json.dumps(raw))
    (work / "worker.py").write_text(WORKER)
    with open(work / "worker.log", "w") as log:  # the worker holds its own copy of the file
        return subprocess.Popen([sys.executable, str(work / "worker.py"), str(work / "params.json"), str(work),
                                 str(root), *map(str, marker)], env=env(), stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_workers_share_one_postgres_study_and_a_killed_ones_trial_is_retried(postgres_url, paths, tmp_path):
    n_trials = 6
    raw = tiny_tuning_params(paths)
    raw["hparam_tuning"] |= {"storage": postgres_url, "study_name": "shared",
                             "n_trials": {"smoke": n_trials, "cpu": n_trials, "gpu": n_trials},
                             "heartbeat": {"interval_s": 1, "grace_period_s": 3}}
    # the study and its tables exist before the machines join (one creates them, as `dvc repro` on one would)
    tuning.open_study(open_stage(raw, paths, tmp_path / "first"))
    workers = []
    for name in ("lost", "kept"):  # the same params, sampler seed included, on both machines
        marker = [tmp_path / "lost_trial"] if name == "lost" else []
        workers.append(start_worker(raw, tmp_path / name, paths.root, *marker))
    lost, kept = workers
    try:
        deadline = time.time() + 120
        while not (tmp_path / "lost_trial").is_file() and time.time() < deadline:
            time.sleep(0.1)
        lost_trial = int((tmp_path / "lost_trial").read_text())
        # the surviving machine pauses until the lost trial's heartbeat is stale: otherwise it can finish
        # the study's last trials first, and nothing ever looks at the lost one again
        os.kill(kept.pid, signal.SIGSTOP)
        os.kill(lost.pid, signal.SIGKILL)  # mid-trial: its trial stays RUNNING until its heartbeat is stale
        assert lost.wait(30) == -signal.SIGKILL
        time.sleep(raw["hparam_tuning"]["heartbeat"]["grace_period_s"] + 2)
        os.kill(kept.pid, signal.SIGCONT)
        assert kept.wait(300) == 0, (tmp_path / "kept" / "worker.log").read_text()[-3000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # each trial recorded once
    finished = tuning.finished_trials(study)
    assert len(finished) == n_trials
    assert {t.state for t in trials} <= {*tuning.FINISHED, TrialState.FAIL}  # nothing left RUNNING or WAITING
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [lost_trial]
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == lost_trial]
    assert len(retried) == 1 and retried[0] in finished and retried[0].params == study.trials[lost_trial].params
    draws = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(draws)) == len(draws)  # no draw twice: the default recipe once, each worker's seed its own

    # the retrain step of any machine reads the shared study's best recipe
    baseline = open_stage(raw, paths, tmp_path / "retrain", name="baseline")
    baseline.run("resnet50")  # the control variant's name, as the baseline stage writes it
    baseline.finish()
    stage = open_stage(raw, paths, tmp_path / "retrain")
    outcome = tuning.run_tuning(stage)
    best = study.best_trial
    assert outcome.summary["best_trial"] == best.number and outcome.summary["failed"] == 1
    assert (outcome.recipe, outcome.batch_size) == tuning.recipe_from(best.params, tuning.search_space(stage),
                                                                      stage.recipe)
    assert outcome.summary["storage"] == postgres_url  # no password to mask


# --------------------------------------------------------------------------- dvc queue
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dvc_queue_runs_two_smoke_experiments_in_two_workers_at_once(tmp_path):
    dest = copy_project(tmp_path, results=False)
    # the queue's workspaces check data/raw out of the DVC cache: `make data` puts it there
    sh("DVC=dvc PYTHON=python bash scripts/fetch_data.sh", dest)
    rates = (0.02, 0.08)
    for lr in rates:  # the baseline stage and its upstream only, under the smoke profile
        sh(f"dvc exp run --queue baseline -S profile=smoke -S train.lr={lr}", dest)
    # the workers it starts outlive it: to a file, not to the pipe `sh` would wait on until they end
    sh("dvc queue start -j 2 > queue-start.log 2>&1", dest)
    most_running, polls = 0, []
    try:
        deadline = time.time() + 780
        while True:
            status = sh("dvc queue status", dest)
            polls.append(status)
            most_running = max(most_running, len(re.findall(r"\bRunning\b", status)))
            if not re.search(r"\b(Queued|Running)\b", status):
                break
            assert time.time() < deadline, f"the queue did not finish in time:\n{status}"
            time.sleep(5)
    finally:
        subprocess.run("dvc queue stop --kill", cwd=dest, shell=True, env=env(), capture_output=True, timeout=120)
    assert len(re.findall(r"\bSuccess\b", status)) == 2, status
    assert most_running == 2, "\n".join(polls)  # both ran at the same time, neither waited for a lock
    sh("dvc exp show --json > experiments.json", dest)
    results = {}
    for commit in json.loads((dest / "experiments.json").read_text()):
        for experiment in commit.get("experiments") or []:
            data = experiment["revs"][0]["data"]
            params = data["params"]["params.yaml"]["data"]
            metrics = data["metrics"]["reports/stages/baseline/headline/resnet50.json"]["data"]  # the headline
            assert params["profile"] == "smoke"
            results[params["train"]["lr"]] = metrics
    assert sorted(results) == list(rates)
    for block in results.values():
        assert set(block) == set(HEADLINE) and 0 <= block["test_acc"] <= 1
