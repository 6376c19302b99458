"""A stage run dies with the ``dvc repro`` that launched it, through the ``sh -c`` between them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.probe,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and pidfd are Linux's")]

# `; true` keeps the shell as the parent (bash and dash exec a lone command, dash does not when
# dvc's command is one; a second command stops both)
UNDER_SH = "sh -c '{python} -c \"{code}\" \"{module}\"; true'"
# The probes run process.py alone (it imports only the standard library), given as their argument:
# importing it through the package would first import every technique, seconds per probe.
PROCESS = Path(__file__).resolve().parents[1] / "src" / "resnet_review" / "process.py"
LOAD = "import runpy, sys, types; p = types.SimpleNamespace(**runpy.run_path(sys.argv[1])); "


def test_the_launcher_is_found_through_the_shell():
    code = LOAD + "print(p.launcher_pid())"
    out = subprocess.run(UNDER_SH.format(python=sys.executable, code=code, module=PROCESS), shell=True,
                         executable="/bin/bash", capture_output=True, text=True, check=True).stdout
    # bash -c runs `sh -c ...` by exec, so the shell left between us and the run is sh
    assert int(out) == os.getpid()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has died
    except FileNotFoundError:
        return False


def test_a_run_dies_with_its_launcher_though_the_shell_between_them_lives_on():
    run = LOAD + "import os, time; p.die_with_launcher(); print(os.getpid(), flush=True); time.sleep(120)"
    launcher = ("import subprocess, sys; subprocess.Popen(sys.argv[1], shell=True, executable='/bin/sh'); "
                "import time; time.sleep(120)")
    under_sh = UNDER_SH.format(python=sys.executable, code=run, module=PROCESS)
    proc = subprocess.Popen([sys.executable, "-c", launcher, under_sh], stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    shell = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    assert open(f"/proc/{shell}/comm").read().strip() in {"sh", "dash"}
    try:
        assert alive(pid)
        proc.kill()  # SIGKILL, like `kill -9` of dvc: no clean-up of its own runs
        proc.wait()
        t0 = time.monotonic()
        while alive(pid) and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        assert not alive(pid), "the run outlived its launcher"
    finally:
        for p in (pid, shell):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
