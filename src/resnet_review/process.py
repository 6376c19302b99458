"""The stage runner's processes: a notebook kernel that stops with the ``dvc repro`` (or the
runner) that started it, instead of training on as an orphan beside the next run."""

import os
import signal
import sys

# Set by the stage runner for the notebook kernel it starts: a kernel whose runner is killed stops
# too, instead of training on as an orphan beside the next run.
DIE_WITH_PARENT_ENV = "RESNET_REVIEW_DIE_WITH_PARENT"


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have Linux send ``sig`` to this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``);
    elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh"})


def _parent_of(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])


def _name_of(pid: int) -> str:
    return open(f"/proc/{pid}/comm").read().strip()


def launcher_pid() -> int:
    """The process that started this one, looking through the shells between them: DVC runs a
    stage's command under ``$SHELL -c`` (``/bin/sh`` when unset), and dash, unlike bash, stays
    as a parent instead of exec-ing the command."""
    pid = os.getppid()
    try:
        while pid > 1 and _name_of(pid) in SHELLS:
            pid = _parent_of(pid)
    except (OSError, ValueError, IndexError):  # gone meanwhile, or no /proc
        pass
    return pid


def die_with_launcher(sig: int = signal.SIGTERM) -> None:
    """:func:`die_with_parent`, and ``sig`` also when the launcher (:func:`launcher_pid`) dies:
    a killed ``dvc repro`` leaves its ``sh -c`` orphaned but alive, so the parent's death signal
    alone never comes. A daemon thread waits on the launcher's pidfd (Linux 5.3+)."""
    die_with_parent(sig)
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return
    pid = launcher_pid()
    if pid in (os.getppid(), 1):
        return
    import select
    import threading

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # it died before we looked
        os.kill(os.getpid(), sig)
        return
    except OSError:  # an old kernel: the parent's death signal is all there is
        return

    def wait_then_signal() -> None:
        select.select([fd], [], [])
        os.kill(os.getpid(), sig)

    threading.Thread(target=wait_then_signal, name="die-with-launcher", daemon=True).start()
