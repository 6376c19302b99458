"""What a stage measured, and the paired comparisons made of it.

A :class:`VariantResult` is one configuration trained once per seed of the profile: a
:class:`SeedRun` per seed (its training history, test evaluation, weights) and the cost profile
of its architecture. :data:`SEED_METRICS` names the per-seed numbers aggregated over seeds;
:func:`paired_effect` and :func:`interaction` compare variants seed by seed (the same seeds on
both sides, so the CI is that of a paired difference).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .engine import FitResult
from .evaluate import EvalResult
from .profiling import ModelProfile
from .stats import Estimate, mean_ci, paired_difference, verdict

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


def finite(value: Any) -> Any:
    """JSON has no NaN: undefined values (e.g. a CI from one seed) are written as null."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


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
            out[metric] = finite({"mean": est.mean, "ci_low": est.ci_low, "ci_high": est.ci_high})
        if self.profile is not None:
            out |= finite(self.profile.scalars())
        out["seeds"] = len(self.runs)
        if self.runs and self.runs[0].corruption:
            # accuracy under each corruption, mean over seeds
            out["corruptions"] = {k: sum(r.corruption[k] for r in self.runs) / len(self.runs)
                                  for k in self.runs[0].corruption}
        # per-seed values, so a later stage can pair its seeds with these (see Stage.reference):
        # the shape Stage.reference returns, {"seed": [...], metric: [...], ...} in run order
        seeds = [r.seed for r in self.runs]
        values = {m: per_seed(self, m) for m in SEED_METRICS}
        out["per_seed"] = finite({"seed": seeds, **{m: [v[s] for s in seeds] for m, v in values.items()}})
        return out | self.info


@dataclass
class SeedSeries:
    """A per-seed quantity derived from runs, e.g. a difference of effects (see :func:`interaction`)."""

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


def paired_effect(result: Comparable, control: Comparable | None, metric: str = "test_acc",
                  expected_sign: int = +1, margin: float = 0.0) -> tuple[Estimate, str]:
    """Paired (same seeds) difference ``result - control`` with its 95% CI and the verdict on a
    claim that expects the difference to have ``expected_sign`` (``control=None``: the result
    itself against zero; ``margin``: a claim of no loss beyond it, see
    :func:`~resnet_review.stats.verdict`)."""
    mine = per_seed(result, metric)
    theirs = per_seed(control, metric, like=mine)
    if set(mine) != set(theirs):
        raise ValueError(f"seeds differ ({sorted(mine)} vs {sorted(theirs)}); a paired comparison needs the same seeds")
    effect = paired_difference([mine[s] for s in sorted(mine)], [theirs[s] for s in sorted(mine)])
    return effect, verdict(effect, expected_sign, margin)


def interaction(a: Comparable, b: Comparable, c: Comparable, d: Comparable, metric: str = "test_acc",
                name: str = "interaction") -> SeedSeries:
    """Per seed, ``(a - b) - (c - d)``: whether the effect of a change is larger in one setting
    (a vs b) than in another (c vs d), e.g. fusion at low vs full resolution."""
    values = [per_seed(x, metric) for x in (a, b, c, d)]
    seeds = set(values[0])
    if any(set(v) != seeds for v in values):
        raise ValueError("an interaction needs the same seeds in all four variants")
    a_, b_, c_, d_ = values
    return SeedSeries(name, {s: (a_[s] - b_[s]) - (c_[s] - d_[s]) for s in sorted(seeds)})
