"""resnet-review: measured ResNet50 optimisation techniques.

Importing the package registers every technique's params schema (:mod:`resnet_review.techniques`),
as importing timm registers its models, so params.yaml is validated whole wherever it is loaded.
"""
import os
import signal
import warnings

from ._version import __version__
from .process import DIE_WITH_PARENT_ENV, die_with_launcher, die_with_parent, launcher_pid

# tqdm.auto (imported by dependencies) warns in kernels without ipywidgets; the engine's own
# progress goes to a terminal bar or per-epoch log lines, so the warning says nothing useful.
warnings.filterwarnings("ignore", message="IProgress not found")

if os.environ.get(DIE_WITH_PARENT_ENV) == "1":
    die_with_parent(signal.SIGKILL)

from . import techniques  # noqa: E402  (registers the techniques' params schemas)

__all__ = ["DIE_WITH_PARENT_ENV", "__version__", "die_with_launcher", "die_with_parent", "launcher_pid", "techniques"]
