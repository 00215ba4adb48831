"""The dashboards' intervals: Wilson for rates, the delta method for ratios of sums."""

import numpy as np
import pytest

from rulesplatform.dashboard_stats import ratio_delta_interval, wilson_interval


def test_wilson_interval__matches_newcombes_published_values():
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table II (score method).
    low, high = wilson_interval([81, 15, 0, 1], [263, 148, 20, 29])
    assert low == pytest.approx([0.2553, 0.0624, 0.0, 0.0061], abs=1e-4)
    assert high == pytest.approx([0.3662, 0.1605, 0.1611, 0.1718], abs=1e-4)


def test_wilson_interval__no_trial__has_no_interval():
    low, high = wilson_interval([0], [0])
    assert np.isnan(low[0]) and np.isnan(high[0])


def _moments(x: np.ndarray, y: np.ndarray):
    """Per-group moments over axis 1 (groups × buckets), as kpi_table passes them."""
    return x.shape[1], x.sum(1), y.sum(1), (x * x).sum(1), (y * y).sum(1), (x * y).sum(1)


def test_ratio_delta_interval__equals_the_linearised_variance():
    # The delta method's variance of sum(y)/sum(x) is that of the linearised values (y - R x) / mean(x).
    rng = np.random.default_rng(7)
    x, y = rng.poisson(20, (1, 48)).astype(float), rng.gamma(5, 40, (1, 48))
    ratio, low, high = ratio_delta_interval(*_moments(x, y))
    r = y.sum() / x.sum()
    linear = (y - r * x) / x.mean()
    half = 1.959964 * np.sqrt(linear.var(ddof=1) / x.shape[1])
    assert (ratio[0], low[0], high[0]) == pytest.approx((r, r - half, r + half), rel=1e-6)


def test_ratio_delta_interval__covers_the_true_cpa_about_95_percent_of_the_time():
    # 4000 campaigns of 48 hourly buckets: spend varies, conversions are Poisson at 1 per 25 spent,
    # so the true CPA is 25. The interval's coverage should be close to its nominal 95%.
    rng = np.random.default_rng(2026)
    spend = rng.gamma(4, 25, (4000, 48))
    conversions = rng.poisson(spend / 25).astype(float)
    _, low, high = ratio_delta_interval(*_moments(conversions, spend))
    coverage = np.mean((low <= 25) & (25 <= high))
    assert 0.93 <= coverage <= 0.97


def test_ratio_delta_interval__one_bucket_or_no_denominator__has_no_interval():
    ratio, low, high = ratio_delta_interval([1, 1], [0, 5], [5, 10], [0, 25], [25, 100], [0, 50])
    assert np.isnan(ratio[0]) and np.isnan(low).all() and np.isnan(high).all()
    assert ratio[1] == 2.0  # one bucket: the ratio is known, its interval is not


def test_ratio_delta_interval__lower_bound_never_below_zero():
    x = np.array([[1.0, 1.0, 1.0, 40.0]])
    y = np.array([[0.0, 0.0, 0.0, 400.0]])
    _, low, _ = ratio_delta_interval(*_moments(x, y))
    assert low[0] >= 0
