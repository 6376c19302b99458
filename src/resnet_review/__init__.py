"""resnet-review: measured ResNet50 optimisation techniques."""
import os
import signal
import sys
import warnings

__version__ = "0.1.0"

# tqdm.auto (imported by dependencies) warns in kernels without ipywidgets; the engine's own
# progress goes to a terminal bar or per-epoch log lines, so the warning says nothing useful.
warnings.filterwarnings("ignore", message="IProgress not found")

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


if os.environ.get(DIE_WITH_PARENT_ENV) == "1":
    die_with_parent(signal.SIGKILL)
