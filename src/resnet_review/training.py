"""Training techniques as hooks of the one engine: knowledge distillation is a ``loss_fn``,
data augmentation a ``batch_transform`` (see :func:`resnet_review.engine.fit`).

* :func:`distill_loss` / :func:`distillation`: Hinton et al.'s loss, ``alpha`` x T² x KL between
  temperature-softened teacher and student distributions, plus ``1 - alpha`` x cross-entropy
  with the labels; the teacher runs in eval mode without gradients.
* :func:`augmentation`: RandAugment (torchvision ``transforms.v2``, applied on uint8 images, one
  random policy per batch so it stays a few tensor ops), Mixup and CutMix (timm, soft targets
  that sum to 1) and RandomErasing (timm, per image), alone or chained, on the training device.
* :func:`run_distillation`, :func:`run_augmentation`, :func:`augmentation_throughput`: the glue
  of the ``distillation`` and ``augmentation`` stages (notebooks 08 and 09).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .data import AUGMENTATIONS, MEAN, STD
from .engine import BatchTransform, LossFn, fit, synchronize
from .experiment import Stage, VariantResult


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


# --------------------------------------------------------------------------- stage glue
def teacher_of(stage: Stage) -> tuple[str, str, nn.Module]:
    """``(stage, variant, builder)`` of the distillation stage's teacher: the variant named in
    params, else the one variant the teacher stage ran under this profile; checked to share the
    student's budget (profile, data, epochs, seeds) before any training starts."""
    source = stage.config.teacher
    trained = stage.trained_variants(source.stage)
    variant = source.variant or (trained[0] if len(trained) == 1 else None)
    if variant is None or variant not in trained:
        raise ValueError(f"stage '{source.stage}' holds the teachers {trained}; set `{stage.name}.teacher.variant` "
                         f"to one of them")
    stage.require_checkpoints(source.stage, variant)  # same profile and budget, every seed's weights
    teacher_params = stage.params.stage(source.stage)
    settings = teacher_params.variants.get(variant)
    model = (settings.model if settings and settings.model else None) or teacher_params.model
    kwargs = {**teacher_params.model_kwargs, **(settings.model_kwargs if settings else {})}
    return source.stage, variant, lambda seed: stage.load_trained(source.stage, variant, seed, model=model, **kwargs)


def seed_teachers(stage: Stage) -> tuple[str, Callable[[int], nn.Module]]:
    """``stage/variant`` of the stage's teacher (:func:`teacher_of`) and a loader of the teacher
    of each seed, each loaded once."""
    teacher_stage, teacher_variant, load_teacher = teacher_of(stage)
    teachers: dict[int, nn.Module] = {}

    def teacher(seed: int) -> nn.Module:
        if seed not in teachers:
            teachers[seed] = load_teacher(seed)
        return teachers[seed]

    return f"{teacher_stage}/{teacher_variant}", teacher


def distillation_hooks(teacher: Callable[[int], nn.Module], *, temperature: float,
                       alpha: float) -> Callable[[int], dict]:
    """``seed_hooks`` of :meth:`~resnet_review.experiment.Stage.run`: the student of seed k learns
    from ``teacher(k)`` (so the CI over seeds includes the teacher's own variation)."""
    return lambda seed: {"loss_fn": distillation(teacher(seed), temperature=temperature, alpha=alpha)}


def run_distillation(stage: Stage) -> dict[str, VariantResult]:
    """Train every student variant of the stage with the distillation loss of its seed's teacher,
    with its temperature and alpha written beside its metrics."""
    teacher_name, teacher = seed_teachers(stage)
    results = {}
    for name in stage.variant_names():
        v = stage.config.variants[name]
        temperature = v.temperature or stage.config.temperature
        alpha = stage.config.alpha if v.alpha is None else v.alpha
        results[name] = stage.run_variant(name, seed_hooks=distillation_hooks(teacher, temperature=temperature,
                                                                                alpha=alpha))
        stage.annotate(name, temperature=temperature, alpha=alpha, teacher=teacher_name)
    return results


def stage_augmentation(stage: Stage, names: Sequence[str], settings=None) -> BatchTransform | None:
    """The augmentation stage's ``batch_transform`` for ``names`` (None for none), with its settings
    (``settings``: an :class:`~resnet_review.config.AugmentationParams`, default the stage's own)."""
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

