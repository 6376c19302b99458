import math

import numpy as np
import pytest

from resnet_review.stats import bootstrap_ci, mean_ci, paired_difference, verdict


def test_mean_ci_matches_a_hand_computation():
    est = mean_ci([0.80, 0.82, 0.84])
    # sd = 0.02, t(0.975, df=2) = 4.302653, half width = 4.302653 * 0.02 / sqrt(3)
    assert est.mean == pytest.approx(0.82)
    assert est.half_width == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-5)


def test_one_value_has_no_interval():
    est = mean_ci([0.5])
    assert est.n == 1 and math.isnan(est.ci_low) and "no CI" in str(est)


def test_verdicts():
    assert verdict(paired_difference([0.9, 0.91, 0.92], [0.8, 0.8, 0.81])) == "supported"
    assert verdict(paired_difference([0.7, 0.71, 0.7], [0.8, 0.8, 0.81])) == "not supported"
    assert verdict(paired_difference([0.81, 0.79, 0.80], [0.80, 0.80, 0.80])) == "inconclusive at this budget"
    assert verdict(paired_difference([0.7, 0.71, 0.7], [0.8, 0.8, 0.81]), expected_sign=-1) == "supported"
    assert verdict(mean_ci([0.1])) == "inconclusive at this budget"
    with pytest.raises(ValueError, match="match one to one"):
        paired_difference([1, 2], [1])


def test_bootstrap_interval_brackets_the_accuracy():
    correct = np.r_[np.ones(800), np.zeros(200)]
    lo, hi = bootstrap_ci(correct, resamples=500)
    assert lo < 0.8 < hi and hi - lo < 0.06


def test_p_value_agrees_with_the_interval_and_bh_with_a_hand_computation():
    from resnet_review.stats import FDR_INCONCLUSIVE, bh_adjust, p_value, paired_difference, verdict_after_fdr

    clear = paired_difference([0.90, 0.92, 0.91], [0.88, 0.90, 0.885])  # CI excludes 0
    straddles = paired_difference([0.90, 0.86, 0.91], [0.88, 0.90, 0.885])  # CI holds 0
    assert p_value(clear) < 0.05 < p_value(straddles)
    # the interval's edge is where p crosses 0.05
    assert p_value(clear, null=clear.ci_low) == pytest.approx(0.05)
    assert math.isnan(p_value(mean_ci([0.9])))
    # BH: sorted p (0.01, 0.03, 0.04, 0.2) of a family of 4 -> min over k>=i of p_k * 4 / k
    q = bh_adjust([0.01, 0.04, math.nan, 0.03, 0.2])
    assert q[[0, 1, 3, 4]] == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])
    assert math.isnan(q[2])  # not measured: not in the family
    assert verdict_after_fdr("supported", 0.04) == "supported"
    assert verdict_after_fdr("not supported", 0.06) == FDR_INCONCLUSIVE
    assert verdict_after_fdr("inconclusive at this budget", 0.5) == "inconclusive at this budget"


def test_seeds_and_images_interval_adds_the_test_sets_chance_to_the_seeds():
    from resnet_review.stats import paired_seeds_and_images

    rng = np.random.default_rng(0)
    control = rng.random((3, 400)) < 0.7
    flips = rng.random((3, 400)) < 0.1  # the treatment disagrees with the control on ~10% of images
    treatment = control ^ flips
    effect, p = paired_seeds_and_images(treatment, control)
    seeds_only = paired_difference(treatment.mean(1), control.mean(1))
    assert effect.mean == pytest.approx(seeds_only.mean)
    assert effect.ci_low < seeds_only.ci_low and effect.ci_high > seeds_only.ci_high
    # the image component by hand: variance of the seed-averaged per-image difference over n images
    d = treatment.astype(float) - control
    se = math.sqrt(d.mean(1).var(ddof=1) / 3 + d.mean(0).var(ddof=1) / 400)
    assert effect.half_width == pytest.approx(se * 4.302652729911275)  # t(0.975, df=2)
    same, p_same = paired_seeds_and_images(control, control)
    assert same.mean == 0 and p_same == 1.0
    with pytest.raises(ValueError, match="arrays of one shape"):
        paired_seeds_and_images(control, control[:2])
