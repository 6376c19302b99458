"""Hyper-parameter tuning of the training recipe with an Optuna study.

Each trial draws an optimiser, learning rate, weight decay, label smoothing and batch size from
the stage's search space (:class:`~SearchSpace`), trains the stage's model
once (one seed) with the one engine on the profile's training images, and reports the validation
accuracy after every epoch; a :class:`~optuna.pruners.MedianPruner` stops a trial whose accuracy
falls below the median of earlier trials at the same epoch. The test set never takes part: only
the retrained best recipe (:func:`run_tuning`, over every seed) is evaluated on it.

The study lives in a database, by default ``sqlite:///<models_dir>/hparam_tuning/study.db``
beside the stage's weights; the ``storage`` param takes any SQLAlchemy URL instead, so several
machines can work on one study. :func:`run_study` runs only the trials still missing, so an
interrupted study resumes where it stopped; ``models/hparam_tuning`` is a ``persist: true``
output, so a ``dvc repro`` resumes it too. The stage's own study is started afresh when its
setup (search space, budget, seed) or the training code changed (:func:`open_study`); a shared
one (``storage``) is refused then instead, since other machines' trials are not this run's to drop.

:class:`TuningParams` is the ``hparam_tuning`` section of params.yaml.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, Trial, TrialState
from pydantic import Field, field_validator, model_validator

from ..config import (
    Budget,
    Optimizer,
    ParamsError,
    PerProfile,
    PlannedRun,
    Recipe,
    SourceModel,
    StageParams,
    Strict,
    register_stage_schema,
)
from ..engine import NonFiniteLossError, fit, seed_everything
from ..experiment import Stage
from ..trained import training_code_digest


# --------------------------------------------------------------------------- params
class SearchRange(Strict):
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


class OptimizerReference(Strict):
    """The values an optimiser's searched factors multiply."""

    lr: float = Field(gt=0)
    weight_decay: float = Field(gt=0)


class SearchSpace(Strict):
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


class PrunerParams(Strict):
    """Optuna's MedianPruner on per-epoch validation accuracy."""

    n_startup_trials: int = Field(2, ge=0, description="trials that finish before any is pruned")
    min_epochs_fraction: float = Field(0.25, ge=0, le=1, description="no trial is pruned before this fraction "
                                       "of the profile's epochs (at least one epoch)")


class SamplerParams(Strict):
    """Optuna's TPE sampler; a resumed study offsets the seed by the trials it already holds."""

    seed: int = Field(0, ge=0)
    n_startup_trials: int = Field(10, ge=0, description="random trials before TPE models the results")


class HeartbeatParams(Strict):
    """Optuna's trial heartbeat on a database server (not SQLite): a trial whose worker stopped
    beating for ``grace_period_s`` (a killed process, a lost machine) becomes FAIL when a worker
    next starts a trial, and its parameters are tried again."""

    interval_s: int = Field(60, ge=1, description="seconds between a running trial's heartbeats")
    grace_period_s: int | None = Field(None, ge=1, description="seconds without a heartbeat before a running "
                                       "trial counts as dead; default: twice interval_s")
    max_retry: int = Field(1, ge=0, description="times a dead trial's parameters are enqueued again")


@register_stage_schema("hparam_tuning")
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
        trials = self.n_trials.under(profile)
        return [self._model_run("trials", budget, seeds=trials), self._model_run("tuned", budget)]

    @field_validator("storage")
    @classmethod
    def _database_url(cls, storage: str | None) -> str | None:
        if storage is not None and "://" not in storage:
            raise ValueError(f"storage must be a database URL such as sqlite:////abs/path/study.db or "
                             f"postgresql://user@host/db, got {storage!r}")
        return storage


# --------------------------------------------------------------------------- running
STUDY_FILE = "study.db"
# the trials that count towards n_trials: a FAILED one (a crash, an interrupt) or one left RUNNING
# by a killed process is drawn again
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SEARCHED = ("optimizer", "lr", "weight_decay", "label_smoothing")


# --------------------------------------------------------------------------- search space
def suggest(trial: Trial, space: SearchSpace) -> dict[str, Any]:
    """The trial's draw from ``space`` (Optuna parameter name -> value)."""
    def draw(name: str, r) -> float:
        return trial.suggest_float(name, r.low, r.high, log=r.log)

    return {"optimizer": trial.suggest_categorical("optimizer", space.optimizer),
            "lr_factor": draw("lr_factor", space.lr_factor),
            "weight_decay_factor": draw("weight_decay_factor", space.weight_decay_factor),
            "label_smoothing": draw("label_smoothing", space.label_smoothing),
            "batch_size": trial.suggest_categorical("batch_size", space.batch_size)}


def recipe_from(params: dict[str, Any], space: SearchSpace, base: Recipe) -> tuple[Recipe, int]:
    """``base`` with a trial's drawn values (lr and weight decay as factors of the optimiser's
    reference values), and the trial's batch size."""
    reference = space.reference[params["optimizer"]]
    recipe = Recipe(**{**base.model_dump(), "optimizer": params["optimizer"],
                       "lr": reference.lr * params["lr_factor"],
                       "weight_decay": reference.weight_decay * params["weight_decay_factor"],
                       "label_smoothing": params["label_smoothing"]})
    return recipe, params["batch_size"]


def params_of(recipe: Recipe, batch_size: int, space: SearchSpace) -> dict[str, Any] | None:
    """The draw that reproduces ``recipe`` and ``batch_size``, or None when it lies outside ``space``."""
    if recipe.optimizer not in space.optimizer or batch_size not in space.batch_size:
        return None
    reference = space.reference[recipe.optimizer]
    params = {"optimizer": recipe.optimizer, "lr_factor": recipe.lr / reference.lr,
              "weight_decay_factor": recipe.weight_decay / reference.weight_decay,
              "label_smoothing": recipe.label_smoothing, "batch_size": batch_size}
    ranges = {"lr_factor": space.lr_factor, "weight_decay_factor": space.weight_decay_factor,
              "label_smoothing": space.label_smoothing}
    inside = all(r.low <= params[name] <= r.high for name, r in ranges.items())
    return params if inside else None


# --------------------------------------------------------------------------- study
def search_space(stage: Stage) -> SearchSpace:
    """What a trial of the stage draws under its profile (the profile's own batch sizes, if any)."""
    return stage.config.search_under(stage.params.profile)


def trial_seed(stage: Stage) -> int:
    """The one seed every trial trains with: ``trial_seed``, or the profile's first seed."""
    seed = stage.config.trial_seed
    return stage.budget.seeds[0] if seed is None else seed


def first_prunable_epoch(stage: Stage) -> int:
    """No trial is pruned before this epoch: ``min_epochs_fraction`` of the profile's epochs, at least 1."""
    return max(1, math.ceil(stage.config.pruner.min_epochs_fraction * stage.budget.epochs))


def n_trials(stage: Stage) -> int:
    """The finished trials the study should hold under the stage's profile."""
    return stage.config.n_trials.under(stage.params.profile)


def storage_url(stage: Stage) -> str:
    """``storage`` from params, or the SQLite file inside the stage's output folder."""
    return stage.config.storage or f"sqlite:///{(stage.models_dir / STUDY_FILE).resolve()}"


def study_storage(stage: Stage, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Where the study lives: an SQLite file (one machine; a trial a killed process left RUNNING
    is drawn anew), or a database server with Optuna's heartbeat, so that a trial whose worker
    died becomes FAIL once another worker starts a trial, and is retried with the same parameters.
    Workers that create a new database at the same instant race on its schema: the loser retries
    once the winner has written it."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    url = storage_url(stage)
    sqlite = url.startswith("sqlite")
    options: dict[str, Any] = {}
    with warnings.catch_warnings():  # the heartbeat is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if not sqlite:
            beat = stage.config.heartbeat
            if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9 names it so
                retry = {"heartbeat_stale_trial_callback":
                         optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=beat.max_retry)}
            else:
                retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=beat.max_retry)}
            options = {"heartbeat_interval": beat.interval_s, "grace_period": beat.grace_period_s, **retry}
        else:  # writers wait for each other's transactions (the default is 5 s)
            options = {"engine_kwargs": {"connect_args": {"timeout": 60}}}
        for attempt in range(attempts):
            try:
                storage = optuna.storages.RDBStorage(url, **options)
                return serialised_sqlite(storage) if sqlite else storage
            except (IntegrityError, OperationalError):
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def serialised_sqlite(storage: optuna.storages.RDBStorage) -> optuna.storages.RDBStorage:
    """``storage`` (an SQLite file) with every transaction taking the write lock when it begins.

    SQLite ignores the row lock Optuna asks for when a worker claims a WAITING trial (an enqueued
    recipe, a retried one): two workers reading it WAITING at the same instant would both run it,
    and the second to finish fails ("Trial#0 has already finished"). ``BEGIN IMMEDIATE`` makes the
    read and the claim one step (SQLAlchemy's recipe for serialisable pysqlite transactions)."""
    from sqlalchemy import event

    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None  # the driver leaves BEGIN to the listener below

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners close; new ones get them
    return storage


def shown_url(url: str) -> str:
    """``url`` with any password masked, for logs and metrics.json."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def shown_storage(stage: Stage) -> str:
    """The study's storage for metrics.json: the default SQLite file relative to the project
    root (the same on every clone), a ``storage`` URL with its password masked."""
    if stage.config.storage:
        return shown_url(stage.config.storage)
    return f"sqlite:///{os.path.relpath((stage.models_dir / STUDY_FILE).resolve(), stage.paths.root.resolve())}"


def study_setup(stage: Stage) -> dict[str, Any]:
    """What the trials' results depend on; a study run under another setup is not resumed."""
    b = stage.budget
    setup = {"model": stage.config.model, "model_kwargs": stage.config.model_kwargs,
             "budget": b.model_dump(include={"train_size", "val_size", "data_seed", "img_size", "in_chans", "epochs"}),
             "trial_seed": trial_seed(stage), "search": search_space(stage).model_dump(),
             "base_recipe": stage.recipe.model_dump()}
    return json.loads(json.dumps(setup))  # as the storage returns it (lists, string keys)


class WorkerSeededSampler(optuna.samplers.BaseSampler):
    """TPE seeded with ``seed`` plus the number of the first trial this worker draws.

    One worker alone draws exactly what ``TPESampler(seed + trials so far)`` draws, so a study and
    its resumption are reproducible; workers that open one study at the same instant see the same
    trial count but are handed distinct trial numbers by the storage, so they never share a seed
    and never draw the same recipes twice."""

    def __init__(self, seed: int, n_startup_trials: int):
        self._seed, self._n_startup_trials = seed, n_startup_trials
        self._tpe: optuna.samplers.TPESampler | None = None

    def _sampler(self, trial: FrozenTrial | None = None) -> optuna.samplers.TPESampler:
        if self._tpe is None:
            self._tpe = optuna.samplers.TPESampler(seed=self._seed + (trial.number if trial else 0),
                                                   n_startup_trials=self._n_startup_trials)
        return self._tpe

    def before_trial(self, study, trial):
        self._sampler(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self._sampler(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler().reseed_rng()


def open_study(stage: Stage) -> optuna.Study:
    """Create the stage's study, or load it to resume or to join it from another worker.

    Only the worker whose ``create_study`` succeeds (the storage refuses a second study of the
    same name, atomically) enqueues the default recipe as the first trial, so the search starts
    from the configuration it has to beat, once."""
    cfg = stage.config
    if cfg.storage is None:
        stage.models_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url(stage)
    options = dict(storage=study_storage(stage), study_name=cfg.study_name,
                   sampler=WorkerSeededSampler(cfg.sampler.seed, cfg.sampler.n_startup_trials),
                   pruner=optuna.pruners.MedianPruner(n_startup_trials=cfg.pruner.n_startup_trials,
                                                      n_warmup_steps=first_prunable_epoch(stage)))
    try:
        study, created = optuna.create_study(direction="maximize", **options), True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(**options), False
    setup, stored = study_setup(stage), study.user_attrs.get("setup")
    if cfg.storage is None:  # the stage's own study: its trials are stale once the training code changes
        setup["training_code"] = training_code_digest()
    if stored is not None and stored != setup:
        changed = sorted(k for k in set(stored) | set(setup) if stored.get(k) != setup.get(k))
        if cfg.storage is not None:  # a shared study: other machines' trials are not this run's to drop
            raise ParamsError(f"study '{cfg.study_name}' in {shown_url(url)} was run with another "
                              f"{', '.join(changed)}; set hparam_tuning.study_name to a new name, or delete that "
                              "study to start afresh")
        # the stage's own output (models/<stage> outlives a DVC re-run): replaced, as any output is
        print(f"[{stage.name}] study '{cfg.study_name}' in {shown_url(url)} was run with another "
              f"{', '.join(changed)}: starting it afresh", file=sys.stderr)
        optuna.delete_study(study_name=cfg.study_name, storage=options["storage"])
        study, created, stored = optuna.create_study(direction="maximize", **options), True, None
    if stored is None:
        study.set_user_attr("setup", setup)
    if created:
        default = params_of(stage.recipe, stage.budget.batch_size, search_space(stage))
        if default is not None:
            study.enqueue_trial(default, user_attrs={"default_recipe": True})
        else:
            print(f"[{stage.name}] the default recipe lies outside the search space; not enqueued", file=sys.stderr)
    return study


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def pruning_hook(trial: Trial, epochs: int, first_epoch: int) -> Callable[[int, dict[str, float]], bool]:
    """``fit``'s ``on_epoch_end``: report the validation accuracy to the trial and prune it when
    the pruner says so, from ``first_epoch`` on but never after the last epoch (the trial's result
    is complete then; pruning it would only throw that away)."""

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> bool:
        trial.report(metrics["val_acc"], epoch)
        if first_epoch <= epoch < epochs and trial.should_prune():
            raise optuna.TrialPruned(f"val_acc {metrics['val_acc']:.4f} after epoch {epoch} is below the median")
        return False

    return on_epoch_end


def objective(trial: Trial, stage: Stage) -> float:
    """Train the stage's model once with the trial's recipe; its final validation accuracy."""
    b = stage.budget
    space = search_space(stage)
    recipe, batch_size = recipe_from(suggest(trial, space), space, stage.recipe)
    trial.set_user_attr("lr", recipe.lr)
    trial.set_user_attr("weight_decay", recipe.weight_decay)
    splits, seed = stage.splits, trial_seed(stage)
    seed_everything(seed)
    model = stage.model_factory(splits=splits)()
    try:
        result = fit(model, splits.train, splits.val, recipe=recipe, epochs=b.epochs, batch_size=batch_size, seed=seed,
                     accel=stage.accel, eval_batch_size=b.eval_batch_size, desc=f"{stage.name}/trial{trial.number}",
                     deadline=stage.deadline,  # a trial cut by a chunk's deadline fails and is drawn anew
                     on_epoch_end=pruning_hook(trial, b.epochs, first_prunable_epoch(stage)))
    except NonFiniteLossError as err:
        # a diverged recipe is a bad one, not a broken trial: pruned, so it is not drawn again
        trial.set_user_attr("diverged", True)
        raise optuna.TrialPruned(f"training diverged: {str(err).split(';')[0]}") from err
    return result.final["val_acc"]


def run_study(stage: Stage, callbacks: Iterable[Callable[[optuna.Study, FrozenTrial], None]] = ()) -> optuna.Study:
    """Open (or resume) the stage's study and run the trials still missing to reach the
    profile's ``n_trials`` finished (complete or pruned) ones."""
    study = open_study(stage)
    target, done = n_trials(stage), len(finished_trials(study))
    missing = max(0, target - done)
    print(f"[{stage.name}] study '{study.study_name}' in {shown_url(storage_url(stage))}: {done} of {target} trials "
          f"finished, running {missing}", file=sys.stderr)
    if missing:
        # MaxTrialsCallback re-counts after every trial: several machines on one study stop together
        study.optimize(lambda trial: objective(trial, stage), n_trials=missing,
                       callbacks=[MaxTrialsCallback(target, states=FINISHED), *callbacks])
    return study


# --------------------------------------------------------------------------- stage glue
@dataclass
class TuningOutcome:
    study: optuna.Study
    recipe: Recipe
    batch_size: int
    tuned: Any  # the VariantResult of the best recipe over every seed
    control: dict[str, list[float]]  # the default recipe's per-seed results (the control stage's)
    summary: dict[str, Any]  # study_summary(), as logged to metrics.json


def default_recipe(stage: Stage) -> Recipe:
    """The recipe the control stage trained its variant with."""
    source = stage.config.control
    section = stage.params.stage(source.stage)
    recipe = section.recipe(stage.params.train)
    variant = section.variants.get(source.variant)
    return variant.recipe(recipe) if variant else recipe


def study_summary(study: optuna.Study, stage: Stage) -> dict[str, Any]:
    """The study's counts and best trial, for metrics.json."""
    states = Counter(t.state for t in study.trials)
    best = study.best_trial
    default = [t for t in finished_trials(study) if t.user_attrs.get("default_recipe")]
    recipe, batch_size = recipe_from(best.params, search_space(stage), stage.recipe)
    return {"name": study.study_name, "storage": shown_storage(stage), "n_trials": n_trials(stage),
            "complete": states[TrialState.COMPLETE], "pruned": states[TrialState.PRUNED],
            "failed": states[TrialState.FAIL], "best_trial": best.number, "best_val_acc": best.value,
            "best_is_default": bool(best.user_attrs.get("default_recipe")),
            "default_trial_val_acc": default[0].value if default and default[0].state == TrialState.COMPLETE else None,
            "best_params": best.params,
            "best_recipe": {**recipe.model_dump(include=set(SEARCHED)), "batch_size": batch_size}}


def run_tuning(stage: Stage) -> TuningOutcome:
    """The study, then its best recipe retrained over the profile's seeds as the variant
    ``tuned`` and evaluated on the test set; the default recipe's results are the control
    stage's (same budget and seeds), read, not retrained."""
    cfg = stage.config
    control = stage.reference(cfg.control.stage, cfg.control.variant)  # before hours of trials
    default = default_recipe(stage)
    if default != stage.recipe:
        diff = sorted(k for k, v in stage.recipe.model_dump().items() if getattr(default, k) != v)
        raise ParamsError(f"hparam_tuning's recipe differs from {cfg.control.stage}'s in {diff}: the tuned recipe "
                          "must differ from the default only in the keys the study searched")
    study = run_study(stage)
    best = study.best_trial
    recipe, batch_size = recipe_from(best.params, search_space(stage), stage.recipe)
    info = {"best_trial": best.number, "trial_val_acc": best.value, "batch_size": batch_size,
            **recipe.model_dump(include=set(SEARCHED))}
    tuned = stage.run("tuned", recipe=recipe, batch_size=batch_size, info=info)
    summary = study_summary(study, stage)
    stage.log_metrics(study=summary)
    return TuningOutcome(study, recipe, batch_size, tuned, control, summary)


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's matplotlib figures of the study (name -> Figure): the best value so far, the
    validation accuracy per epoch of every trial (where the pruner stopped them), the parameters'
    importances (Optuna's default evaluator; from two complete trials on) and the parallel coordinates."""
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    figures = {}
    with warnings.catch_warnings():  # the matplotlib backend is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        figures["optimization_history"] = plots.plot_optimization_history(study).figure
        figures["intermediate_values"] = plots.plot_intermediate_values(study).figure
        if len(complete) >= 2:
            figures["param_importances"] = plots.plot_param_importances(study).figure
        figures["parallel_coordinate"] = plots.plot_parallel_coordinate(study).figure
    return figures
