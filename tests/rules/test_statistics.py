"""Tests for rules.statistics: published reference values, SciPy cross-checks, vectorisation, degenerate input."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from rules.statistics import (
    estimate_test,
    k_sigma_limits,
    p_chart_limits,
    two_proportion_ztest,
    welch_df,
    welch_ttest,
    z_for_confidence,
)

TOL = 1e-4


def _moments(total, total_sq, n):
    """Mean and sample variance (ddof=1) from a sum and a sum of squares."""
    mean = total / n
    return mean, (total_sq - total**2 / n) / (n - 1)


# --- two-proportion z-test -------------------------------------------------------------------


def test_two_proportion_ztest__statsmodels_reference__matches_with_b_minus_a_sign():
    # statsmodels tests, test_proportion.py (GH 2969): proportions_ztest([5, 12], [83, 99])
    # -> z = -1.4078304151, p = 0.1591812918. statsmodels reports p1 - p2; we report b - a,
    # so with a = 5/83 and b = 12/99 the statistic is positive.
    result = two_proportion_ztest(5, 83, 12, 99)

    assert result.statistic == pytest.approx(1.4078304151, abs=1e-9)
    assert result.p_value == pytest.approx(0.1591812918, abs=1e-9)
    assert result.diff == pytest.approx(12 / 99 - 5 / 83)


def test_two_proportion_ztest__interval__uses_unpooled_standard_error():
    p_a, p_b = 5 / 83, 12 / 99
    se = np.sqrt(p_a * (1 - p_a) / 83 + p_b * (1 - p_b) / 99)

    result = two_proportion_ztest(5, 83, 12, 99, confidence=0.9)

    z = stats.norm.ppf(0.95)
    assert result.ci_low == pytest.approx(p_b - p_a - z * se)
    assert result.ci_high == pytest.approx(p_b - p_a + z * se)


def test_two_proportion_ztest__one_sided__halves_the_p_value_on_the_observed_side():
    two_sided = two_proportion_ztest(5, 83, 12, 99).p_value

    larger = two_proportion_ztest(5, 83, 12, 99, alternative="larger")
    smaller = two_proportion_ztest(5, 83, 12, 99, alternative="smaller")

    assert larger.p_value == pytest.approx(two_sided / 2)
    assert smaller.p_value == pytest.approx(1 - two_sided / 2)
    assert larger.ci_high == np.inf and np.isfinite(larger.ci_low)
    assert smaller.ci_low == -np.inf and np.isfinite(smaller.ci_high)


def test_two_proportion_ztest__arrays__agree_with_scalar_calls():
    x_a, n_a = np.array([5, 40, 0, 300]), np.array([83, 1000, 50, 2000])
    x_b, n_b = np.array([12, 55, 3, 280]), np.array([99, 1000, 60, 2100])

    vector = two_proportion_ztest(x_a, n_a, x_b, n_b)

    for i in range(len(x_a)):
        scalar = two_proportion_ztest(int(x_a[i]), int(n_a[i]), int(x_b[i]), int(n_b[i]))
        for field in ("statistic", "p_value", "diff", "ci_low", "ci_high"):
            assert getattr(vector, field)[i] == pytest.approx(getattr(scalar, field))


def test_two_proportion_ztest__broadcasts_one_baseline_against_many_segments():
    result = two_proportion_ztest(50, 1000, [40, 50, 70], [1000, 1000, 1000])

    assert result.p_value.shape == (3,)
    assert result.statistic[0] < 0 and result.statistic[1] == 0 and result.statistic[2] > 0


def test_two_proportion_ztest__zero_trials_or_zero_variance__nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = two_proportion_ztest([0, 5, 0, 10], [0, 50, 10, 10], [3, 0, 0, 10], [30, 0, 10, 10])

    assert np.isnan(result.p_value).all()
    assert np.isnan(result.statistic).all()


def test_two_proportion_ztest__unknown_alternative__is_refused():
    with pytest.raises(ValueError, match="alternative"):
        two_proportion_ztest(5, 83, 12, 99, alternative="greater")


# --- Welch t-test ----------------------------------------------------------------------------


def test_welch_ttest__growthbook_reference__absolute_difference():
    # GrowthBook gbstats, tests/frequentist/test_tests.py: A mean 0.41 sd 3.9 n 3407,
    # B mean 0.70 sd 6.2 n 3461 -> diff 0.29, 95% CI (0.04538, 0.53462), p 0.02016.
    mean_a, var_a = _moments(1396.87, 52377.9767, 3407)
    mean_b, var_b = _moments(2422.7, 134698.29, 3461)

    result = welch_ttest(mean_a, var_a, 3407, mean_b, var_b, 3461)

    assert result.diff == pytest.approx(0.29, abs=TOL)
    assert result.ci_low == pytest.approx(0.04538, abs=TOL)
    assert result.ci_high == pytest.approx(0.53462, abs=TOL)
    assert result.p_value == pytest.approx(0.02016, abs=TOL)


@pytest.mark.parametrize(("alternative", "scipy_alternative"), [
    ("two-sided", "two-sided"), ("larger", "greater"), ("smaller", "less"),
])
def test_welch_ttest__random_moments__match_scipy_ttest_ind_from_stats(alternative, scipy_alternative):
    rng = np.random.default_rng(7)
    mean_a, mean_b = rng.normal(10, 2, 50), rng.normal(10.5, 2, 50)
    var_a, var_b = rng.uniform(0.5, 9, 50), rng.uniform(0.5, 9, 50)
    n_a, n_b = rng.integers(2, 500, 50), rng.integers(2, 500, 50)

    ours = welch_ttest(mean_a, var_a, n_a, mean_b, var_b, n_b, alternative=alternative)
    # scipy tests sample 1 against sample 2, so b goes first to get b - a.
    theirs = stats.ttest_ind_from_stats(
        mean_b, np.sqrt(var_b), n_b, mean_a, np.sqrt(var_a), n_a, equal_var=False, alternative=scipy_alternative
    )

    np.testing.assert_allclose(ours.statistic, theirs.statistic, rtol=1e-10)
    np.testing.assert_allclose(ours.p_value, theirs.pvalue, rtol=1e-8)


def test_welch_ttest__interval__matches_scipy_confidence_interval():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 40), rng.normal(0.3, 2, 55)

    ours = welch_ttest(a.mean(), a.var(ddof=1), a.size, b.mean(), b.var(ddof=1), b.size, confidence=0.9)
    theirs = stats.ttest_ind(b, a, equal_var=False).confidence_interval(confidence_level=0.9)

    assert ours.ci_low == pytest.approx(theirs.low)
    assert ours.ci_high == pytest.approx(theirs.high)


def test_welch_ttest__arrays__agree_with_scalar_calls():
    args = [np.array(v, dtype=float) for v in ([1, 2, 3], [4, 1, 2], [10, 20, 30], [1.5, 2, 2], [9, 1, 3], [12, 25, 5])]

    vector = welch_ttest(*args)

    for i in range(3):
        scalar = welch_ttest(*(float(v[i]) for v in args))
        assert vector.p_value[i] == pytest.approx(scalar.p_value)
        assert vector.ci_low[i] == pytest.approx(scalar.ci_low)


def test_welch_ttest__too_few_observations_or_zero_variance__nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = welch_ttest([1, 1, 1], [4, 0, 4], [1, 10, 0], [2, 1, 2], [4, 0, 4], [10, 10, 10])

    assert np.isnan(result.p_value).all()
    assert np.isnan(result.ci_low).all() and np.isnan(result.ci_high).all()


def test_welch_df__matches_satterthwaite_formula_and_nan_when_degenerate():
    expected = (4 / 10 + 9 / 12) ** 2 / ((4 / 10) ** 2 / 9 + (9 / 12) ** 2 / 11)

    assert welch_df(4, 10, 9, 12) == pytest.approx(expected)
    assert np.isnan(welch_df([0, 4], [10, 1], [0, 9], [10, 12])).all()


# --- Wald / t test from an estimate ----------------------------------------------------------


@given(
    estimate=st.floats(-10, 10),
    se=st.floats(0.01, 5),
    df=st.one_of(st.none(), st.floats(2, 500)),
)
def test_estimate_test__interval_excludes_zero_exactly_when_p_below_alpha(estimate, se, df):
    result = estimate_test(estimate, se, df=df, confidence=0.95)

    excludes_zero = result.ci_low > 0 or result.ci_high < 0
    if abs(result.p_value - 0.05) > 1e-9:  # at the boundary either answer is right
        assert excludes_zero == (result.p_value < 0.05)


def test_estimate_test__normal__matches_z_arithmetic():
    result = estimate_test(0.5, 0.25)

    assert result.statistic == pytest.approx(2.0)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(2.0))
    assert result.ci_low == pytest.approx(0.5 - 1.959964 * 0.25, abs=1e-6)


@pytest.mark.parametrize("df", [None, 7.5])
@pytest.mark.parametrize("alternative", ["two-sided", "larger", "smaller"])
def test_estimate_test__p_values__are_scipys_tail_probabilities_to_the_bit(alternative, df):
    statistics = np.array([-np.inf, -40.0, -1.96, -0.0, 0.3, 1.0, 2.5, 40.0, np.inf, np.nan])
    dist = stats.norm if df is None else stats.t(df)
    expected = {"larger": dist.sf(statistics), "smaller": dist.cdf(statistics),
                "two-sided": 2 * dist.sf(np.abs(statistics))}[alternative]

    p_values = estimate_test(statistics, np.ones_like(statistics), df=df, alternative=alternative).p_value

    np.testing.assert_array_equal(p_values, expected)


# --- control limits and critical values ------------------------------------------------------


def test_p_chart_limits__nist_example__matches_published_limits():
    # NIST/SEMATECH e-Handbook of Statistical Methods 6.3.3.2 (p-chart example):
    # p-bar 0.2313, n 50 per sample -> UCL 0.4102, LCL 0.0524.
    lcl, ucl = p_chart_limits(0.2313, 50)

    assert lcl == pytest.approx(0.0524, abs=TOL)
    assert ucl == pytest.approx(0.4102, abs=TOL)


def test_p_chart_limits__small_samples__clipped_to_unit_interval_and_nan_for_zero_n():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lcl, ucl = p_chart_limits([0.02, 0.98, 0.5], [10, 10, 0])

    assert lcl[0] == 0.0 and ucl[1] == 1.0
    assert np.isnan(lcl[2]) and np.isnan(ucl[2])


def test_k_sigma_limits__mean_plus_minus_k_std_and_nan_for_negative_std():
    lcl, ucl = k_sigma_limits([10.0, 5.0, 1.0], [2.0, 0.0, -1.0], k=2.5)

    np.testing.assert_allclose(lcl[:2], [5.0, 5.0])
    np.testing.assert_allclose(ucl[:2], [15.0, 5.0])
    assert np.isnan(lcl[2]) and np.isnan(ucl[2])


@pytest.mark.parametrize(("confidence", "alternative", "expected"), [
    (0.95, "two-sided", 1.959963985),
    (0.99, "two-sided", 2.575829304),
    (0.95, "larger", 1.644853627),
    (0.95, "smaller", 1.644853627),
])
def test_z_for_confidence__standard_quantiles(confidence, alternative, expected):
    assert z_for_confidence(confidence, alternative) == pytest.approx(expected, abs=1e-8)


def test_scalar_inputs__come_back_as_plain_floats():
    result = two_proportion_ztest(5, 83, 12, 99)
    lcl, ucl = p_chart_limits(0.2, 100)

    assert all(type(v) is float for v in (result.statistic, result.p_value, result.ci_low, lcl, ucl))
