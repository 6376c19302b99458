"""Project paths and the validated contents of ``params.yaml``.

``params.yaml`` has one profile switch, the budgets of the three profiles, the shared training
recipe and one section per pipeline stage.  Everything is validated up front with pydantic so
that a typo or an impossible value stops a run before any training starts, with one line per
bad key::

    params.yaml is invalid:
      profiles.cpu.epochs: Input should be greater than 0 (got -1)
      baseline.modle: Extra inputs are not permitted (got 'resnet50')

A technique stage with keys of its own registers its schema with :func:`register_stage_schema`
in its module of :mod:`resnet_review.techniques` (imported with the package, so every section is
checked wherever params.yaml is loaded); any other section is validated as a plain
:class:`StageParams`. Schemas shared by several techniques (budget, recipe, variant, a reference to
another stage's trained model) live here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data import VIEWS
from .models import is_known_model, model_suggestions

PROFILES = ("smoke", "cpu", "gpu")


class ParamsError(ValueError):
    """params.yaml (or an override) names an unknown key, a wrong type or an impossible value."""


class Strict(BaseModel):
    """A block of params.yaml: unknown keys are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PerProfile(Strict):
    """One positive count per profile, for a stage setting whose cost must follow the profile's
    budget (stage sections are shared by all profiles), e.g. ``{smoke: 2, cpu: 3, gpu: 24}``."""

    smoke: int = Field(gt=0)
    cpu: int = Field(gt=0)
    gpu: int = Field(gt=0)

    def under(self, profile: str) -> int:
        return getattr(self, profile)


def scaled_epochs(epochs: int, scale: float) -> int:
    """``epochs`` times ``scale``, rounded, at least 1 — or 0 when ``scale`` is 0 (a step that is
    switched off, e.g. no quantisation-aware fine-tuning)."""
    return 0 if scale == 0 else max(1, round(epochs * scale))


MIN_TRAIN_IMAGES = 20  # the fewest training images a share of the data is cut to


class Budget(Strict):
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


class Recipe(Strict):
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


def check_recipe_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
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


def names_usable_in_paths(what: str):
    """A validator of a mapping whose keys name folders and metric keys (``models/<stage>/<name>``)."""

    def check(named: dict[str, Any]) -> dict[str, Any]:
        for name in named:
            if not name or "/" in name:
                raise ValueError(f"{what} name {name!r} must be non-empty and contain no '/'")
        return named

    return check


def distinct_names_of(what: str, options: Sequence[str]):
    """A validator of a list of distinct names from ``options``."""

    def check(names: list[str]) -> list[str]:
        if any(n not in options for n in names) or len(set(names)) != len(names):
            raise ValueError(f"{what} must list distinct names of {', '.join(options)}, got {names}")
        return names

    return check


class Variant(Strict):
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

    _check_train = field_validator("train")(check_recipe_overrides)
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


class StageParams(Strict):
    """A technique stage: which registered model it trains, how the recipe differs, and the
    named variants it compares (each trained on the profile's seeds)."""

    model: str = "resnet50"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of the shared recipe")
    variants: dict[str, Variant] = Field(default_factory=dict)

    _check_train = field_validator("train")(check_recipe_overrides)
    _check_model = field_validator("model")(_check_model_name)

    _variant_names = field_validator("variants")(names_usable_in_paths("variant"))

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


class PrepareParams(Strict):
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

    def budgets_written(self) -> dict[str, dict[str, Any]]:
        """Each profile's budget as params.yaml writes it: what a result's evidence tier is judged
        against (:func:`resnet_review.claims.evidence_tier`)."""
        return {name: budget.model_dump() for name, budget in self.profiles.items()}

    def stage(self, name: str) -> StageParams:
        if name not in self.stage_names():
            raise ParamsError(f"params.yaml has no section '{name}' (stages: {', '.join(self.stage_names())})")
        return stage_schema(name).model_validate(self.model_extra[name])

    def stage_names(self) -> list[str]:
        return sorted(self.model_extra or {})


_STAGE_SCHEMAS: dict[str, type[StageParams]] = {}


def register_stage_schema(stage: str, schema: type[StageParams] | None = None):
    """Declare the keys the params.yaml section ``stage`` accepts beyond :class:`StageParams`:
    ``register_stage_schema("x", XParams)``, or as a decorator of the schema, the way timm's
    ``@register_model`` names a model (each module of :mod:`resnet_review.techniques` does so for
    its own section). A second, different schema for one stage is refused."""

    def register(cls: type[StageParams]) -> type[StageParams]:
        if not (isinstance(cls, type) and issubclass(cls, StageParams)):
            raise TypeError(f"the schema of stage '{stage}' must subclass StageParams, got {cls!r}")
        known = _STAGE_SCHEMAS.get(stage)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"stage '{stage}' already has the schema {known.__module__}.{known.__qualname__}")
        _STAGE_SCHEMAS[stage] = cls
        return cls

    return register if schema is None else register(schema)


def stage_schema(stage: str) -> type[StageParams]:
    """The schema registered for ``stage``, or :class:`StageParams` (a stage of variants only)."""
    return _STAGE_SCHEMAS.get(stage, StageParams)



# --------------------------------------------------------------------------- references
class SourceModel(Strict):
    """Trained weights another stage wrote (``models/<stage>/<variant>/seed<k>.pt``), one per seed."""

    stage: str = "baseline"
    variant: str = "resnet50"


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

    def dvc_stage(self, stage: str) -> str:
        """The name ``dvc repro`` knows the notebook stage ``stage`` by: ``<group>@<stage>`` for one
        generated by a ``foreach`` of dvc.yaml (e.g. ``technique@se``), else ``stage``."""
        try:
            stages = yaml.safe_load((self.root / "dvc.yaml").read_text()).get("stages") or {}
        except (OSError, yaml.YAMLError, AttributeError):
            return stage
        for group, body in stages.items():
            if isinstance(body, dict) and isinstance(body.get("foreach"), dict) and stage in body["foreach"]:
                return f"{group}@{stage}"
        return stage

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
            stage_schema(name).model_validate(section)
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
