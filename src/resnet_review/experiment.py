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

import json
import math
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvclive import Live
from torch import nn

from . import __version__
from .config import Budget, Params, Paths, Recipe, StageParams, load_params
from .data import Splits, load_splits
from .engine import Accel, FitResult, fit, seed_everything
from .evaluate import EvalResult, evaluate
from .models import build_model
from .profiling import ModelProfile, profile_model
from .stats import Estimate, mean_ci, paired_difference, verdict
from .storage import atomic_save

# Metrics aggregated over seeds, as (name in metrics.json, how to read it from one seed's run).
SEED_METRICS: dict[str, Callable[["SeedRun"], float]] = {
    "test_acc": lambda r: r.test.accuracy,
    "test_macro_f1": lambda r: r.test.macro_f1,
    "test_ece": lambda r: r.test.ece,
    "test_loss": lambda r: r.test.loss,
    "val_acc": lambda r: r.fit.final.get("val_acc", math.nan),
    "train_acc": lambda r: r.fit.final.get("train_acc", math.nan),
    "train_val_gap": lambda r: r.fit.final.get("train_acc", math.nan) - r.fit.final.get("val_acc", math.nan),
    "train_time_s": lambda r: r.fit.train_time_s,
    "train_images_per_s": lambda r: r.fit.images_per_s,
}


@dataclass
class SeedRun:
    seed: int
    fit: FitResult
    test: EvalResult
    weights_path: Path | None


@dataclass
class VariantResult:
    """One configuration trained over every seed of the profile."""

    name: str
    runs: list[SeedRun]
    profile: ModelProfile | None
    info: dict[str, Any] = field(default_factory=dict)

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
        # per-seed values, so a later stage can pair its seeds with these (see Stage.reference)
        out["per_seed"] = self.seed_values("test_acc", "test_macro_f1")
        return out | self.info

    def seed_values(self, *metrics: str) -> dict[str, list]:
        """``{"seed": [...], metric: [...], ...}`` in run order, the shape Stage.reference returns."""
        return {"seed": [r.seed for r in self.runs], **{m: [SEED_METRICS[m](r) for r in self.runs] for m in metrics}}


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
                 root: str | os.PathLike | None = None):
        self.paths = Paths(root)
        self.params = params or load_params(self.paths.params, profile=profile)
        self.name = name
        self.config: StageParams = self.params.stage(name)
        self.budget: Budget = self.params.budget
        self.recipe: Recipe = self.config.recipe(self.params.train)
        self.accel = Accel.for_device(self.budget.device, compile=self.budget.compile)
        self.out_dir = self.paths.stage_reports(name, reports_dir)
        self.models_dir = self.paths.stage_models(name, models_dir)
        self.resume_dir = self.paths.resume_dir(name, models_dir)
        self.figures_dir = self.out_dir / "figures"
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        self._live: Live | None = None
        self.results: dict[str, VariantResult] = {}
        self._splits: Splits | None = None
        print(f"stage '{name}': profile={self.params.profile} device={self.accel.device} "
              f"train={self.budget.train_size} epochs={self.budget.epochs} seeds={self.budget.seeds}", file=sys.stderr)

    @property
    def live(self) -> Live:
        """The stage's dvclive logger, opened on first use: opening it clears the stage's earlier
        metrics and plots, so a stage that fails before logging anything (bad input, missing
        data) leaves the results already written untouched."""
        if self._live is None:
            self._live = Live(str(self.out_dir), report=None, save_dvc_exp=False, dvcyaml=None)
            self._live.summary.update({"profile": self.params.profile, "stage": self.name,
                                       "package_version": __version__})
        return self._live

    # ------------------------------------------------------------------ data
    @property
    def splits(self) -> Splits:
        """The profile's train/validation/test tensors (loaded once, on the training device)."""
        if self._splits is None:
            b = self.budget
            self._splits = load_splits(self.paths.prepared, train_size=b.train_size, val_size=b.val_size,
                                       test_size=b.test_size, img_size=b.img_size, in_chans=b.in_chans,
                                       data_seed=b.data_seed, device=self.accel.device)
        return self._splits

    def input_shapes(self, splits: Splits | None = None) -> list[tuple[int, ...]]:
        return [tuple(x.shape[1:]) for x in (splits or self.splits).train.inputs]

    def model_factory(self, model: str | None = None, **kwargs) -> Callable[[], nn.Module]:
        """A zero-argument builder of the stage's model (``model``/``kwargs`` override params)."""
        name = model or self.config.model
        merged = {**self.config.model_kwargs, **kwargs}
        classes = self.splits.train.num_classes
        in_chans = self.splits.train.inputs[0].shape[1]
        return lambda: build_model(name, num_classes=classes, in_chans=in_chans, **merged)

    # ------------------------------------------------------------------ training
    def run(self, variant: str, build: Callable[[], nn.Module] | None = None, *, splits: Splits | None = None,
            recipe: Recipe | None = None, profile: bool = True, save_weights: bool = True,
            info: dict[str, Any] | None = None, **hooks) -> VariantResult:
        """Train ``variant`` once per seed, evaluate each on the test set, profile it once.

        ``build`` defaults to the stage's model from params; ``hooks`` go to
        :func:`~resnet_review.engine.fit` (``loss_fn``, ``batch_transform``, ``on_epoch_end``).
        """
        if "/" in variant or not variant:
            raise ValueError(f"variant name must be non-empty and contain no '/', got {variant!r}")
        build = build or self.model_factory()
        splits = splits or self.splits
        recipe = recipe or self.recipe
        b = self.budget
        runs = []
        for seed in b.seeds:
            seed_everything(seed)
            model = build()
            result = fit(model, splits.train, splits.val, recipe=recipe, epochs=b.epochs, batch_size=b.batch_size,
                         seed=seed, accel=self.accel, eval_batch_size=b.eval_batch_size,
                         checkpoint_path=self.resume_dir / variant / f"seed{seed}.pt",
                         log_epoch=self._epoch_logger(variant, seed), desc=f"{self.name}/{variant}/seed{seed}", **hooks)
            test = evaluate(model, splits.test, b.eval_batch_size, bootstrap_resamples=b.bootstrap_resamples,
                            amp_dtype=self.accel.amp_dtype, channels_last=self.accel.channels_last)
            weights = None
            if save_weights:
                weights = atomic_save(model.state_dict(), self.models_dir / variant / f"seed{seed}.pt")
            runs.append(SeedRun(seed, result, test, weights))
            print(f"[{self.name}/{variant}/seed{seed}] test acc {test.accuracy:.4f} "
                  f"(bootstrap 95% CI {test.accuracy_ci[0]:.4f}-{test.accuracy_ci[1]:.4f})", file=sys.stderr)
        prof = (profile_model(build(), self.input_shapes(splits), repeats=b.latency_repeats,
                              memory_batch_size=b.batch_size) if profile else None)
        variant_result = VariantResult(variant, runs, prof, info or {})
        self.results[variant] = variant_result
        # replaces the last-epoch values log_metric left there with the aggregates over seeds
        self.live.summary[variant] = variant_result.summary()
        self.live.make_summary()
        return variant_result

    def _epoch_logger(self, variant: str, seed: int):
        def log(epoch: int, metrics: dict[str, float]) -> None:
            self.live.step = epoch
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s"):
                if key in metrics:
                    self.live.log_metric(f"{variant}/seed{seed}/{key}", metrics[key], plot=True)
        return log

    # ------------------------------------------------------------------ comparisons
    def reference(self, stage: str = "baseline", variant: str = "resnet50") -> dict[str, list[float]]:
        """Per-seed results of another stage's variant (by default the baseline), read from its
        metrics.json beside this stage's: the control a technique is compared with, without
        retraining it."""
        path = self.out_dir.parent / stage / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `dvc repro {stage}` first")
        data = json.loads(path.read_text())
        if variant not in data or "per_seed" not in data[variant]:
            raise KeyError(f"{path} has no per-seed results for variant '{variant}'")
        if data.get("profile") != self.params.profile:
            raise ValueError(f"{path} was produced under profile '{data.get('profile')}', this stage runs "
                             f"'{self.params.profile}'; results of different budgets are not comparable")
        return data[variant]["per_seed"]

    def effect(self, result: VariantResult, control: dict[str, list[float]] | VariantResult,
               metric: str = "test_acc", expected_sign: int = +1) -> tuple[Estimate, str]:
        """Paired (same seeds) difference ``result - control`` with its 95% CI and the verdict on
        a claim that expects the difference to have ``expected_sign``."""
        if isinstance(control, VariantResult):
            control = control.seed_values(metric)
        mine = dict(zip(*result.seed_values(metric).values()))
        theirs = dict(zip(control["seed"], control[metric]))
        if set(mine) != set(theirs):
            raise ValueError(f"seeds differ ({sorted(mine)} vs {sorted(theirs)}); "
                             "a paired comparison needs the same seeds")
        effect = paired_difference([mine[s] for s in sorted(mine)], [theirs[s] for s in sorted(mine)])
        return effect, verdict(effect, expected_sign)

    # ------------------------------------------------------------------ outputs
    def save_figure(self, fig, name: str) -> None:
        """Write ``figures/<name>.png`` (the notebook still shows the figure inline)."""
        fig.savefig(self.figures_dir / f"{name}.png", dpi=120, bbox_inches="tight")

    def log_metrics(self, **values: Any) -> None:
        """Stage-level numbers that are not per variant (e.g. split sizes)."""
        self.live.summary.update(_finite(values))
        self.live.make_summary()

    def finish(self) -> dict[str, Any]:
        """Write metrics.json for good and drop the resume checkpoints of this stage."""
        self.live.make_summary()
        self.live.end()
        shutil.rmtree(self.resume_dir, ignore_errors=True)
        return json.loads((self.out_dir / "metrics.json").read_text())

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
