"""A technique stage in a few calls: params, data, training over seeds, profile, dvclive.

A notebook opens a :class:`Stage`, calls :meth:`Stage.run` once per variant it compares, and
:meth:`Stage.finish`.  :meth:`Stage.run` trains a fresh model per seed of the profile through
:func:`~resnet_review.engine.fit`, evaluates it on the test set with the one evaluator, profiles
the architecture once, and logs everything to one dvclive ``Live`` per stage::

    reports/stages/<stage>/metrics.json            # {variant: {test_acc: {mean, ci_low, ...}, ...}}
    reports/stages/<stage>/plots/metrics/<variant>/seed<k>/*.tsv   # per-epoch curves
    reports/stages/<stage>/figures/*.png
    models/<stage>/<variant>/seed<k>.pt            # trained weights (a DVC output)

A stage is made of parts with one job each, and :class:`Stage` is the runner that holds them:
this module trains and evaluates (data, the seeds of each variant, profiling, other stages'
weights); :class:`~resnet_review.results.StageStore` writes the stage's files and reads the
stages before it; :mod:`resnet_review.runs` holds what was measured and the paired comparisons;
:mod:`resnet_review.presentation` the Markdown and tables a notebook shows. The notebook API is
this class's; its methods for the other jobs hand over to those parts.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import math
import os
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import presentation
from ._version import __version__
from .claims import ClaimSpec, for_stage, load_catalogue
from .config import Budget, Params, ParamsError, Paths, Recipe, StageParams, load_params, scaled_epochs
from .data import Splits, TensorData, apply_view, load_splits
from .engine import Accel, FitResult, RngState, Run, fit_group, seed_everything
from .evaluate import EvalResult, evaluate
from .models import CheckpointError, build_model
from .profiling import TRACED_DIR, ModelProfile, architecture_key, compare_latency, profile_model, save_traced
from .results import StageStore, on_own_budget, per_seed_variants
from .robustness import corrupted_sets, corruption_accuracy
from .runs import Comparable, SeedRun, SeedSeries, VariantResult, finite, interaction, paired_effect
from .stats import Estimate, mean_ci
from .storage import atomic_save
from .trained import TrainedRuns

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


class Stage:
    """Everything one technique notebook needs, resolved from params.yaml and the profile: the
    runner of its variants over seeds, with the stage's :class:`~resnet_review.results.StageStore`
    (``store``), and the claims of claims.yaml it tests."""

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
        self.store = StageStore(self.out_dir, stage=name, profile=self.params.profile, budget=self.budget,
                                version=__version__, dvc_stage=self.paths.dvc_stage)
        self.results: dict[str, VariantResult] = self.store.results  # every variant run so far
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
    def live(self):
        """The stage's dvclive logger (:attr:`StageStore.live`), opened on first use."""
        return self.store.live

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
        return self.store.record(VariantResult(variant, runs, prof, info, model=copy.deepcopy(first[1]).cpu().eval()))

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
        b = self.budget
        traced = self.models_dir / TRACED_DIR / f"{info['architecture']}.pt"
        if not traced.is_file() and on_own_budget(info, b.train_size, b.img_size, b.epochs):
            # for the report, which times the models of every stage side by side in one process
            save_traced(deployed, self.input_shapes(splits), traced)
        if key in self._profiles:
            info["profiled_as"], prof = self._profiles[key]
            return prof
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
                                    f"run `dvc repro {self.paths.dvc_stage(stage)}` first")
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
        self.store.annotate(variant, **values)

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
        return lambda epoch, metrics: self.store.log_epoch(variant, seed, epoch, metrics)

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
        return self.store.metrics_of(stage)

    def trained_variants(self, stage: str) -> list[str]:
        """The variants another stage holds per-seed results of, in its metrics.json's order."""
        return per_seed_variants(self.store.metrics_of(stage)[1])

    def reference_block(self, stage: str = "baseline", variant: str = "resnet50") -> dict[str, Any]:
        """Everything another stage's metrics.json holds for ``variant`` (per-seed results, its
        data and epochs, its profile), after checking it ran under this profile and budget."""
        return self.store.block(stage, variant)

    def effect(self, result: Comparable, control: Comparable | None, metric: str = "test_acc",
               expected_sign: int = +1, margin: float = 0.0) -> tuple[Estimate, str]:
        """:func:`resnet_review.runs.paired_effect`: ``result - control`` seed by seed, its 95% CI
        and the verdict on a claim that expects ``expected_sign``."""
        return paired_effect(result, control, metric, expected_sign, margin)

    def interaction(self, a: Comparable, b: Comparable, c: Comparable, d: Comparable,
                    metric: str = "test_acc", name: str = "interaction") -> SeedSeries:
        """:func:`resnet_review.runs.interaction`: per seed, ``(a - b) - (c - d)``."""
        return interaction(a, b, c, d, metric, name)

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
        self.claims[key] = finite({"effect": effect.as_dict(), "metric": metric, "unit": unit,
                                    "profile": self.params.profile})
        self.log_metrics(claims=self.claims)
        return effect

    def claims_markdown(self) -> str:
        """Every claim of claims.yaml this stage tests (its treatment, or its estimate, is this
        stage's), measured now by :func:`resnet_review.claims.evaluate` — the function the report
        uses — on the results written so far, as a Markdown list ending with the budget note. Each
        paired claim's outcome is also logged under ``claims`` in metrics.json."""
        self.store.write()  # the results so far, where evaluate reads them
        lines, outcomes = presentation.claims_list(for_stage(self.catalogue, self.name), self.out_dir.parent,
                                                   self.params.budgets_written(), stage=self.name,
                                                   claims_file=self.claims_file.name)
        self.claims.update(outcomes)
        self.log_metrics(claims=self.claims)
        return "\n".join([*lines, "", self.budget_note()])

    def frame(self, *references: tuple[str, str]):
        """This stage's variants (as far as run) plus ``(stage, variant)`` references from sibling
        stages, in the report's flattened form: what :mod:`resnet_review.plots` draws."""
        self.live.make_summary()
        return presentation.stage_frame(self.out_dir.parent, self.name, references)

    # ------------------------------------------------------------------ text
    def describe(self) -> str:
        """The budget, device and recipe this stage runs under, and its variants, as Markdown."""
        return presentation.describe(self.params.profile, self.budget, self.recipe, self.config, self.accel.device)

    def budget_note(self) -> str:
        """How far the numbers of this profile can be trusted, for a notebook's conclusion."""
        return presentation.budget_note(self.params.profile, self.budget)

    # ------------------------------------------------------------------ outputs
    def save_figure(self, fig, name: str) -> None:
        """Write ``figures/<name>.png`` (the notebook still shows the figure inline)."""
        fig.savefig(self.figures_dir / f"{name}.png", dpi=120, bbox_inches="tight")

    def log_metrics(self, **values: Any) -> None:
        """Stage-level numbers that are not per variant (e.g. split sizes)."""
        self.store.log(**values)

    def finish(self) -> dict[str, Any]:
        """Write metrics.json, its headline numbers (``headline/<variant>.json``, what ``dvc metrics
        show`` prints) and ``predictions.json`` for good and drop the resume checkpoints of this
        stage."""
        metrics = self.store.finish()
        shutil.rmtree(self.resume_dir, ignore_errors=True)
        return metrics

    def table(self):
        """Mean ± 95% CI of the headline metrics of every variant run so far, as a DataFrame."""
        return presentation.results_table(self.results)
