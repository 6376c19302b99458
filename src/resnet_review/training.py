"""Training techniques as hooks of the one engine: knowledge distillation is a ``loss_fn``,
data augmentation a ``batch_transform`` (see :func:`resnet_review.engine.fit`).

* :func:`distill_loss` / :func:`distillation`: Hinton et al.'s loss, ``alpha`` x T² x KL between
  temperature-softened teacher and student distributions, plus ``1 - alpha`` x cross-entropy
  with the labels; the teacher runs in eval mode without gradients.
* :func:`augmentation`: RandAugment (torchvision ``transforms.v2``, applied on uint8 images, one
  random policy per batch so it stays a few tensor ops), Mixup and CutMix (timm, soft targets
  that sum to 1) and RandomErasing (timm, per image), alone or chained, on the training device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .engine import BatchTransform, LossFn

AUGMENTATIONS = ("randaugment", "mixup", "cutmix", "random_erasing")


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
                 temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, targets)``.

    The T² factor keeps the soft term's gradients on the scale of the hard term's as T grows.
    ``targets`` are class indices or class probabilities (e.g. after Mixup)."""
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ValueError(f"temperature must be > 0 and alpha in [0, 1], got {temperature} and {alpha}")
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1), reduction="batchmean", log_target=True)
    return alpha * temperature ** 2 * soft + (1 - alpha) * F.cross_entropy(student_logits, targets)


def distillation(teacher: nn.Module, *, temperature: float = 4.0, alpha: float = 0.9) -> LossFn:
    """The engine's ``loss_fn`` for a student taught by ``teacher`` (frozen, eval mode)."""
    teacher.eval().requires_grad_(False)

    def loss(logits: torch.Tensor, targets: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(*inputs).float()
        return distill_loss(logits, teacher_logits, targets, temperature=temperature, alpha=alpha)

    return loss


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
