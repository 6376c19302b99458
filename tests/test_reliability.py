"""Nothing is lost on bad input, interrupts, kills or races: probes of a copy of the project under
the smoke profile, each the way a user would meet it (a `dvc` command, a signal to a PID).

"Intact" means the committed results (``reports/``), ``data.dvc`` and ``params.yaml`` are
exactly as git has them and ``data/prepared`` has its md5 of before the probe.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BIN, copy_project, project_env, sh

pytestmark = [pytest.mark.slow, pytest.mark.probe, pytest.mark.timeout(900)]  # the first builds the project

BASELINE = ["python", "-m", "resnet_review.pipeline", "notebooks/01_baseline_resnet50.ipynb", "--stage", "baseline"]
KERNEL_RUNNING = "stage 'baseline': profile=smoke"  # the notebook's first line of output: its kernel is up


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def project(module_tmp):
    """The project after `dvc repro data_overview` (the prepared data and one notebook stage
    downstream of it), committed; the other stages' committed results stand beside it."""
    dest = copy_project(module_tmp)
    sh("dvc repro data_overview", dest, timeout=600)
    sh("git add -A && git -c user.name=t -c user.email=t@t commit -qm repro", dest)
    yield {"root": dest, "prepared_md5": md5(dest / "data/prepared/fashion_mnist.pt")}


@pytest.fixture
def root(project):
    """The project root; after each probe the params are put back and everything checked intact."""
    yield project["root"]
    dest = project["root"]
    subprocess.run(["git", "checkout", "-q", "HEAD", "--", "params.yaml"], cwd=dest, check=True)
    assert_intact(project)


def assert_intact(project) -> None:
    dest = project["root"]
    changed = subprocess.run(["git", "status", "--porcelain", "--", "reports", "data.dvc", "params.yaml"],
                             cwd=dest, capture_output=True, text=True, check=True).stdout
    assert changed == "", f"results or records changed:\n{changed}"
    assert md5(dest / "data/prepared/fashion_mnist.pt") == project["prepared_md5"]


def run(cmd: list[str] | str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=project_env(), capture_output=True, text=True, timeout=timeout,
                          shell=isinstance(cmd, str))


def _as_a_terminal_job() -> None:
    # a test run started in the background (`make test &`) ignores SIGINT, and ignored signals are
    # inherited: give the job the default Ctrl-C a terminal's foreground job has
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(cmd: list[str], cwd: Path, log: Path, **env: str) -> subprocess.Popen:
    """``cmd`` in a session of its own (a terminal's foreground job), its output to ``log``."""
    return subprocess.Popen(cmd, cwd=cwd, env={**project_env(), **env}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_as_a_terminal_job)


def wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.monotonic()
    while text not in log.read_text():
        assert proc.poll() is None, f"exited ({proc.returncode}) before {text!r}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() - t0 < timeout, f"no {text!r} after {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def processes_in(root: Path) -> list[int]:
    """PIDs of the processes working in ``root`` (the stage runner and its notebook kernel)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if Path(os.readlink(proc / "cwd")) == root:
                    pids.append(int(proc.name))
            except OSError:  # gone, or not ours to read
                pass
    return pids


def assert_none_left(root: Path, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while (left := processes_in(root)) and time.monotonic() - t0 < timeout:
        time.sleep(0.2)
    if left:  # kill them, so that an orphan's training does not slow or block the tests after this one
        names = {pid: _command_of(pid) for pid in left}
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"processes still running in the project: {names}")


def _command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def edit_params(root: Path, old: str, new: str) -> None:
    text = (root / "params.yaml").read_text()
    assert text.count(old) >= 1, old
    (root / "params.yaml").write_text(text.replace(old, new, 1))


def make_the_baseline_run_for_minutes(root: Path) -> None:
    """A smoke stage ends in seconds: a probe that stops one mid-run must not race its end (a run
    that finished before the kill would have replaced the results the probe checks are kept)."""
    text = (root / "params.yaml").read_text()
    longer, n = re.subn(r"(\n  smoke:\n(?:    .*\n)*?    epochs: )1\n", r"\g<1>500\n", text)
    assert n == 1, "params.yaml's smoke profile has no `epochs: 1`"
    (root / "params.yaml").write_text(longer)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("old, new, message", [
    ("baseline:\n  model: resnet50", "baseline:\n  modle: resnet50", "baseline.modle: Extra inputs are not permitted"),
    ("baseline:\n  model: resnet50", "baseline:\n  model: seresnet5O",
     "baseline.model: Value error, unknown model 'seresnet5O'; models like it: seresnet50"),
    ("\nprofile: smoke", "\nprofile: nope", "Parameters 'profiles.nope' are missing from 'params.yaml'"),
], ids=["misspelled_key", "unknown_model", "unknown_profile"])
def test_bad_params_under_dvc_repro_are_refused_before_anything_is_deleted(root, old, new, message):
    edit_params(root, old, new)
    out = run("dvc repro baseline", root)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "running notebooks" not in out.stderr  # no kernel started


def test_exp_run_with_an_unknown_profile_deletes_nothing(root):
    out = run("dvc exp run -S profile=nope", root)
    assert out.returncode != 0 or "ERROR" in out.stderr
    assert "Parameters 'profiles.nope' are missing" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr


def test_a_failing_cell_keeps_the_previous_results_and_the_failed_notebook(root):
    edit_params(root, "baseline:\n  model: resnet50",
                "baseline:\n  model: resnet50\n  model_kwargs: {no_such_option: 1}")
    out = run("dvc repro baseline", root)
    assert out.returncode != 0
    assert "failed in cell" in out.stderr and "TypeError" in out.stderr
    assert "the previous results in reports/stages/baseline are kept" in out.stderr
    failed = root / "reports/scratch/runs/reports/stages/baseline/failed.ipynb"
    assert "no_such_option" in failed.read_text()


# --------------------------------------------------------------------------- interrupts and kills
# dvc runs a stage's command under $SHELL -c (/bin/sh when unset): bash execs the command, dash
# stays between dvc and the stage run, so a killed dvc leaves the shell alive
@pytest.mark.parametrize("how, shell", [("ctrl_c", "/bin/bash"), ("sigkill_dvc", "/bin/bash"),
                                        ("sigkill_dvc", "/bin/sh")], ids=["ctrl_c", "sigkill_dvc", "sigkill_dvc_sh"])
def test_interrupting_or_killing_dvc_keeps_the_results_and_leaves_no_process(root, tmp_path, how, shell):
    make_the_baseline_run_for_minutes(root)
    log = tmp_path / "dvc.log"
    dvc = start(["dvc", "repro", "baseline"], root, log, SHELL=shell)
    wait_for(log, KERNEL_RUNNING, dvc)
    if how == "ctrl_c":
        os.killpg(dvc.pid, signal.SIGINT)  # what a terminal sends its foreground job
        assert dvc.wait(timeout=120) != 0
        assert "interrupted; its previous results are kept" in log.read_text()
    else:
        second = run("dvc repro baseline", root)  # DVC's own lock: one `dvc repro` of a stage at a time
        assert second.returncode != 0 and "is busy, it is being blocked by" in second.stderr, second.stderr[-2000:]
        dvc.kill()
        dvc.wait()
    assert_none_left(root)


def test_one_run_of_a_stage_at_a_time_and_a_killed_run_is_undone_by_the_next(root, tmp_path):
    make_the_baseline_run_for_minutes(root)
    log = tmp_path / "first.log"
    first = start(BASELINE, root, log)
    wait_for(log, KERNEL_RUNNING, first)
    second = run(BASELINE, root)
    assert second.returncode == 2
    assert f"stage 'baseline' is already running (pid {first.pid}" in second.stderr
    first.kill()  # SIGKILL: no clean-up runs, the results it set aside stay set aside
    first.wait()
    assert_none_left(root)  # its kernel died with it
    # the next run, even one refused for a bad param, puts the results back first
    edit_params(root, "baseline:\n  model: resnet50", "baseline:\n  modle: resnet50")
    third = run(BASELINE, root)
    assert third.returncode == 2 and "baseline.modle" in third.stderr
    assert "an earlier run of this stage was killed: restoring the results it replaced" in third.stderr


# --------------------------------------------------------------------------- data
def test_a_changed_raw_file_is_imported_again_not_recorded(root):
    raw = root / "data/raw/t10k-labels-idx1-ubyte.gz"
    good = md5(raw)
    truncated = raw.read_bytes()[:3000]
    raw.unlink()  # a new file: the DVC cache may share the old one's inode
    raw.write_bytes(truncated)
    out = run("dvc repro prepare", root)
    assert out.returncode == 0, out.stderr
    assert md5(raw) == good  # data.dvc (checked by the fixture) still records the package's files


def test_make_data_checks_against_the_committed_record(root):
    record = (root / "data.dvc").read_text()
    (root / "data.dvc").write_text(record.replace("ec0372c160db9ccb628b0f57ca841966.dir",
                                                  "00000000000000000000000000000000.dir"))
    (root / "data/raw/train-labels-idx1-ubyte.gz").unlink()
    out = run(f"DVC={BIN}/dvc PYTHON={sys.executable} bash scripts/fetch_data.sh", root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "data.dvc differs from the committed record; putting the committed one back" in out.stderr
    assert "verified against data.dvc and each file's md5" in out.stdout


def test_a_second_prepare_re_runs_nothing_downstream(root):
    sh("dvc repro -f prepare", root)
    assert "Data and pipelines are up to date" in sh("dvc status data_overview", root)



# --------------------------------------------------------------------------- set-up
def test_the_python_check_refuses_an_interpreter_that_cannot_run(tmp_path):
    """A pyenv shim for a version that is not installed passes `command -v` but cannot run."""
    shim = tmp_path / "python3.11"
    shim.write_text("#!/bin/sh\necho \"pyenv: python3.11: command not found\" >&2\nexit 127\n")
    shim.chmod(0o755)
    out = run(["make", "install", f"PYTHON={shim}", f"STAMP={tmp_path / 'stamp'}", f"VENV={tmp_path / 'venv'}"],
              Path(__file__).parents[1], timeout=60)
    assert out.returncode != 0
    assert f"error: {shim} does not run Python 3.11 or newer" in out.stdout + out.stderr
    assert not (tmp_path / "venv").exists()  # it stopped before creating anything


def test_the_dvc_cache_links_files_instead_of_copying_them():
    config = (Path(__file__).parents[1] / ".dvc/config").read_text()
    assert "type = \"hardlink,copy\"" in config or "type = hardlink,copy" in config, config
