"""Confidence intervals used everywhere a number is reported."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


def _scipy_stats():
    """scipy.stats, imported on first use: it takes about a second, which every process that
    imports the package (the stage runner, the memory probe, a CLI) would pay for nothing."""
    from scipy import stats

    return stats


@dataclass(frozen=True)
class Estimate:
    """A mean with its two-sided confidence interval over ``n`` independent runs (seeds)."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def shifted(self, delta: float) -> "Estimate":
        """The same estimate moved by ``delta`` (e.g. a speed-up ratio minus 1)."""
        return Estimate(self.mean + delta, self.ci_low + delta, self.ci_high + delta, self.n, self.confidence)

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:.4f} (n=1, no CI)"
        return f"{self.mean:.4f} ± {self.half_width:.4f}"


def mean_ci(values, confidence: float = 0.95) -> Estimate:
    """Mean and Student-t confidence interval; with one value the interval is undefined (NaN)."""
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(x.mean())
    if x.size < 2:
        return Estimate(mean, math.nan, math.nan, 1, confidence)
    half = float(_scipy_stats().t.ppf(0.5 + confidence / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Estimate(mean, mean - half, mean + half, int(x.size), confidence)


def bootstrap_ci(correct, resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (e.g. accuracy from per-example 0/1 correctness):
    the uncertainty due to the finite test set, for one trained model."""
    x = np.asarray(correct, dtype=float)
    if resamples == 0 or x.size < 2 or np.all(x == x[0]):
        return (float(x.mean()), float(x.mean())) if x.size else (math.nan, math.nan)
    res = _scipy_stats().bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=confidence,
                          method="percentile", random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_difference(treatment, control, confidence: float = 0.95) -> Estimate:
    """Mean and CI of ``treatment - control`` over matched runs (the same seeds, data and budget)."""
    a, b = np.asarray(list(treatment), dtype=float), np.asarray(list(control), dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired runs must match one to one, got {a.size} and {b.size} values")
    return mean_ci(a - b, confidence)


VERDICTS = ("supported", "not supported", "inconclusive at this budget")


def verdict(effect: Estimate, expected_sign: int = +1, margin: float = 0.0) -> str:
    """Whether an effect's CI agrees with a claim that expects it to be positive (``+1``) or
    negative (``-1``): excluded zero on the claimed side -> supported; on the other side -> not
    supported; an interval that holds zero (or none at all, from one seed) -> inconclusive.

    ``margin`` > 0 tests a claim of no meaningful loss ("within ``margin`` of the control"): the
    line is drawn at ``-margin`` on the claimed side instead of at zero."""
    if expected_sign not in (1, -1):
        raise ValueError("expected_sign must be +1 or -1")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    lo, hi = effect.ci_low * expected_sign, effect.ci_high * expected_sign
    lo, hi = min(lo, hi) + margin, max(lo, hi) + margin
    if math.isnan(lo) or math.isnan(hi) or lo <= 0 <= hi:
        return VERDICTS[2]
    return VERDICTS[0] if lo > 0 else VERDICTS[1]


def p_value(effect: Estimate, null: float = 0.0) -> float:
    """Two-sided p-value of "the effect is ``null``", read back from a Student-t interval over
    ``effect.n`` runs (its standard error is the half-width over the t quantile); NaN without an
    interval. For an interval that was not Student-t (a bootstrap over timing rounds) it is the p of
    a t interval of the same width: an approximation, good enough to rank effects for
    :func:`bh_adjust`."""
    if effect.n < 2 or math.isnan(effect.ci_low) or math.isnan(effect.ci_high):
        return math.nan
    se = effect.half_width / float(_scipy_stats().t.ppf(0.5 + effect.confidence / 2, df=effect.n - 1))
    if se == 0:
        return 1.0 if effect.mean == null else 0.0
    return float(2 * _scipy_stats().t.sf(abs(effect.mean - null) / se, df=effect.n - 1))


def bh_adjust(p_values) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) of one family of tests: a verdict whose q is
    at most 0.05 keeps the false discovery rate of the family's decisive verdicts at 5%. NaN
    entries (effects not measured) stay NaN and are not counted in the family."""
    p = np.asarray(list(p_values), dtype=float)
    q = np.full(p.shape, math.nan)
    known = ~np.isnan(p)
    if known.any():
        q[known] = _scipy_stats().false_discovery_control(p[known], method="bh")
    return q


FDR_INCONCLUSIVE = "inconclusive after FDR control"


def verdict_after_fdr(raw: str, q: float, alpha: float = 0.05) -> str:
    """A decisive verdict (supported / not supported) that survives Benjamini–Hochberg at
    ``alpha``, or :data:`FDR_INCONCLUSIVE`; any other verdict as it is."""
    if raw in VERDICTS[:2] and not q <= alpha:
        return FDR_INCONCLUSIVE
    return raw



# what an interval counts: the seeds (paired_difference) or the seeds and the test images too
SEEDS_AND_IMAGES, SEEDS_ONLY = "seeds + test images", "seeds only"


def paired_seeds_and_images(treatment, control, null: float = 0.0,
                            confidence: float = 0.95) -> tuple[Estimate, float]:
    """The mean difference in accuracy of two models paired by seed and by test image, with an
    interval that counts both sources of chance: the seeds (training randomness, as
    :func:`paired_difference`) and the sampling of the test images.

    ``treatment`` and ``control``: arrays (seeds, images) of 0/1 correctness, row ``s`` of both
    from the same seed, columns the same images. Two variance components are added: the variance
    of the per-seed differences over the seeds, divided by their number, and the paired per-image
    variance of the seed-averaged difference, divided by the number of images (the standard error
    a per-example paired bootstrap estimates, in closed form). The interval is Student-t with
    seeds − 1 degrees of freedom (normal with one seed), so it always holds the seeds-only
    interval; with three seeds a bootstrap over them would understate their spread. Returns the
    :class:`Estimate` (``n``: seeds) and the two-sided p-value of "the difference is ``null``"."""
    a, b = np.asarray(treatment, dtype=float), np.asarray(control, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"need two (seeds, images) arrays of one shape, got {a.shape} and {b.shape}")
    d = a - b
    n_seeds, n_images = d.shape
    per_seed = d.mean(axis=1)
    var_images = d.mean(axis=0).var(ddof=1) / n_images
    var_seeds = per_seed.var(ddof=1) / n_seeds if n_seeds > 1 else 0.0
    se, mean = math.sqrt(var_seeds + var_images), float(per_seed.mean())
    # the seeds' degrees of freedom even where the images dominate: conservative, and the interval
    # always holds the seeds-only one (paired_difference) of the same data
    dist = _scipy_stats().t(df=n_seeds - 1) if n_seeds > 1 else _scipy_stats().norm()
    half = float(dist.ppf(0.5 + confidence / 2)) * se
    p = float(2 * dist.sf(abs(mean - null) / se)) if se > 0 else (1.0 if mean == null else 0.0)
    return Estimate(mean, mean - half, mean + half, n_seeds, confidence), p
