"""A technique stage in a few calls: params, data, training over seeds, profile, dvclive.

A notebook opens a :class:`Stage`, calls :meth:`Stage.run` once per variant it compares, and
:meth:`Stage.finish`.  :meth:`Stage.run` trains a fresh model per seed of the profile through
:func:`~resnet_review.engine.fit`, evaluates it on the test set with the one evaluator, profiles
the architecture once, and logs everything to one dvclive ``Live`` per stage::

    reports/stages/<stage>/metrics.json            # {variant: {test_acc: {mean, ci_low, ...}, ...}}
    reports/stages/<stage>/plots/metrics/<variant>/seed<k>/*.tsv   # per-epoch curves
    reports/stages/<stage>/figures/*.png
    models/<stage>/<variant>/seed<k>.pt            # trained weights (a DVC output)

The report stage reads every ``metrics.json`` under ``reports/stages`` without knowing the
stages in advance; a variant's row needs only the keys this module writes.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import os
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from dvclive import Live
from dvclive.plots import NumpyEncoder
from torch import nn

from ._version import __version__
from .claims import ClaimSpec, for_stage, load_catalogue, sentence
from .claims import Results as ClaimResults
from .claims import evaluate as evaluate_claim
from .config import (
    PREDICTIONS_FILE,
    Budget,
    Params,
    ParamsError,
    Paths,
    Recipe,
    StageParams,
    load_params,
    scaled_epochs,
)
from .data import Splits, TensorData, apply_view, load_splits
from .engine import Accel, FitResult, RngState, Run, fit_group, seed_everything
from .evaluate import EvalResult, evaluate
from .models import CheckpointError, build_model
from .profiling import ModelProfile, architecture_key, compare_latency, profile_model
from .results import collect, headline, write_headline
from .robustness import corrupted_sets, corruption_accuracy
from .stats import Estimate, mean_ci, paired_difference, verdict
from .storage import atomic_save, atomic_write_text
from .trained import TrainedRuns

BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"

# Metrics aggregated over seeds, as (name in metrics.json, how to read it from one seed's run).
SEED_METRICS: dict[str, Callable[["SeedRun"], float]] = {
    "test_acc": lambda r: r.test.accuracy,
    "test_macro_f1": lambda r: r.test.macro_f1,
    "test_ece": lambda r: r.test.ece,
    "test_loss": lambda r: r.test.loss,
    "val_acc": lambda r: r.fit.final.get("val_acc", math.nan),
    # accuracy on (a fixed subset of) the training images in eval mode, so that Dropout and
    # drop-path are off as they are for validation: the gap then measures overfitting alone
    "train_acc": lambda r: r.train_eval.accuracy if r.train_eval else math.nan,
    "train_val_gap": lambda r: SEED_METRICS["train_acc"](r) - r.fit.final.get("val_acc", math.nan),
    "train_time_s": lambda r: r.fit.train_time_s,
    "train_images_per_s": lambda r: r.fit.images_per_s,
    # mean accuracy over the corrupted test sets (robustness; see resnet_review.robustness)
    "corruption_acc": lambda r: sum(r.corruption.values()) / len(r.corruption) if r.corruption else math.nan,
}


Builder = Callable[[], nn.Module] | Callable[[int], nn.Module]


def _call_builder(build: Builder, seed: int) -> nn.Module:
    """``build()``, or ``build(seed)`` when the builder takes an argument."""
    try:
        takes_seed = bool(inspect.signature(build).parameters)
    except (TypeError, ValueError):  # builtins without a signature
        takes_seed = False
    return build(seed) if takes_seed else build()


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` runs: its first parameter's or buffer's device (CPU for none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@dataclass
class SeedRun:
    seed: int
    fit: FitResult
    test: EvalResult
    weights_path: Path | None
    train_eval: EvalResult | None = None
    corruption: dict[str, float] = field(default_factory=dict)


@dataclass
class VariantResult:
    """One configuration trained over every seed of the profile."""

    name: str
    runs: list[SeedRun]
    profile: ModelProfile | None
    info: dict[str, Any] = field(default_factory=dict)
    # the first seed's model as evaluated (on the CPU), for same-process latency comparisons
    model: nn.Module | None = field(default=None, repr=False)

    def estimate(self, metric: str) -> Estimate:
        return mean_ci(SEED_METRICS[metric](r) for r in self.runs)

    def summary(self) -> dict[str, Any]:
        """The nested block written to metrics.json under the variant's name."""
        # mean and 95% CI bounds only: n is `seeds`, the confidence level is always 0.95
        out: dict[str, Any] = {}
        for metric in SEED_METRICS:
            est = self.estimate(metric)
            out[metric] = _finite({"mean": est.mean, "ci_low": est.ci_low, "ci_high": est.ci_high})
        if self.profile is not None:
            out |= _finite(self.profile.scalars())
        out["seeds"] = len(self.runs)
        if self.runs and self.runs[0].corruption:
            # accuracy under each corruption, mean over seeds
            out["corruptions"] = {k: sum(r.corruption[k] for r in self.runs) / len(self.runs)
                                  for k in self.runs[0].corruption}
        # per-seed values, so a later stage can pair its seeds with these (see Stage.reference):
        # the shape Stage.reference returns, {"seed": [...], metric: [...], ...} in run order
        seeds = [r.seed for r in self.runs]
        values = {m: per_seed(self, m) for m in SEED_METRICS}
        out["per_seed"] = _finite({"seed": seeds, **{m: [v[s] for s in seeds] for m, v in values.items()}})
        return out | self.info


@dataclass
class SeedSeries:
    """A per-seed quantity derived from runs, e.g. a difference of effects (see Stage.interaction)."""

    name: str
    values: dict[int, float]


Comparable = VariantResult | SeedSeries | dict[str, list[float]]


def per_seed(x: Comparable | None, metric: str, like: dict[int, float] | None = None) -> dict[int, float]:
    """``{seed: value}`` of ``metric`` from a variant, a derived series, or a ``reference()`` dict;
    ``None`` is zero on the seeds of ``like`` (a claim that an effect differs from 0)."""
    if x is None:
        return {seed: 0.0 for seed in (like or {})}
    if isinstance(x, SeedSeries):
        return dict(x.values)
    if isinstance(x, VariantResult):
        return {r.seed: SEED_METRICS[metric](r) for r in x.runs}
    if metric not in x:
        raise KeyError(f"the per-seed results have no '{metric}' (they have {sorted(x)}); re-run that stage")
    return {seed: (math.nan if v is None else v) for seed, v in zip(x["seed"], x[metric])}


def _per_seed_variants(metrics: dict[str, Any]) -> list[str]:
    """The variants a stage's metrics.json holds per-seed results of, in its order."""
    return [k for k, v in metrics.items() if isinstance(v, dict) and "per_seed" in v]


def _comparable_budget(budget: Budget) -> dict[str, Any]:
    """The budget keys that make two stages' results comparable (data, epochs, seeds, batch),
    not those that only change how they are measured or where they run."""
    return budget.model_dump(include={"train_size", "val_size", "test_size", "data_seed", "img_size", "in_chans",
                                      "epochs", "batch_size", "seeds"})


class AtomicLive(Live):
    """dvclive's ``Live`` with ``metrics.json`` written atomically: dvclive writes it in place, so a
    kill during the write left an empty file where the stage's results were."""

    def make_summary(self):
        if self._step is not None:
            self.summary["step"] = self.step
        atomic_write_text(self.metrics_file, json.dumps(self.summary, indent=4, cls=NumpyEncoder) + "\n")


DEADLINE_ENV = "RESNET_REVIEW_DEADLINE"


def chunk_deadline() -> float | None:
    """The end of the current chunk of a campaign (a ``time.time()`` in ``$RESNET_REVIEW_DEADLINE``,
    set by :mod:`resnet_review.campaign`): no training epoch starts that would end after it."""
    raw = os.environ.get(DEADLINE_ENV, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ParamsError(f"${DEADLINE_ENV} must be a Unix time in seconds, got {raw!r}") from None


def _finite(value: Any) -> Any:
    """JSON has no NaN: undefined values (e.g. a CI from one seed) are written as null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


class Stage:
    """Everything one technique notebook needs, resolved from params.yaml and the profile."""

    def __init__(self, name: str, *, profile: str | None = None, reports_dir: str = "reports/scratch/stages",
                 models_dir: str = "models/scratch", params: Params | None = None,
                 root: str | os.PathLike | None = None, claims_file: str | os.PathLike | None = None):
        self.paths = Paths(root)
        self.claims_file = Path(claims_file) if claims_file else self.paths.claims
        self._catalogue: tuple[Path, list[ClaimSpec]] | None = None
        self.params = params or load_params(self.paths.params, profile=profile)
        self.name = name
        self.config: StageParams = self.params.stage(name)
        self.budget: Budget = self.params.budget
        self.recipe: Recipe = self.config.recipe(self.params.train)
        self.accel = Accel.for_device(self.budget.device, compile=self.budget.compile)
        self.out_dir = self.paths.stage_reports(name, reports_dir)
        self.models_dir = self.paths.stage_models(name, models_dir)
        self.resume_dir = self.paths.resume_dir(name, models_dir)
        self.trained = TrainedRuns(self.models_dir, self.accel, name)  # what a re-run loads instead of training
        self.figures_dir = self.out_dir / "figures"
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        self._live: Live | None = None
        self.results: dict[str, VariantResult] = {}
        self.claims: dict[str, dict[str, Any]] = {}
        self._splits: dict[tuple[float, int, str], Splits] = {}
        self._corrupted: dict[tuple[float, int, str], dict] = {}
        self._profiles: dict[tuple, tuple[str, ModelProfile]] = {}
        self.deadline = chunk_deadline()
        # a run's checkpoint after its last epoch lets a re-run skip it: chunked (campaign) runs
        self.resumable = self.budget.checkpoint_last or self.deadline is not None
        print(f"stage '{name}': profile={self.params.profile} device={self.accel.device} "
              f"train={self.budget.train_size} epochs={self.budget.epochs} seeds={self.budget.seeds}", file=sys.stderr)

    @property
    def live(self) -> Live:
        """The stage's dvclive logger, opened on first use: opening it clears the stage's earlier
        metrics and plots, so a stage that fails before logging anything (bad input, missing
        data) leaves the results already written untouched."""
        if self._live is None:
            self._live = AtomicLive(str(self.out_dir), report=None, save_dvc_exp=False, dvcyaml=None)
            self._live.summary.update({"profile": self.params.profile, "stage": self.name,
                                       "package_version": __version__,
                                       "budget": _comparable_budget(self.budget)})
        return self._live

    # ------------------------------------------------------------------ data
    @property
    def splits(self) -> Splits:
        """The profile's train/validation/test tensors (loaded once, on the training device)."""
        return self.splits_for()

    def splits_for(self, train_fraction: float = 1.0, img_size: int | None = None, view: str = "image") -> Splits:
        """The profile's splits with a class-stratified ``train_fraction`` of the training images
        (nested in the full set: the same draw, cut shorter), another input size and/or another
        view of each image (:data:`~resnet_review.data.VIEWS`, e.g. its two halves as two inputs)."""
        b = self.budget
        key = (train_fraction, img_size or b.img_size, view)
        if key not in self._splits:
            splits = load_splits(self.paths.prepared, train_size=b.train_images(train_fraction), val_size=b.val_size,
                                 test_size=b.test_size, img_size=key[1], in_chans=b.in_chans,
                                 data_seed=b.data_seed, device=self.accel.device)
            self._splits[key] = Splits(*(apply_view(d, view) for d in splits))
        return self._splits[key]

    def corrupted_test(self, splits: Splits) -> dict[str, TensorData]:
        """The profile's corrupted test sets for ``splits`` (``{}`` when ``corruption_size`` is 0)."""
        b = self.budget
        if not b.corruption_size:
            return {}
        key = next((k for k, v in self._splits.items() if v is splits), id(splits))
        if key not in self._corrupted:
            self._corrupted[key] = corrupted_sets(splits.test, b.corruption_size, b.corruption_severities,
                                                  seed=b.data_seed)
        return self._corrupted[key]

    def input_shapes(self, splits: Splits | None = None) -> list[tuple[int, ...]]:
        return [tuple(x.shape[1:]) for x in (splits or self.splits).train.inputs]

    def model_factory(self, model: str | None = None, *, splits: Splits | None = None,
                      **kwargs) -> Callable[[], nn.Module]:
        """A zero-argument builder of the stage's model (``model``/``kwargs`` override params)."""
        name = model or self.config.model
        merged = {**self.config.model_kwargs, **kwargs}
        splits = splits or self.splits
        classes = splits.train.num_classes
        in_chans = splits.train.inputs[0].shape[1]
        return lambda: build_model(name, num_classes=classes, in_chans=in_chans, **merged)

    # ------------------------------------------------------------------ training
    def run(self, variant: str, build: Builder | None = None, *, splits: Splits | None = None,
            recipe: Recipe | None = None, epochs: int | None = None, batch_size: int | None = None,
            profile: bool = True, save_weights: bool = True, info: dict[str, Any] | None = None,
            finalize: Callable[[nn.Module], nn.Module] | None = None,
            seed_hooks: Callable[[int], dict[str, Any]] | None = None, **hooks) -> VariantResult:
        """Train ``variant`` once per seed, evaluate each on the test set, profile it once.

        ``build`` defaults to the stage's model from params; a builder that takes an argument gets
        the seed (e.g. to start from that seed's trained baseline, see :meth:`checkpoint`).
        ``epochs=0`` trains nothing (e.g. post-training quantisation). ``batch_size`` overrides the
        profile's for training and the training-memory measurement (e.g. a tuned recipe's); the
        comparison with other stages then differs in it on purpose. ``finalize`` turns the
        trained model into the one that is evaluated, saved and profiled (e.g. folding pruning
        masks, converting to int8); a CPU-only result is evaluated on the CPU. ``hooks`` go to
        :func:`~resnet_review.engine.fit` (``loss_fn``, ``batch_transform``, ``on_epoch_end``);
        ``seed_hooks(seed)`` returns more of them for one seed (e.g. the distillation loss of that
        seed's teacher).
        """
        if "/" in variant or not variant:
            raise ValueError(f"variant name must be non-empty and contain no '/', got {variant!r}")
        build = build or self.model_factory()
        splits = splits or self.splits
        recipe = recipe or self.recipe
        b = self.budget
        epochs = b.epochs if epochs is None else epochs
        info = dict(info or {})
        if batch_size is None:  # the profile's batch: the lr scaled for it; a given batch keeps its recipe's lr
            batch_size, scaled = b.batch_size, b.scaled_recipe(recipe, b.batch_size)
            if scaled is not recipe:
                info["lr_scaled"], recipe = scaled.lr, scaled
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        # the training images the train-validation gap is measured on: as many as validation has
        probe_size = min(len(splits.train), len(splits.val))
        train_probe = splits.train.take(torch.arange(probe_size, device=splits.train.device))
        corrupted = self.corrupted_test(splits)
        runs, first = [], None
        group = b.concurrent_seeds if epochs else 1
        finalized, keep = finalize is not None, bool(epochs) and save_weights  # keep: a re-run can load it
        for chunk in [b.seeds[i:i + group] for i in range(0, len(b.seeds), group)]:
            models, fit_runs, keys, done = [], [], {}, {}
            for seed in chunk:
                seed_everything(seed)
                models.append(_call_builder(build, seed))
                extra = seed_hooks(seed) if seed_hooks else {}  # e.g. loading this seed's teacher
                # the random state each run trains from is the one it would start alone with
                run = Run(models[-1], splits.train, splits.val, seed=seed,
                          checkpoint_path=self.resume_dir / variant / f"seed{seed}.pt",
                          log_epoch=self._epoch_logger(variant, seed), desc=f"{self.name}/{variant}/seed{seed}",
                          rng=RngState(self.accel.device) if len(chunk) > 1 else None, **hooks, **extra)
                if keep:
                    keys[seed] = self.trained.key(run, recipe, epochs, batch_size)
                    loaded = self.trained.load(variant, seed, models[-1], keys[seed], finalized=finalized)
                    if loaded is not None:  # on the device training would have left it on
                        models[-1].to(self.accel.device)
                        if self.accel.channels_last:
                            models[-1].to(memory_format=torch.channels_last)
                        for past in loaded.history:  # the plots show the run as it trained
                            run.log_epoch(int(past["epoch"]), past)
                        done[seed] = loaded
                        continue
                fit_runs.append(run)
            fits = iter(fit_group(fit_runs, recipe=recipe, epochs=epochs, batch_size=batch_size, accel=self.accel,
                                  eval_batch_size=b.eval_batch_size, val_every_images=b.val_every_images,
                                  checkpoint_every_s=b.checkpoint_every_s, checkpoint_last=self.resumable,
                                  nan_check_every=0 if self.accel.device.type == "cuda" else 20,
                                  deadline=self.deadline) if fit_runs and epochs else ())
            for seed, model in zip(chunk, models):
                trained_now = seed not in done
                result = done[seed] if not trained_now else next(fits) if epochs else FitResult([], 0.0, math.nan, 0)
                trainable = model
                if keep and trained_now and finalized:
                    self.trained.keep_trainable(variant, seed, trainable)
                model = finalize(model) if finalize else model
                if first is None:
                    first = (trainable, model)
                test, train_eval, robustness = self._evaluate(model, splits.test, train_probe, corrupted)
                weights = None
                if save_weights:
                    weights = atomic_save(model.state_dict(), self.models_dir / variant / f"seed{seed}.pt")
                if keep and trained_now:
                    self.trained.record(variant, seed, keys[seed], result, finalized=finalized)
                runs.append(SeedRun(seed, result, test, weights, train_eval, robustness))
                print(f"[{self.name}/{variant}/seed{seed}] test acc {test.accuracy:.4f} "
                      f"(bootstrap 95% CI {test.accuracy_ci[0]:.4f}-{test.accuracy_ci[1]:.4f})", file=sys.stderr)
        # cost of the first seed's model as evaluated; parameters, MACs and training memory of its
        # trainable form (an int8 model's packed weights are invisible to both counters)
        prof = self._profile(variant, *first, splits, info, batch_size) if profile else None
        variant_result = VariantResult(variant, runs, prof, info, model=copy.deepcopy(first[1]).cpu().eval())
        self.results[variant] = variant_result
        # replaces the last-epoch values log_metric left there with the aggregates over seeds
        self.live.summary[variant] = variant_result.summary()
        self.live.make_summary()
        return variant_result

    def _profile(self, variant: str, trainable: nn.Module, deployed: nn.Module, splits: Splits,
                 info: dict[str, Any], batch_size: int) -> ModelProfile:
        """The cost profile of ``deployed`` (parameters, MACs and training memory of ``trainable``),
        measured once per architecture in a stage: a variant that differs from an earlier one only
        in data, recipe or weights (e.g. another dropout rate or augmentation) shares its profile,
        noted as ``profiled_as`` in its metrics. The memory probe alone takes seconds per model."""
        key = (architecture_key(deployed), architecture_key(trainable), tuple(self.input_shapes(splits)), batch_size)
        # the same id in every stage for the same deployed model and input: the report pools the
        # latencies that different stages measured of one architecture
        info["architecture"] = hashlib.sha256(repr(key[0::2]).encode()).hexdigest()[:12]
        if key in self._profiles:
            info["profiled_as"], prof = self._profiles[key]
            return prof
        b = self.budget
        prof = profile_model(deployed, self.input_shapes(splits), repeats=b.latency_repeats,
                             memory_batch_size=batch_size, memory=b.measure_memory, count_model=trainable)
        self._profiles[key] = (variant, prof)
        return prof

    def _evaluate(self, model: nn.Module, test: TensorData, train_probe: TensorData,
                  corrupted: dict[str, TensorData]) -> tuple[EvalResult, EvalResult, dict[str, float]]:
        """Test, train-probe and corruption accuracy of one model, on the device it runs on."""
        b, device = self.budget, model_device(model)
        same = device == self.accel.device
        kw = {"amp_dtype": self.accel.amp_dtype if same else None, "channels_last": self.accel.channels_last and same}
        if not same:  # e.g. an int8 CPU model of a GPU run
            test, train_probe = test.to(device), train_probe.to(device)
            corrupted = {k: v.to(device) for k, v in corrupted.items()}
        test_result = evaluate(model, test, b.eval_batch_size, bootstrap_resamples=b.bootstrap_resamples, **kw)
        train_eval = evaluate(model, train_probe, b.eval_batch_size, bootstrap_resamples=0, **kw)
        return test_result, train_eval, corruption_accuracy(model, corrupted, b.eval_batch_size, **kw)

    def checkpoint(self, stage: str = "baseline", variant: str = "resnet50", seed: int = 0) -> Path:
        """Path of another stage's trained weights of ``variant`` for ``seed`` (e.g. the baseline
        a compression stage starts from), after checking that stage ran under this budget."""
        self.reference(stage, variant)  # same profile and budget, or a clear error
        return self._weights_file(stage, variant, seed)

    def require_checkpoints(self, stage: str, variant: str) -> list[Path]:
        """:meth:`checkpoint` of every seed of the budget (the budget checked once): a stage that
        builds on another stage's weights calls it before it trains anything, so a missing or
        mismatched source fails at once."""
        self.reference(stage, variant)
        return [self._weights_file(stage, variant, seed) for seed in self.budget.seeds]

    def _weights_file(self, stage: str, variant: str, seed: int) -> Path:
        path = self.models_dir.parent / stage / variant / f"seed{seed}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: stage '{stage}' has no weights of '{variant}' for seed {seed}; "
                                    f"run `dvc repro {stage}` first")
        return path

    def load_trained(self, stage: str = "baseline", variant: str = "resnet50", seed: int = 0, *,
                     model: str | None = None, **kwargs) -> nn.Module:
        """A fresh model (``model``/``kwargs`` as in :meth:`model_factory`) holding another stage's
        trained weights for ``seed``, loaded with ``weights_only=True``, on the training device."""
        path = self.checkpoint(stage, variant, seed)
        net = self.model_factory(model, **kwargs)()
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except RuntimeError as err:
            raise CheckpointError(f"{path} does not fit model '{model or self.config.model}': "
                                  f"{str(err).splitlines()[0]}") from err
        return net.to(self.accel.device)

    def compare_latency(self, reference: str, variants: list[str] | None = None, *, rounds: int = 5):
        """CPU latency of every variant's first-seed model (``variants``, default all run), measured
        interleaved in ``rounds`` rounds in this one process, and each one's speed-up over
        ``reference`` (median over rounds, and a 95% CI over rounds), added to metrics.json as
        ``speedup_cpu_b<batch>``: ratios measured side by side, which a noisy machine does not
        skew the way separate runs can. Returns the table and ``{variant: {key: Estimate}}``."""
        import pandas as pd

        names = variants or list(self.results)
        if reference not in names:
            names = [reference, *names]
        missing = [n for n in names if n not in self.results or self.results[n].model is None]
        if missing:
            raise KeyError(f"variants {missing} have not been run in stage '{self.name}'")
        profile = self.results[reference].profile
        shapes = [tuple(s) for s in profile.input_shapes] if profile else self.input_shapes()
        times = compare_latency({n: self.results[n].model for n in names}, shapes,
                                repeats=self.budget.latency_repeats, rounds=rounds)
        rows, speedups = [], {}
        for name in names:
            ratios = {k: [r / t for r, t in zip(times[reference][k], v)] for k, v in times[name].items()}
            speedups[name] = {k: mean_ci(v) for k, v in ratios.items()}
            values = {f"latency_same_run_{k}_ms": statistics.median(v) for k, v in times[name].items()}
            values |= {f"speedup_{k}": statistics.median(v) for k, v in ratios.items()}
            self.annotate(name, **values, speedup_reference=reference)
            rows.append({"variant": name, **values})
        return pd.DataFrame(rows).set_index("variant"), speedups

    def annotate(self, variant: str, **values: Any) -> None:
        """Add numbers measured after :meth:`run` (e.g. a speed-up against a reference measured in
        the same process) to ``variant``'s block of metrics.json."""
        if variant not in self.results:
            raise KeyError(f"variant '{variant}' has not been run in stage '{self.name}'")
        self.results[variant].info.update(_finite(values))
        self.live.summary[variant] = self.results[variant].summary()
        self.live.make_summary()

    def run_variant(self, name: str, **hooks) -> VariantResult:
        """Train the variant ``name`` of this stage's ``variants:`` section (see
        :class:`~resnet_review.config.Variant`): its model, data, epochs and recipe overrides."""
        if name not in self.config.variants:
            raise KeyError(f"params.yaml section '{self.name}' has no variant '{name}' "
                           f"(variants: {', '.join(self.config.variants) or 'none'})")
        v = self.config.variants[name]
        splits = self.splits_for(v.train_fraction, v.img_size, v.view)
        epochs = self.variant_epochs(name)
        info = {"model": v.model or self.config.model, "train_fraction": v.train_fraction,
                "train_images": len(splits.train), "img_size": v.img_size or self.budget.img_size, "epochs": epochs,
                "view": v.view}
        return self.run(name, self.model_factory(v.model, splits=splits, **v.model_kwargs), splits=splits,
                        recipe=v.recipe(self.recipe), epochs=epochs, info=info, **hooks)

    def run_variants(self, names: list[str] | None = None, **hooks) -> dict[str, VariantResult]:
        """:meth:`run_variant` for each name (default: every variant, in params order); a stage
        with no ``variants:`` trains its ``model`` as the one variant, named after it."""
        if not names and not self.config.variants:
            return {self.config.model: self.run(self.config.model, **hooks)}
        return {name: self.run_variant(name, **hooks) for name in (names or self.variant_names())}

    def variant_names(self) -> list[str]:
        """The ``variants:`` of this stage that run under the current profile, in params order
        (a variant with ``profiles: [gpu]`` is a costly extra left to the gpu profile)."""
        profile = self.params.profile
        names = list(self.config.planned_variants(profile))
        skipped = sorted(set(self.config.variants) - set(names))
        if skipped:
            print(f"stage '{self.name}': variants {skipped} do not run under profile '{profile}'", file=sys.stderr)
        return names

    def _epoch_logger(self, variant: str, seed: int):
        def log(epoch: int, metrics: dict[str, float]) -> None:
            self.live.step = epoch
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s"):
                if key in metrics:
                    self.live.log_metric(f"{variant}/seed{seed}/{key}", metrics[key], plot=True)
        return log

    # ------------------------------------------------------------------ comparisons
    def variant_epochs(self, name: str) -> int:
        """The epochs variant ``name`` trains for: the profile's, times its ``epochs_scale``."""
        return scaled_epochs(self.budget.epochs, self.config.variants[name].epochs_scale)

    def reference(self, stage: str = "baseline", variant: str = "resnet50") -> dict[str, list[float]]:
        """Per-seed results of another stage's variant (by default the baseline), read from its
        metrics.json beside this stage's: the control a technique is compared with, without
        retraining it."""
        return self.reference_block(stage, variant)["per_seed"]

    def stage_metrics(self, stage: str) -> tuple[Path, dict[str, Any]]:
        """Path and content of another stage's metrics.json beside this stage's, or a clear error."""
        path = self.out_dir.parent / stage / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `dvc repro {stage}` first")
        return path, json.loads(path.read_text())

    def trained_variants(self, stage: str) -> list[str]:
        """The variants another stage holds per-seed results of, in its metrics.json's order."""
        return _per_seed_variants(self.stage_metrics(stage)[1])

    def reference_block(self, stage: str = "baseline", variant: str = "resnet50") -> dict[str, Any]:
        """Everything another stage's metrics.json holds for ``variant`` (per-seed results, its
        data and epochs, its profile), after checking it ran under this profile and budget."""
        path, data = self.stage_metrics(stage)
        if variant not in data or "per_seed" not in data[variant]:
            raise KeyError(f"{path} has no per-seed results for variant '{variant}' (it has "
                           f"{_per_seed_variants(data)}); under profile '{self.params.profile}' "
                           f"stage '{stage}' may not run it")
        if data.get("profile") != self.params.profile:
            raise ValueError(f"{path} was produced under profile '{data.get('profile')}', this stage runs "
                             f"'{self.params.profile}'; results of different budgets are not comparable")
        theirs, mine = data.get("budget"), _comparable_budget(self.budget)
        if theirs is not None and theirs != mine:
            changed = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
            raise ValueError(f"{path} was produced with another '{self.params.profile}' budget (differs in "
                             f"{', '.join(changed)}); re-run `dvc repro {stage}` so both use the same one")
        return data[variant]

    def effect(self, result: Comparable, control: Comparable | None, metric: str = "test_acc",
               expected_sign: int = +1, margin: float = 0.0) -> tuple[Estimate, str]:
        """Paired (same seeds) difference ``result - control`` with its 95% CI and the verdict on
        a claim that expects the difference to have ``expected_sign`` (``control=None``: the
        result itself against zero; ``margin``: a claim of no loss beyond it, see
        :func:`~resnet_review.stats.verdict`)."""
        mine = per_seed(result, metric)
        theirs = per_seed(control, metric, like=mine)
        if set(mine) != set(theirs):
            raise ValueError(f"seeds differ ({sorted(mine)} vs {sorted(theirs)}); "
                             "a paired comparison needs the same seeds")
        effect = paired_difference([mine[s] for s in sorted(mine)], [theirs[s] for s in sorted(mine)])
        return effect, verdict(effect, expected_sign, margin)

    def interaction(self, a: VariantResult, b: VariantResult, c: VariantResult, d: VariantResult,
                    metric: str = "test_acc", name: str = "interaction") -> SeedSeries:
        """Per seed, ``(a - b) - (c - d)``: whether the effect of a change is larger in one
        setting (a vs b) than in another (c vs d), e.g. fusion at low vs full resolution."""
        values = [per_seed(x, metric) for x in (a, b, c, d)]
        seeds = set(values[0])
        if any(set(v) != seeds for v in values):
            raise ValueError("an interaction needs the same seeds in all four variants")
        a_, b_, c_, d_ = values
        return SeedSeries(name, {s: (a_[s] - b_[s]) - (c_[s] - d_[s]) for s in sorted(seeds)})

    # ------------------------------------------------------------------ claims
    @property
    def catalogue(self) -> list[ClaimSpec]:
        """claims.yaml (or the ``claims_file`` given), read and validated once per file."""
        if self._catalogue is None or self._catalogue[0] != self.claims_file:
            self._catalogue = (self.claims_file, load_catalogue(self.claims_file))
        return self._catalogue[1]

    def estimate(self, key: str, effect: Estimate, *, metric: str, unit: str = "timing rounds") -> Estimate:
        """Record an effect this stage estimated itself — a speed-up over timing rounds, an
        interaction of two effects — under ``key``, for the claim of claims.yaml whose
        ``stage_claim`` is ``<stage>/<key>``; :meth:`claims_markdown` gives its verdict. ``metric``
        and ``unit`` say what the number is and what its interval is over."""
        ref = f"{self.name}/{key}"
        if not any(spec.stage_claim == ref for spec in self.catalogue):
            raise KeyError(f"no claim in {self.claims_file.name} has 'stage_claim: {ref}': add the claim it tests "
                           "(id, section, claim, expect) before recording its estimate")
        self.claims[key] = _finite({"effect": effect.as_dict(), "metric": metric, "unit": unit,
                                    "profile": self.params.profile})
        self.log_metrics(claims=self.claims)
        return effect

    def claims_markdown(self) -> str:
        """Every claim of claims.yaml this stage tests (its treatment, or its estimate, is this
        stage's), measured now by :func:`resnet_review.claims.evaluate` — the function the report
        uses — on the results written so far, as a Markdown list ending with the budget note. Each
        paired claim's outcome is also logged under ``claims`` in metrics.json."""
        specs = for_stage(self.catalogue, self.name)
        self._write_results()  # the results so far, where evaluate reads them
        results = ClaimResults(self.out_dir.parent)
        written = {name: budget.model_dump() for name, budget in self.params.profiles.items()}
        lines = []
        for spec in specs:
            row = evaluate_claim(spec, results, written)
            if not spec.stage_claim:
                self.claims[spec.id] = _finite({
                    "verdict": row["verdict"], "comparison": row["comparison"], "metric": row["metric"],
                    "effect": {"mean": row["effect"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                               "n": row["seeds"]},
                    "interval": row["interval"], "note": row["note"], "profile": row["profile"]})
            lines.append("* " + sentence(row))
        if not specs:
            lines.append(f"* No claim in {self.claims_file.name} has its treatment in stage `{self.name}`.")
        self.log_metrics(claims=self.claims)
        return "\n".join([*lines, "", self.budget_note()])

    def frame(self, *references: tuple[str, str]):
        """This stage's variants (as far as run) plus ``(stage, variant)`` references from sibling
        stages, in the report's flattened form: what :mod:`resnet_review.plots` draws."""
        self.live.make_summary()
        table = collect(self.out_dir.parent, stages=[self.name, *{s for s, _ in references}])
        if table.empty:
            return table
        keep = (table["stage"] == self.name) | table[["stage", "variant"]].apply(tuple, axis=1).isin(references)
        table = table[keep].copy()
        table["label"] = [v if s == self.name else f"{s}/{v}" for s, v in zip(table["stage"], table["variant"])]
        return table.reset_index(drop=True)

    # ------------------------------------------------------------------ text
    def describe(self) -> str:
        """The budget, device and recipe this stage runs under, and its variants, as Markdown."""
        b = self.budget
        lines = [f"Profile **{self.params.profile}**: {b.train_size} training images, {b.val_size} validation, "
                 f"{b.test_size} test, {b.epochs} epochs, batch {b.batch_size}, seeds {b.seeds}, {b.img_size} px, "
                 f"device `{self.accel.device}`. Recipe: `{self.recipe.model_dump(exclude_defaults=True)}`."]
        for name, v in self.config.variants.items():
            diff = v.model_dump(exclude_defaults=True)
            lines.append(f"* `{name}`: model `{v.model or self.config.model}`"
                         + (f", {', '.join(f'{k}={val}' for k, val in diff.items() if k != 'model')}" if diff else ""))
        return "\n".join(lines)

    def budget_note(self) -> str:
        """How far the numbers of this profile can be trusted, for a notebook's conclusion."""
        if self.params.profile == "gpu":
            return (f"*Full-data result of the `gpu` profile ({len(self.budget.seeds)} seeds); an effect is called "
                    "supported or not only where its 95% CI excludes zero.*")
        return (f"*Small-budget result (profile `{self.params.profile}`: {self.budget.train_size} images x "
                f"{self.budget.epochs} epochs, {len(self.budget.seeds)} seeds). It tests the claim at this budget "
                "only; 'inconclusive' means the 95% CI over seeds holds zero, not that the effect is absent. The "
                "`gpu` profile gives the full-data answer.*")

    # ------------------------------------------------------------------ outputs
    def save_figure(self, fig, name: str) -> None:
        """Write ``figures/<name>.png`` (the notebook still shows the figure inline)."""
        fig.savefig(self.figures_dir / f"{name}.png", dpi=120, bbox_inches="tight")

    def log_metrics(self, **values: Any) -> None:
        """Stage-level numbers that are not per variant (e.g. split sizes)."""
        self.live.summary.update(_finite(values))
        self.live.make_summary()

    def finish(self) -> dict[str, Any]:
        """Write metrics.json, its headline numbers (``headline/<variant>.json``, what ``dvc metrics
        show`` prints) and ``predictions.json`` for good and drop the resume checkpoints of this
        stage."""
        self._write_results()
        self.live.end()
        shutil.rmtree(self.resume_dir, ignore_errors=True)
        metrics = json.loads((self.out_dir / "metrics.json").read_text())
        if headline(metrics):  # a stage of models (data_overview has none)
            write_headline(self.out_dir, metrics)
        return metrics

    def _write_results(self) -> None:
        """metrics.json and predictions.json as the results stand now."""
        if self.results:
            atomic_write_text(self.out_dir / PREDICTIONS_FILE, json.dumps(self.predictions(), sort_keys=True))
        self.live.make_summary()

    def predictions(self) -> dict[str, Any]:
        """Every seed's predicted class per test image, per variant, with the images' classes (one
        character per image, base 36): what a paired bootstrap over seeds and test images needs
        (:func:`resnet_review.stats.paired_bootstrap`)."""
        def chars(labels) -> str:
            return "".join(BASE36[int(i)] for i in labels)

        variants = {}
        for name, result in self.results.items():
            runs = [r for r in result.runs if r.test.predicted is not None]
            if runs:
                variants[name] = {"targets": chars(runs[0].test.targets),
                                  "seeds": {str(r.seed): chars(r.test.predicted) for r in runs}}
        return {"format": "per variant: the test images' classes and each seed's predicted classes, one base-36 "
                          "character per image, in the order of the test set", "variants": variants}

    def table(self):
        """Mean ± 95% CI of the headline metrics of every variant run so far, as a DataFrame."""
        import pandas as pd

        rows = []
        for name, result in self.results.items():
            row = {"variant": name}
            for metric in ("test_acc", "test_macro_f1", "train_val_gap"):
                est = result.estimate(metric)
                row[metric] = str(est)
            if result.profile:
                row |= {k: round(v, 3) for k, v in result.profile.scalars().items() if k != "threads"}
            rows.append(row)
        return pd.DataFrame(rows).set_index("variant")
