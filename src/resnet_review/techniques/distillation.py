"""Knowledge distillation (II.F): a student learns from a trained teacher's softened outputs.

* :func:`distill_loss` / :func:`distillation`: Hinton et al.'s loss, ``alpha`` x T² x KL between
  temperature-softened teacher and student distributions, plus ``1 - alpha`` x cross-entropy
  with the labels, as the engine's ``loss_fn`` (see :func:`resnet_review.engine.fit`); the
  teacher runs in eval mode without gradients.
* :class:`DistillationParams`: the ``distillation`` section of params.yaml — the teacher (another
  stage's trained model, one per seed), temperature, alpha and the student variants.
* :func:`run_distillation`: notebook 08's stage, each seed's student taught by that seed's teacher.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..config import (
    Budget,
    PlannedRun,
    SourceModel,
    StageParams,
    Strict,
    Variant,
    register_stage_schema,
)
from ..engine import LossFn
from ..experiment import Stage
from ..runs import VariantResult


# --------------------------------------------------------------------------- params
class TeacherSource(Strict):
    """The teacher of a distillation: a stage's trained model, one per seed."""

    stage: str = "teacher"
    variant: str | None = Field(None, description="default: the one variant that stage ran under the profile")


class DistillVariant(Variant):
    """A student: a :class:`Variant` trained with the distillation loss, against ``scratch``."""

    temperature: float | None = Field(None, gt=0, description="default: the stage's temperature")
    alpha: float | None = Field(None, ge=0, le=1, description="default: the stage's alpha")
    scratch: SourceModel | None = Field(None, description="the same student trained without a teacher under "
                                        "this budget (another stage's variant), the control of the claim")


@register_stage_schema("distillation")
class DistillationParams(StageParams):
    teacher: TeacherSource = TeacherSource()
    temperature: float = Field(4.0, gt=0, description="softmax temperature of teacher and student logits")
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the soft (teacher) term; 1 - alpha: labels")
    variants: dict[str, DistillVariant] = Field(default_factory=dict)

    def training_runs(self, budget: "Budget", profile: str) -> list[PlannedRun]:
        """Every student, with a forward pass of the teacher stage's model per training image."""
        return [self._variant_run(n, v, budget, teacher_from=self.teacher.stage)
                for n, v in self.planned_variants(profile).items()]


# --------------------------------------------------------------------------- the loss
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


# --------------------------------------------------------------------------- the stage
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
