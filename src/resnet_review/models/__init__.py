"""One entry point for every model the project trains: :func:`build_model`.

timm's ResNet family covers most of the review as keyword arguments (``seresnet50`` is SE,
``act_layer="silu"`` is Swish, ``drop_rate``/``drop_path_rate`` are Dropout and stochastic
depth).  Models timm does not have are small modules in this package, registered with
:func:`register_model` under a name that takes precedence over timm's.
"""

# the project's models register themselves with the registry on import
from . import fpn, hff, mmff  # noqa: F401
from .registry import (
    CheckpointError,
    build_model,
    first_conv_key,
    is_known_model,
    load_pretrained,
    model_suggestions,
    project_models,
    register_model,
)

__all__ = ["CheckpointError", "build_model", "first_conv_key", "is_known_model", "load_pretrained",
           "model_suggestions", "project_models", "register_model"]
