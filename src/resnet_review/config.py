"""Project paths and the validated contents of ``params.yaml``.

``params.yaml`` has one profile switch, the budgets of the three profiles, the shared training
recipe and one section per pipeline stage.  Everything is validated up front with pydantic so
that a typo or an impossible value stops a run before any training starts, with one line per
bad key::

    params.yaml is invalid:
      profiles.cpu.epochs: Input should be greater than 0 (got -1)
      baseline.modle: Extra inputs are not permitted (got 'resnet50')

Technique stages with extra keys register a schema with :func:`register_stage_schema`; any
other section is validated as a plain :class:`StageParams`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data import AUGMENTATIONS, VIEWS
from .models import is_known_model, model_suggestions

PROFILES = ("smoke", "cpu", "gpu")


class ParamsError(ValueError):
    """params.yaml (or an override) names an unknown key, a wrong type or an impossible value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def scaled_epochs(epochs: int, scale: float) -> int:
    """``epochs`` times ``scale``, rounded, at least 1 — or 0 when ``scale`` is 0 (a step that is
    switched off, e.g. no quantisation-aware fine-tuning)."""
    return 0 if scale == 0 else max(1, round(epochs * scale))


MIN_TRAIN_IMAGES = 20  # the fewest training images a share of the data is cut to


class Budget(_Strict):
    """What every technique gets under one profile: the same data, epochs and seeds."""

    train_size: int = Field(gt=0, description="training images, a class-stratified subset of the train split")
    val_size: int = Field(gt=0, description="validation images evaluated after an epoch (see val_every_images)")
    test_size: int = Field(gt=0, le=10_000, description="test images; 10000 is the whole test set")
    data_seed: int = Field(0, ge=0, description="seed of the subset draw, fixed across techniques")
    img_size: int = Field(28, ge=8, le=512)
    in_chans: Literal[1, 3] = 1
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    eval_batch_size: int = Field(256, gt=0)
    seeds: list[int] = Field(min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    concurrent_seeds: int = Field(1, ge=1, description="seeds of a variant trained side by side on the device, "
                                  "each on a CUDA stream of its own (engine.fit_group); 1: one after another")
    checkpoint_last: bool = Field(False, description="always write a run's resume checkpoint after its last epoch, "
                                  "so that re-running an interrupted stage trains no finished run again")
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none", description="the learning rate for batch_size, from the recipe's lr at lr_reference_batch: "
        "times batch/reference (linear, Goyal et al. 2017) or its square root; warm-up stays in epochs")
    lr_reference_batch: int = Field(256, gt=0, description="the batch size the recipe's lr is meant for")
    checkpoint_every_s: float = Field(60.0, ge=0, description="write a run's resume checkpoint after an epoch "
                                      "only once this many seconds have passed since the last write (0: every epoch)")
    val_every_images: int = Field(0, ge=0, description="validate after an epoch only once this many training images "
                                  "have passed since the last validation, and after the last epoch (0: every epoch); "
                                  "a run on a tenth of the data for 5x the epochs otherwise validates 5x as often")
    bootstrap_resamples: int = Field(1000, ge=0)
    latency_repeats: int = Field(20, gt=0)
    measure_memory: bool = Field(True, description="peak training memory per variant (a child process on CPU)")
    corruption_size: int = Field(0, ge=0, le=10_000, description="test images every trained model is also "
                                 "evaluated on under each corruption (0: no robustness evaluation)")
    corruption_severities: list[int] = Field(default_factory=lambda: [2], min_length=1,
                                             description="severities (1 mild .. 3 strong) of every corruption")

    def train_images(self, fraction: float = 1.0) -> int:
        """Training images of a class-stratified ``fraction`` of the profile's: at least
        :data:`MIN_TRAIN_IMAGES` (two per class of Fashion-MNIST's ten: a batch-norm batch needs two
        rows, and a stratified share should hold every class)."""
        return min(self.train_size, max(MIN_TRAIN_IMAGES, round(self.train_size * fraction)))

    def scaled_recipe(self, recipe: "Recipe", batch_size: int) -> "Recipe":
        """``recipe`` with its learning rate scaled for ``batch_size`` by :attr:`lr_scaling`."""
        ratio = batch_size / self.lr_reference_batch
        factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[self.lr_scaling]
        return recipe if factor == 1.0 else recipe.model_copy(update={"lr": recipe.lr * factor})

    @field_validator("corruption_severities")
    @classmethod
    def _known_severities(cls, severities: list[int]) -> list[int]:
        if not set(severities) <= {1, 2, 3} or len(set(severities)) != len(severities):
            raise ValueError(f"corruption_severities must be distinct values of 1, 2, 3, got {severities}")
        return severities

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds


Optimizer = Literal["sgd", "adamw"]


class Recipe(_Strict):
    """How a model is trained: optimiser, schedule and regularisation of the loss."""

    optimizer: Optimizer = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-5, ge=0)
    warmup_epochs: float = Field(0.3, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip_norm: float | None = Field(None, gt=0)


def _check_recipe_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    Recipe(**overrides)  # raises with the offending key named
    return overrides


def _check_model_name(name: str | None) -> str | None:
    """A model name that :func:`models.build_model` knows, checked with the params so that a typo
    is refused before any kernel starts."""
    if name is not None and not is_known_model(name):
        raise ValueError(f"unknown model {name!r}; {model_suggestions(name)}")
    return name


def _merge_recipe(base: Recipe, overrides: dict[str, Any]) -> Recipe:
    return Recipe(**{**base.model_dump(), **overrides})


def _names_usable_in_paths(what: str):
    """A validator of a mapping whose keys name folders and metric keys (``models/<stage>/<name>``)."""

    def check(named: dict[str, Any]) -> dict[str, Any]:
        for name in named:
            if not name or "/" in name:
                raise ValueError(f"{what} name {name!r} must be non-empty and contain no '/'")
        return named

    return check


def _distinct_names_of(what: str, options: Sequence[str]):
    """A validator of a list of distinct names from ``options``."""

    def check(names: list[str]) -> list[str]:
        if any(n not in options for n in names) or len(set(names)) != len(names):
            raise ValueError(f"{what} must list distinct names of {', '.join(options)}, got {names}")
        return names

    return check


class Variant(_Strict):
    """One configuration a stage compares, as the difference from the stage's defaults.

    ``train_fraction`` and ``img_size`` change the data (a class-stratified subset of the
    profile's training images, nested in the full one; a resized input); ``epochs_scale``
    multiplies the profile's epochs, so that a small training set can be trained long enough to
    overfit. Everything else (seeds, validation and test images) is the profile's.
    """

    model: str | None = Field(None, description="registered or timm model; default: the stage's model")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="merged over the stage's")
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of the stage's recipe")
    train_fraction: float = Field(1.0, gt=0, le=1)
    img_size: int | None = Field(None, ge=8, le=512, description="default: the profile's img_size")
    epochs_scale: float = Field(1.0, gt=0, le=100)
    view: str = Field("image", description="what the model sees of each image: a name of data.VIEWS, e.g. "
                      "'pair' for two complementary views fed as two inputs")
    profiles: list[Literal["smoke", "cpu", "gpu"]] | None = Field(
        None, description="the profiles this variant runs under (default: all); a costly extra can be gpu-only")

    _check_train = field_validator("train")(_check_recipe_overrides)
    _check_model = field_validator("model")(_check_model_name)

    @field_validator("view")
    @classmethod
    def _known_view(cls, view: str) -> str:
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; views: {', '.join(VIEWS)}")
        return view

    def recipe(self, stage: Recipe) -> Recipe:
        """The stage's recipe with this variant's ``train`` overrides."""
        return _merge_recipe(stage, self.train)


@dataclass(frozen=True)
class PlannedRun:
    """One model a stage trains under a profile, as the planner counts it (see
    :meth:`StageParams.training_runs`): ``seeds`` runs of ``epochs`` x ``images``, plus a forward
    pass of another stage's model per training image (``teacher_from``: a distillation's teacher)."""

    variant: str
    model: str
    model_kwargs: dict[str, Any]
    images: int
    epochs: int
    seeds: int
    img_size: int
    view: str = "image"
    teacher_from: str | None = None


class StageParams(_Strict):
    """A technique stage: which registered model it trains, how the recipe differs, and the
    named variants it compares (each trained on the profile's seeds)."""

    model: str = "resnet50"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of the shared recipe")
    variants: dict[str, Variant] = Field(default_factory=dict)

    _check_train = field_validator("train")(_check_recipe_overrides)
    _check_model = field_validator("model")(_check_model_name)

    _variant_names = field_validator("variants")(_names_usable_in_paths("variant"))

    def recipe(self, shared: Recipe) -> Recipe:
        return _merge_recipe(shared, self.train)

    def planned_variants(self, profile: str) -> dict[str, Variant]:
        return {n: v for n, v in self.variants.items() if v.profiles is None or profile in v.profiles}

    def training_runs(self, budget: "Budget", profile: str) -> list[PlannedRun]:
        """What this stage trains under ``profile``: each variant (or the stage's model when it has
        none) over the profile's seeds. Stages that train otherwise say so in their schema."""
        if not self.variants:
            return [self._model_run(self.model, budget)]
        return [self._variant_run(name, v, budget) for name, v in self.planned_variants(profile).items()]

    def _model_run(self, name: str, budget: "Budget", *, epochs: int | None = None, seeds: int | None = None,
                   images: int | None = None) -> PlannedRun:
        """The stage's own model on the profile's data (or ``images`` of it) and input size."""
        return PlannedRun(name, self.model, dict(self.model_kwargs), budget.train_size if images is None else images,
                          budget.epochs if epochs is None else epochs,
                          len(budget.seeds) if seeds is None else seeds, budget.img_size)

    def _variant_run(self, name: str, v: Variant, budget: "Budget", **extra) -> PlannedRun:
        return PlannedRun(name, v.model or self.model, {**self.model_kwargs, **v.model_kwargs},
                          budget.train_images(v.train_fraction), scaled_epochs(budget.epochs, v.epochs_scale),
                          len(budget.seeds), v.img_size or budget.img_size, v.view, **extra)


class PrepareParams(_Strict):
    val_size: int = Field(5000, gt=0, lt=60_000)
    split_seed: int = Field(0, ge=0)


class Params(BaseModel):
    """The whole of params.yaml."""

    model_config = ConfigDict(extra="allow", frozen=True)

    profile: Literal["smoke", "cpu", "gpu"]
    profiles: dict[Literal["smoke", "cpu", "gpu"], Budget]
    prepare: PrepareParams = PrepareParams()
    train: Recipe = Recipe()

    @model_validator(mode="after")
    def _profile_is_defined(self) -> "Params":
        if self.profile not in self.profiles:
            raise ValueError(f"profile '{self.profile}' has no entry under 'profiles'")
        return self

    @property
    def budget(self) -> Budget:
        return self.profiles[self.profile]

    def stage(self, name: str) -> StageParams:
        if name not in self.stage_names():
            raise ParamsError(f"params.yaml has no section '{name}' (stages: {', '.join(self.stage_names())})")
        return _STAGE_SCHEMAS.get(name, StageParams).model_validate(self.model_extra[name])

    def stage_names(self) -> list[str]:
        return sorted(self.model_extra or {})


_STAGE_SCHEMAS: dict[str, type[StageParams]] = {}


def register_stage_schema(stage: str, schema: type[StageParams]) -> type[StageParams]:
    """Declare the keys a technique stage accepts beyond :class:`StageParams`."""
    _STAGE_SCHEMAS[stage] = schema
    return schema



# --------------------------------------------------------------------------- compression
class SourceModel(_Strict):
    """Trained weights another stage wrote (``models/<stage>/<variant>/seed<k>.pt``), one per seed."""

    stage: str = "baseline"
    variant: str = "resnet50"


class PruneTarget(_Strict):
    """One pruned model: ``structured`` removes channels until MACs fall by ``amount``;
    ``unstructured`` zeroes the ``amount`` fraction of smallest weights (same shapes)."""

    method: Literal["structured", "unstructured"] = "structured"
    amount: float = Field(gt=0, lt=1, description="MACs removed (structured) or weights zeroed (unstructured)")
    importance: Literal["magnitude", "taylor"] = "magnitude"
    profiles: list[Literal["smoke", "cpu", "gpu"]] | None = Field(
        None, description="the profiles this target runs under (default: all), as for a stage's variants")


class PruningParams(StageParams):
    source: SourceModel = SourceModel()
    finetune_epochs_scale: float = Field(0.5, ge=0, le=100, description="fine-tuning epochs after pruning, as a "
                                         "multiple of the profile's epochs (0: none; at least 1 otherwise)")
    taylor_batches: int = Field(4, gt=0, description="training batches whose gradients rank channels (taylor)")
    round_to: int | None = Field(None, gt=0, description="keep channel counts multiples of this")
    targets: dict[str, PruneTarget] = Field(default_factory=dict)

    def targets_under(self, profile: str) -> dict[str, PruneTarget]:
        """The targets that run under ``profile``, in params order."""
        return {n: t for n, t in self.targets.items() if t.profiles is None or profile in t.profiles}

    def training_runs(self, budget: "Budget", profile: str) -> list[PlannedRun]:
        """Each target and the dense control fine-tuned for ``finetune_epochs_scale`` x the epochs
        (counted at the dense model's cost: an upper bound for a pruned one)."""
        epochs = scaled_epochs(budget.epochs, self.finetune_epochs_scale)
        names = ["dense_finetuned", *self.targets_under(profile)] if epochs else []
        return [self._model_run(n, budget, epochs=epochs) for n in names]


class QuantisationParams(StageParams):
    source: SourceModel = SourceModel()
    pruned_source: SourceModel | None = Field(None, description="a structurally pruned model to quantise too")
    calibration_batches: int = Field(8, gt=0, description="training batches int8 activation ranges are observed on")
    qat_epochs_scale: float = Field(0.5, ge=0, le=100, description="quantisation-aware fine-tuning epochs, as a "
                                    "multiple of the profile's epochs (0: skip QAT; at least 1 otherwise)")

    def training_runs(self, budget: "Budget", profile: str) -> list[PlannedRun]:
        """Quantisation-aware fine-tuning of the source; post-training int8 trains nothing."""
        epochs = scaled_epochs(budget.epochs, self.qat_epochs_scale)
        return [self._model_run("int8_qat", budget, epochs=epochs)] if epochs else []


# --------------------------------------------------------------------------- training techniques
class TeacherSource(_Strict):
    """The teacher of a distillation: a stage's trained model, one per seed."""

    stage: str = "teacher"
    variant: str | None = Field(None, description="default: the one variant that stage ran under the profile")


class DistillVariant(Variant):
    """A student: a :class:`Variant` trained with the distillation loss, against ``scratch``."""

    temperature: float | None = Field(None, gt=0, description="default: the stage's temperature")
    alpha: float | None = Field(None, ge=0, le=1, description="default: the stage's alpha")
    scratch: SourceModel | None = Field(None, description="the same student trained without a teacher under "
                                        "this budget (another stage's variant), the control of the claim")


class DistillationParams(StageParams):
    teacher: TeacherSource = TeacherSource()
    temperature: float = Field(4.0, gt=0, description="softmax temperature of teacher and student logits")
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the soft (teacher) term; 1 - alpha: labels")
    variants: dict[str, DistillVariant] = Field(default_factory=dict)

    def training_runs(self, budget: "Budget", profile: str) -> list[PlannedRun]:
        """Every student, with a forward pass of the teacher stage's model per training image."""
        return [self._variant_run(n, v, budget, teacher_from=self.teacher.stage)
                for n, v in self.planned_variants(profile).items()]


class AugmentVariant(Variant):
    augment: list[str] = Field(default_factory=list, description="augmentations of data.AUGMENTATIONS, "
                               "applied in this order to every training batch ([]: the control)")

    _known_augmentations = field_validator("augment")(_distinct_names_of("augment", AUGMENTATIONS))


class AugmentationParams(StageParams):
    randaugment_ops: int = Field(2, gt=0)
    randaugment_magnitude: int = Field(9, ge=0, le=30)
    mixup_alpha: float = Field(0.2, gt=0)
    cutmix_alpha: float = Field(1.0, gt=0)
    erasing_probability: float = Field(0.25, gt=0, le=1)
    throughput_batches: int = Field(20, gt=0, description="training batches each augmentation is timed on")
    variants: dict[str, AugmentVariant] = Field(default_factory=dict)


# --------------------------------------------------------------------------- synergy
class SynergyVariant(AugmentVariant):
    """A cell of the synergy design: a :class:`Variant` with its augmentations (RandAugment etc.
    with the augmentation stage's settings) and, with ``distill``, the distillation loss."""

    distill: bool = Field(False, description="learn from the seed's teacher (the stage's temperature and alpha)")


class FactorialCells(_Strict):
    """The three trained cells of a 2x2 factorial; the fourth (neither technique) is ``control``."""

    first: str = Field("se", description="the variant with the first technique alone")
    second: str = Field("randaugment", description="the variant with the second technique alone")
    both: str = Field("se_randaugment", description="the variant with both")


class SynergyCompression(_Strict):
    """How the last cell's trained models are compressed: int8 post-training quantisation, and
    pruning followed by a fine-tune on the cell's images with the cell's techniques."""

    source: str = Field("full", description="the variant whose trained models are compressed")
    calibration_batches: int = Field(8, gt=0, description="training batches int8 activation ranges are observed on")
    prune: PruneTarget = PruneTarget(amount=0.5)
    finetune_epochs_scale: float = Field(0.5, gt=0, le=100, description="fine-tuning epochs after pruning, as a "
                                         "multiple of the source cell's epochs (at least 1)")
    train: dict[str, Any] = Field(default_factory=dict, description="recipe overrides of the fine-tune")
    pruned_int8: bool = Field(True, description="quantise the pruned models too")
    taylor_batches: int = Field(4, gt=0, description="training batches whose gradients rank channels (taylor)")

    _check_train = field_validator("train")(_check_recipe_overrides)


class SynergyParams(DistillationParams):
    """Notebook 17: cells combining techniques on one data regime, compared with ``control`` (the
    plain model on the same images, another stage's variant): a 2x2 ``factorial``, a step-wise
    path (``steps``, each step against the one before, the first against ``control``) and the
    compression of one cell."""

    control: SourceModel = Field(SourceModel(stage="dropout", variant="low_data_drop_rate_0"),
                                 description="the plain model on the cells' images and epochs (read, not retrained)")
    factorial: FactorialCells = FactorialCells()
    steps: list[str] = Field(default_factory=list, description="variants in the order techniques are added")
    compress: SynergyCompression = SynergyCompression()
    variants: dict[str, SynergyVariant] = Field(default_factory=dict)

    def training_runs(self, budget: "Budget", profile: str) -> list[PlannedRun]:
        """Every cell (a distilled one with its teacher's forward passes) and the pruned last cell's
        fine-tune on that cell's images."""
        cells = self.planned_variants(profile)
        runs = [self._variant_run(n, v, budget, teacher_from=self.teacher.stage if v.distill else None)
                for n, v in cells.items()]
        source = cells.get(self.compress.source)
        if source is not None:
            cell = self._variant_run("pruned_finetuned", source, budget,
                                     teacher_from=self.teacher.stage if source.distill else None)
            runs.append(replace(cell, epochs=scaled_epochs(cell.epochs, self.compress.finetune_epochs_scale)))
        return runs

    @model_validator(mode="after")
    def _cells_are_variants(self) -> "SynergyParams":
        named = [(f"factorial.{k}", v) for k, v in self.factorial.model_dump().items()]
        named += [(f"steps[{i}]", v) for i, v in enumerate(self.steps)] + [("compress.source", self.compress.source)]
        bad = [f"{key} names no variant ({name!r})" for key, name in named if name not in self.variants]
        if bad:
            raise ValueError(f"{'; '.join(bad)}; variants: {', '.join(self.variants) or 'none'}")
        return self


# --------------------------------------------------------------------------- hyper-parameter tuning
class SearchRange(_Strict):
    """A float hyper-parameter drawn from ``[low, high]``, uniformly or (``log``) log-uniformly."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "SearchRange":
        if not self.low < self.high:
            raise ValueError(f"low must be below high, got low={self.low} high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-uniform range needs low > 0, got low={self.low}")
        return self


class OptimizerReference(_Strict):
    """The values an optimiser's searched factors multiply."""

    lr: float = Field(gt=0)
    weight_decay: float = Field(gt=0)


class SearchSpace(_Strict):
    """What a trial draws. SGD and AdamW work at learning rates (and weight decays) more than an order
    of magnitude apart, so one shared range would waste most trials of one optimiser: ``lr`` and
    ``weight_decay`` are drawn as factors of the chosen optimiser's ``reference`` values instead."""

    optimizer: list[Optimizer] = Field(min_length=1)
    reference: dict[Optimizer, OptimizerReference]
    lr_factor: SearchRange
    weight_decay_factor: SearchRange
    label_smoothing: SearchRange
    batch_size: list[int] = Field(min_length=1)

    @field_validator("optimizer", "batch_size")
    @classmethod
    def _distinct(cls, values: list) -> list:
        if len(set(values)) != len(values):
            raise ValueError(f"choices must be distinct, got {values}")
        return values

    @field_validator("batch_size")
    @classmethod
    def _positive_batches(cls, sizes: list[int]) -> list[int]:
        if any(size <= 0 for size in sizes):
            raise ValueError(f"batch sizes must be > 0, got {sizes}")
        return sizes

    @field_validator("label_smoothing")
    @classmethod
    def _smoothing_range(cls, r: SearchRange) -> SearchRange:
        if r.low < 0 or r.high >= 1:
            raise ValueError(f"label smoothing must lie in [0, 1), got [{r.low}, {r.high}]")
        return r

    @model_validator(mode="after")
    def _every_optimizer_has_a_reference(self) -> "SearchSpace":
        missing = [o for o in self.optimizer if o not in self.reference]
        if missing:
            raise ValueError(f"reference has no values for optimizer(s) {missing}")
        return self


class PerProfile(_Strict):
    """One positive count per profile (stage sections are shared by all profiles)."""

    smoke: int = Field(gt=0)
    cpu: int = Field(gt=0)
    gpu: int = Field(gt=0)


class PrunerParams(_Strict):
    """Optuna's MedianPruner on per-epoch validation accuracy."""

    n_startup_trials: int = Field(2, ge=0, description="trials that finish before any is pruned")
    min_epochs_fraction: float = Field(0.25, ge=0, le=1, description="no trial is pruned before this fraction "
                                       "of the profile's epochs (at least one epoch)")


class SamplerParams(_Strict):
    """Optuna's TPE sampler; a resumed study offsets the seed by the trials it already holds."""

    seed: int = Field(0, ge=0)
    n_startup_trials: int = Field(10, ge=0, description="random trials before TPE models the results")


class HeartbeatParams(_Strict):
    """Optuna's trial heartbeat on a database server (not SQLite): a trial whose worker stopped
    beating for ``grace_period_s`` (a killed process, a lost machine) becomes FAIL when a worker
    next starts a trial, and its parameters are tried again."""

    interval_s: int = Field(60, ge=1, description="seconds between a running trial's heartbeats")
    grace_period_s: int | None = Field(None, ge=1, description="seconds without a heartbeat before a running "
                                       "trial counts as dead; default: twice interval_s")
    max_retry: int = Field(1, ge=0, description="times a dead trial's parameters are enqueued again")


class TuningParams(StageParams):
    study_name: str = Field("resnet50_recipe", min_length=1)
    storage: str | None = Field(None, description="an SQLAlchemy URL (e.g. postgresql://host/db) shared by several "
                                "machines; default: sqlite:///<models>/hparam_tuning/study.db")
    n_trials: PerProfile
    trial_seed: int | None = Field(None, ge=0, description="the one seed every trial trains with; default: the "
                                   "profile's first seed")
    search: SearchSpace
    batch_size_by_profile: dict[Literal["smoke", "cpu", "gpu"], list[int]] = Field(
        default_factory=dict, description="the batch sizes a trial draws under a profile, instead of "
        "search.batch_size (a GPU profile's large batches)")
    pruner: PrunerParams = PrunerParams()
    sampler: SamplerParams = SamplerParams()
    heartbeat: HeartbeatParams = HeartbeatParams()
    control: SourceModel = Field(SourceModel(), description="the stage and variant whose results are the "
                                 "default recipe's (trained on the same budget and seeds; not retrained here)")

    def search_under(self, profile: str) -> SearchSpace:
        """The search space of ``profile``: ``search`` with that profile's batch sizes, if it has its own."""
        sizes = self.batch_size_by_profile.get(profile)
        return self.search if sizes is None else SearchSpace.model_validate(
            {**self.search.model_dump(), "batch_size": sizes})

    def training_runs(self, budget: "Budget", profile: str) -> list[PlannedRun]:
        """The study's trials (one seed each, every epoch; pruned trials stop earlier: an upper
        bound) and the best recipe retrained over the profile's seeds."""
        trials = getattr(self.n_trials, profile)
        return [self._model_run("trials", budget, seeds=trials), self._model_run("tuned", budget)]

    @field_validator("storage")
    @classmethod
    def _database_url(cls, storage: str | None) -> str | None:
        if storage is not None and "://" not in storage:
            raise ValueError(f"storage must be a database URL such as sqlite:////abs/path/study.db or "
                             f"postgresql://user@host/db, got {storage!r}")
        return storage


# --------------------------------------------------------------------------- transfer learning
TRANSFER_METHODS = ("scratch", "finetune", "linear_probe", "frozen_early")


class TargetFraction(_Strict):
    """How much of the target task's training data one setting keeps, and for how long it trains.

    ``train_fraction`` is a class-stratified share of the profile's training images of the
    target classes (at least 2 per class); ``epochs_scale`` multiplies the profile's epochs: a
    few dozen images are one optimiser step per epoch, so the tiny settings need many epochs to
    take a sensible number of steps."""

    train_fraction: float = Field(gt=0, le=1)
    epochs_scale: float = Field(1.0, gt=0, le=100)


class TransferParams(StageParams):
    """In-domain transfer: pretrain on ``source_classes``, adapt to ``target_classes`` with each
    of ``fractions`` of their data by each of ``methods``; or start from a local checkpoint."""

    source_classes: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=2)
    target_classes: list[int] = Field(default_factory=lambda: [5, 6, 7, 8, 9], min_length=2)
    fractions: dict[str, TargetFraction] = Field(min_length=1)
    methods: list[str] = Field(default_factory=lambda: list(TRANSFER_METHODS), min_length=1)
    pretrained_path: str | None = Field(None, description="a local (e.g. ImageNet) checkpoint of `model` to "
                                        "adapt instead of pretraining on the source classes")
    pretrained_exclude: list[str] = Field(default_factory=lambda: ["fc."], description="state-dict prefixes "
                                          "left at their fresh initialisation: the classifier")
    variant_profiles: dict[str, list[Literal["smoke", "cpu", "gpu"]]] = Field(
        default_factory=dict, description="`<method>_<fraction>` variants that run only under these profiles")

    @field_validator("source_classes", "target_classes")
    @classmethod
    def _known_classes(cls, classes: list[int]) -> list[int]:
        if not all(0 <= c <= 9 for c in classes) or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be distinct Fashion-MNIST labels 0..9, got {classes}")
        return classes

    _known_methods = field_validator("methods")(_distinct_names_of("methods", TRANSFER_METHODS))

    _fraction_names = field_validator("fractions")(_names_usable_in_paths("fraction"))

    @model_validator(mode="after")
    def _consistent(self) -> "TransferParams":
        shared = sorted(set(self.source_classes) & set(self.target_classes))
        if shared:
            raise ValueError(f"source_classes and target_classes must be disjoint; both hold {shared}")
        unknown = sorted(set(self.variant_profiles) - set(self.variant_names()))
        if unknown:
            raise ValueError(f"variant_profiles names unknown variants {unknown}; variants: {self.variant_names()}")
        return self

    def variant_names(self) -> list[str]:
        """``<method>_<fraction>`` for every fraction and method, in params order."""
        return [f"{method}_{fraction}" for fraction in self.fractions for method in self.methods]

    def variants_under(self, profile: str) -> list[str]:
        """The ``<method>_<fraction>`` variants that run under ``profile``, in params order."""
        return [n for n in self.variant_names() if profile in self.variant_profiles.get(n, [profile])]

    def training_runs(self, budget: "Budget", profile: str) -> list[PlannedRun]:
        """The source pretraining on the source classes' images (none with ``pretrained_path``) and
        every ``<method>_<fraction>`` on its share of the target classes' images."""
        runs, per_class = [], budget.train_size / 10
        if self.pretrained_path is None:
            runs.append(self._model_run("source_pretrain", budget, images=round(per_class * len(self.source_classes))))
        selected = self.variants_under(profile)
        for fraction_name, fraction in self.fractions.items():
            for method in self.methods:
                if f"{method}_{fraction_name}" not in selected:
                    continue
                images = max(2 * len(self.target_classes),
                             round(per_class * len(self.target_classes) * fraction.train_fraction))
                runs.append(self._model_run(f"{method}_{fraction_name}", budget, images=images,
                                            epochs=scaled_epochs(budget.epochs, fraction.epochs_scale)))
        return runs


# --------------------------------------------------------------------------- Table 1: limitations
class LimitationsParams(StageParams):
    """The review's Table 1 measured (notebook 16): ``variants`` train the baseline at other
    input sizes (``res_*``) and shares of the data (``data_*``); the depth series and the
    low-data control are read from other stages."""

    depth_from: str = Field("wide_deep", description="the stage whose ResNets of several depths are read")
    low_data_from: list[str] = Field(default_factory=lambda: ["dropout/low_data_drop_rate_0"],
                                     description="stage/variant runs of the baseline on a share of the data")
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 32, 128], min_length=1)
    memory_batch_sizes: list[int] = Field(default_factory=lambda: [16, 64, 256])

    @field_validator("batch_sizes", "memory_batch_sizes")
    @classmethod
    def _positive(cls, sizes: list[int]) -> list[int]:
        if any(s <= 0 for s in sizes):
            raise ValueError(f"batch sizes must be positive, got {sizes}")
        return sizes

    @field_validator("low_data_from")
    @classmethod
    def _stage_slash_variant(cls, refs: list[str]) -> list[str]:
        bad = [r for r in refs if r.count("/") != 1 or not all(r.split("/"))]
        if bad:
            raise ValueError(f"must be 'stage/variant', got {bad}")
        return refs


# --------------------------------------------------------------------------- paths
def project_root(start: str | os.PathLike | None = None) -> Path:
    """The folder holding ``params.yaml`` and ``dvc.yaml``: ``$RESNET_REVIEW_ROOT`` or the nearest
    such folder above ``start`` (the working directory by default), so notebooks run by papermill,
    nbval or by hand all find the same files."""
    if env := os.environ.get("RESNET_REVIEW_ROOT"):
        return Path(env).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no params.yaml + dvc.yaml found in {here} or above; set RESNET_REVIEW_ROOT")


# each stage's per-image test predictions, beside its metrics.json (written by Stage.finish)
PREDICTIONS_FILE = "predictions.json"


class Paths:
    """Every location the project reads or writes, relative to the project root."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).resolve() if root else project_root()
        self.params = self.root / "params.yaml"
        self.claims = self.root / "claims.yaml"
        self.raw = self.root / "data" / "raw"
        self.prepared = self.root / "data" / "prepared" / "fashion_mnist.pt"
        self.reports = self.root / "reports"
        self.stages = self.reports / "stages"
        self.models = self.root / "models"

    def stage_reports(self, stage: str, reports_dir: str | os.PathLike = "reports/stages") -> Path:
        return self._under_root(reports_dir) / stage

    def stage_models(self, stage: str, models_dir: str | os.PathLike = "models") -> Path:
        return self._under_root(models_dir) / stage

    def resume_dir(self, stage: str, models_dir: str | os.PathLike = "models") -> Path:
        """Per-epoch checkpoints for resuming; outside the stage's DVC outputs, which DVC
        deletes before it re-runs a stage."""
        return self._under_root(models_dir) / "_resume" / stage

    def _under_root(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self.root / path


# --------------------------------------------------------------------------- loading
def _format_errors(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in (*([prefix] if prefix else []), *e["loc"]))
        got = "" if e["type"] == "missing" else f" (got {e['input']!r})"
        lines.append(f"  {key}: {e['msg']}{got}")
    return "\n".join(lines)


def validate_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a params mapping: every section, every stage, one line per bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source} must be a mapping, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"{source} is invalid:\n{_format_errors(err)}") from None
    problems = []
    for name in params.stage_names():
        section = params.model_extra[name]
        if not isinstance(section, dict):
            problems.append(f"  {name}: a stage section must be a mapping (got {section!r})")
            continue
        try:
            _STAGE_SCHEMAS.get(name, StageParams).model_validate(section)
        except ValidationError as err:
            problems.append(_format_errors(err, prefix=name))
    if problems:
        raise ParamsError(f"{source} is invalid:\n" + "\n".join(problems))
    return params


def load_params(path: str | os.PathLike | None = None, profile: str | None = None) -> Params:
    """Read and validate ``params.yaml``; ``profile`` overrides the file's switch."""
    path = Path(path) if path else Paths().params
    if not path.is_file():
        raise ParamsError(f"{path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    if profile is not None:
        if profile not in PROFILES:
            raise ParamsError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
        raw = {**raw, "profile": profile}
    return validate_params(raw, source=str(path.name))


class ReadOnlyParams(StageParams):
    """A stage that trains nothing: it reads the data or other stages' results."""

    def training_runs(self, budget: "Budget", profile: str) -> list[PlannedRun]:
        return []


register_stage_schema("data_overview", ReadOnlyParams)
register_stage_schema("report", ReadOnlyParams)
register_stage_schema("pruning", PruningParams)
register_stage_schema("quantisation", QuantisationParams)
register_stage_schema("distillation", DistillationParams)
register_stage_schema("augmentation", AugmentationParams)
register_stage_schema("hparam_tuning", TuningParams)
register_stage_schema("transfer", TransferParams)
register_stage_schema("limitations", LimitationsParams)
register_stage_schema("synergy", SynergyParams)
