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
