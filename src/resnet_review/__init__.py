"""resnet-review: measured ResNet50 optimisation techniques."""
import warnings

__version__ = "0.1.0"

# tqdm.auto (imported by dependencies) warns in kernels without ipywidgets; the engine's own
# progress goes to a terminal bar or per-epoch log lines, so the warning says nothing useful.
warnings.filterwarnings("ignore", message="IProgress not found")
