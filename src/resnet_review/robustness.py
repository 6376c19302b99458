"""Corrupted test sets, so that claims of "robustness" can be measured.

Every corruption works on pixel values in [0, 1] and keeps the shape and range of its input:
the images are un-normalised with the statistics their :class:`~resnet_review.data.TensorData`
records, corrupted, clipped to [0, 1] and normalised again.  Five kinds (in the spirit of
Hendrycks & Dietterich's ImageNet-C, sized for 28 px images), each at three severities:

=================  ===============================================  =====================
kind               what it does                                     severity 1 / 2 / 3
=================  ===============================================  =====================
gaussian_noise     adds i.i.d. Gaussian noise                       sigma 0.08 / 0.16 / 0.32
gaussian_blur      Gaussian blur                                    sigma 0.6 / 1.0 / 1.6 px
low_resolution     down-samples, then up-samples back (bilinear)    factor 1.5 / 2 / 3
contrast           shrinks each image towards its mean              contrast 0.5 / 0.3 / 0.15
occlusion          a grey rectangle at a random place               0.25 / 0.4 / 0.55 of each side
=================  ===============================================  =====================

Random draws are seeded per (kind, severity), so every model of every stage is scored on the
very same corrupted images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from .data import MEAN, STD, TensorData, stratified_subset
from .evaluate import predict

Corruption = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


def _noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    sigma = (0.08, 0.16, 0.32)[severity - 1]
    return x + sigma * torch.randn(x.shape, generator=gen).to(x.device)


def _blur(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    sigma = (0.6, 1.0, 1.6)[severity - 1]
    size = 2 * math.ceil(2 * sigma) + 1
    return TF.gaussian_blur(x, [size, size], [sigma, sigma])


def _low_resolution(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    factor = (1.5, 2.0, 3.0)[severity - 1]
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h / factor)), max(1, round(w / factor))), mode="bilinear",
                          antialias=True, align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def _contrast(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    c = (0.5, 0.3, 0.15)[severity - 1]
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    return (x - mean) * c + mean


def _occlusion(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    frac = (0.25, 0.4, 0.55)[severity - 1]
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    ph, pw = max(1, round(frac * h)), max(1, round(frac * w))
    top = torch.randint(0, h - ph + 1, (n,), generator=gen).to(x.device)
    left = torch.randint(0, w - pw + 1, (n,), generator=gen).to(x.device)
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + ph)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + pw)[:, None, None]))
    return torch.where(inside[:, None], torch.full_like(x, 0.5), x)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": _noise,
    "gaussian_blur": _blur,
    "low_resolution": _low_resolution,
    "contrast": _contrast,
    "occlusion": _occlusion,
}
SEVERITIES = (1, 2, 3)


def corrupt(pixels: torch.Tensor, kind: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``pixels`` (N, C, H, W) in [0, 1] under one corruption, clipped back to [0, 1]."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; corruptions: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    if pixels.dim() != 4:
        raise ValueError(f"corruptions take (N, C, H, W) images, got shape {tuple(pixels.shape)}")
    gen = torch.Generator().manual_seed(seed * 1000 + list(CORRUPTIONS).index(kind) * 10 + severity)
    return CORRUPTIONS[kind](pixels.float(), severity, gen).clamp(0, 1)


def corrupt_data(data: TensorData, kind: str, severity: int, seed: int = 0) -> TensorData:
    """``data`` with every image input corrupted in pixel space (labels unchanged)."""
    mean, std = data.meta.get("mean", MEAN), data.meta.get("std", STD)
    inputs = tuple(corrupt(x * std + mean, kind, severity, seed + i).sub(mean).div(std) if x.dim() == 4 else x
                   for i, x in enumerate(data.inputs))
    return TensorData(inputs, data.targets, data.classes, f"{data.name}:{kind}@{severity}",
                      {**data.meta, "corruption": kind, "severity": severity})


def corrupted_sets(test: TensorData, size: int, severities: tuple[int, ...] | list[int] = (2,),
                   kinds: tuple[str, ...] | None = None, seed: int = 0) -> dict[str, TensorData]:
    """``{"<kind>@<severity>": data}``: a class-stratified ``size``-image slice of ``test`` under
    every corruption and severity (built once, scored for every model)."""
    subset = test.take(stratified_subset(test.targets, size, seed)) if size < len(test) else test
    return {f"{kind}@{s}": corrupt_data(subset, kind, s, seed) for kind in (kinds or CORRUPTIONS) for s in severities}


def corruption_accuracy(model: nn.Module, sets: dict[str, TensorData], batch_size: int = 256,
                        **predict_kwargs) -> dict[str, float]:
    """Accuracy of ``model`` on each corrupted set."""
    return {name: float(predict(model, data, batch_size, **predict_kwargs).argmax(1).eq(data.targets).float().mean())
            for name, data in sets.items()}
