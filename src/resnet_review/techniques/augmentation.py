"""Data augmentation (II.L) as the engine's ``batch_transform`` (see :func:`resnet_review.engine.fit`).

* :func:`augmentation`: RandAugment (torchvision ``transforms.v2``, applied on uint8 images, one
  random policy per batch so it stays a few tensor ops), Mixup and CutMix (timm, soft targets
  that sum to 1) and RandomErasing (timm, per image), alone or chained, on the training device.
* :class:`AugmentationParams`: the ``augmentation`` section of params.yaml — each variant's
  ``augment`` list and the augmentations' settings.
* :func:`run_augmentation`, :func:`augmentation_throughput`: notebook 09's stage, and what each
  augmentation costs the training loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd
import torch
from pydantic import Field, field_validator

from ..config import (
    StageParams,
    Variant,
    distinct_names_of,
    register_stage_schema,
)
from ..data import AUGMENTATIONS, MEAN, STD
from ..engine import BatchTransform, fit, synchronize
from ..experiment import Stage
from ..runs import VariantResult


# --------------------------------------------------------------------------- params
class AugmentVariant(Variant):
    augment: list[str] = Field(default_factory=list, description="augmentations of data.AUGMENTATIONS, "
                               "applied in this order to every training batch ([]: the control)")

    _known_augmentations = field_validator("augment")(distinct_names_of("augment", AUGMENTATIONS))


@register_stage_schema("augmentation")
class AugmentationParams(StageParams):
    randaugment_ops: int = Field(2, gt=0)
    randaugment_magnitude: int = Field(9, ge=0, le=30)
    mixup_alpha: float = Field(0.2, gt=0)
    cutmix_alpha: float = Field(1.0, gt=0)
    erasing_probability: float = Field(0.25, gt=0, le=1)
    throughput_batches: int = Field(20, gt=0, description="training batches each augmentation is timed on")
    variants: dict[str, AugmentVariant] = Field(default_factory=dict)


# --------------------------------------------------------------------------- the transform
def augmentation(names: Sequence[str], *, num_classes: int, mean: float, std: float,
                 randaugment_ops: int = 2, randaugment_magnitude: int = 9, mixup_alpha: float = 0.2,
                 cutmix_alpha: float = 1.0, erasing_probability: float = 0.25) -> BatchTransform:
    """A ``batch_transform`` applying ``names`` (of :data:`AUGMENTATIONS`) in that order to
    normalised image batches (``mean``/``std`` of the normalisation, to go back to pixels)."""
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentations {unknown}; known: {', '.join(AUGMENTATIONS)}")
    steps = []
    if "randaugment" in names:
        from torchvision.transforms import v2

        policy = v2.RandAugment(num_ops=randaugment_ops, magnitude=randaugment_magnitude)

        def randaugment(x: torch.Tensor, y: torch.Tensor):
            pixels = (x * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
            return (policy(pixels).float().div(255) - mean) / std, y

        steps.append(randaugment)
    if "mixup" in names or "cutmix" in names:
        from timm.data import Mixup

        mix = Mixup(mixup_alpha=mixup_alpha if "mixup" in names else 0.0,
                    cutmix_alpha=cutmix_alpha if "cutmix" in names else 0.0, label_smoothing=0.0,
                    num_classes=num_classes)

        def mixing(x: torch.Tensor, y: torch.Tensor):
            if len(x) % 2:  # timm mixes a batch with its reverse: it needs an even size
                x, y = x[:-1], y[:-1]
            return mix(x, y)

        steps.append(mixing)
    if "random_erasing" in names:
        from timm.data.random_erasing import RandomErasing

        erasing = None

        def erase(x: torch.Tensor, y: torch.Tensor):
            nonlocal erasing
            if erasing is None:
                erasing = RandomErasing(probability=erasing_probability, mode="pixel", device=str(x.device))
            return erasing(x.clone()), y

        steps.append(erase)

    def transform(inputs: tuple[torch.Tensor, ...], targets: torch.Tensor):
        if len(inputs) != 1:
            raise ValueError(f"image augmentations take one input, got {len(inputs)}")
        x, y = inputs[0], targets
        for step in steps:
            x, y = step(x, y)
        return (x,), y

    return transform


# --------------------------------------------------------------------------- the stage
def stage_augmentation(stage: Stage, names: Sequence[str], settings=None) -> BatchTransform | None:
    """The augmentation stage's ``batch_transform`` for ``names`` (None for none), with its settings
    (``settings``: an :class:`~AugmentationParams`, default the stage's own)."""
    if not names:
        return None
    c = settings or stage.config
    return augmentation(names, num_classes=stage.splits.train.num_classes, mean=MEAN, std=STD,
                        randaugment_ops=c.randaugment_ops, randaugment_magnitude=c.randaugment_magnitude,
                        mixup_alpha=c.mixup_alpha, cutmix_alpha=c.cutmix_alpha,
                        erasing_probability=c.erasing_probability)


def run_augmentation(stage: Stage) -> dict[str, VariantResult]:
    """Train every variant of the augmentation stage with its ``augment`` list as the engine's
    batch transform (an empty list is the control)."""
    results = {}
    for name in stage.variant_names():
        augment = stage.config.variants[name].augment
        results[name] = stage.run_variant(name, batch_transform=stage_augmentation(stage, augment))
        stage.annotate(name, augment="+".join(augment) or "none")
    return results


def augmentation_throughput(stage: Stage, combinations: dict[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """What each augmentation costs the training loop: images/s of the transform alone on the
    profile's training batches (on the training device), against images/s of a plain training
    step of the stage's model by the engine, and the slowdown a training epoch would see."""
    combinations = combinations or {n: [n] for n in AUGMENTATIONS}
    train, b = stage.splits.train, stage.budget
    batch = min(b.batch_size, len(train))
    n = min(stage.config.throughput_batches * batch, len(train) // batch * batch)
    probe = train.take(torch.arange(n, device=train.device))
    step = fit(stage.model_factory()(), probe, None, recipe=stage.recipe, epochs=1, batch_size=batch,
               accel=stage.accel, progress=False, desc=f"{stage.name}/throughput")
    device, rows = train.device, []
    batches = [(tuple(x[i:i + batch] for x in probe.inputs), probe.targets[i:i + batch]) for i in range(0, n, batch)]
    for name, names in combinations.items():
        transform = stage_augmentation(stage, names)
        transform(*batches[0])  # warm-up: first-call set-up (e.g. RandomErasing's buffers)
        synchronize(device)
        t0 = time.perf_counter()
        for inputs, targets in batches:
            transform(inputs, targets)
        synchronize(device)
        per_image = (time.perf_counter() - t0) / n
        rows.append({"augmentation": name, "transform_images_per_s": 1 / per_image,
                     "train_step_images_per_s": step.images_per_s,
                     "epoch_slowdown": 1 + per_image * step.images_per_s})
    return pd.DataFrame(rows).set_index("augmentation")
