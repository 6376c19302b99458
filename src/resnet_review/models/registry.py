"""The model registry and the functions every caller uses: build a model by name (a project
model registered here first, else timm's), load a pretrained checkpoint into it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class CheckpointError(ValueError):
    """A pretrained checkpoint cannot be loaded into the model it is meant for."""


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``fn(num_classes, in_chans, **kwargs) -> nn.Module`` as ``name``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def project_models() -> list[str]:
    """Names of the models this package defines (timm's are listed by ``timm.list_models``)."""
    return sorted(_REGISTRY)


def is_known_model(name: str) -> bool:
    return name in _REGISTRY or timm.is_model(name)


def model_suggestions(name: str) -> str:
    """The project's models and timm's names like ``name``, for an unknown-model message."""
    import difflib

    close = difflib.get_close_matches(name, [*project_models(), *timm.list_models()], n=5, cutoff=0.6)
    return f"models like it: {', '.join(close) or 'none'} (project models: {', '.join(project_models())})"


def build_model(name: str, num_classes: int = 10, in_chans: int = 1, *,
                pretrained_path: str | os.PathLike | None = None,
                pretrained_exclude: tuple[str, ...] = (), **kwargs) -> nn.Module:
    """Build a model by name: a project model, else a timm model (never downloading weights).

    ``pretrained_path`` loads a local checkpoint (a state dict, or a dict holding one under
    ``state_dict``/``model``) with ``weights_only=True``; keys starting with any prefix in
    ``pretrained_exclude`` (e.g. ``("fc.",)`` for a new classifier) are left at their fresh
    initialisation.  Every other tensor must exist in the model with the same shape.
    """
    if name in _REGISTRY:
        model = _REGISTRY[name](num_classes=num_classes, in_chans=in_chans, **kwargs)
    elif timm.is_model(name):
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    else:
        raise ValueError(f"unknown model '{name}'; {model_suggestions(name)}")
    if pretrained_path is not None:
        load_pretrained(model, pretrained_path, exclude=pretrained_exclude)
    return model


def first_conv_key(model: nn.Module) -> str:
    """State-dict key of the weight of the model's input convolution (timm's ``first_conv``)."""
    name = getattr(model, "pretrained_cfg", {}).get("first_conv")
    if isinstance(name, str) and f"{name}.weight" in model.state_dict():
        return f"{name}.weight"
    return next(f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d))


def load_pretrained(model: nn.Module, path: str | os.PathLike, exclude: tuple[str, ...] = (), *,
                    adapt_stem: bool = False) -> nn.Module:
    """Load a local checkpoint into ``model`` in place, refusing any shape mismatch by name.

    ``adapt_stem``: a first convolution trained on other input channels (an RGB ImageNet stem
    for the project's grey images) is converted with timm's ``adapt_input_conv``, as timm does
    for its own pretrained weights: for one channel the RGB filters are summed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise CheckpointError(f"{path} is not a loadable weights-only checkpoint: {err}") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    excluded = tuple(exclude)
    state = {k: v for k, v in state.items() if not (excluded and k.startswith(excluded))}
    own = model.state_dict()
    if adapt_stem:
        state = _adapt_stem(state, own, first_conv_key(model))
    unknown = sorted(set(state) - set(own))
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and v.shape != own[k].shape]
    if unknown or mismatched:
        lines = [f"{path} does not fit {type(model).__name__}:"]
        lines += [f"  shape mismatch {m}" for m in mismatched[:10]]
        lines += [f"  not in the model: {k}" for k in unknown[:10]]
        lines.append("  (exclude a new classifier with pretrained_exclude=('fc.',), match num_classes/in_chans, "
                     "or convert an RGB stem for grey images with adapt_stem=True)")
        raise CheckpointError("\n".join(lines))
    missing = [k for k in own if k not in state and not (excluded and k.startswith(excluded))]
    if missing:
        raise CheckpointError(f"{path} lacks {len(missing)} tensors of the model, e.g. {missing[:5]}")
    model.load_state_dict(state, strict=False)
    return model


def _adapt_stem(state: dict, own: dict, key: str) -> dict:
    weight, target = state.get(key), own[key]
    if weight is None or weight.dim() != 4 or weight.shape[1] == target.shape[1]:
        return state
    if weight.shape[0] != target.shape[0] or weight.shape[2:] != target.shape[2:]:
        return state  # another stem altogether: the shape check below names it
    from timm.models import adapt_input_conv

    return {**state, key: adapt_input_conv(target.shape[1], weight, base_chans=weight.shape[1])}

