"""Tests for experiments.statistics: published reference values, simulation checks of error rates, degenerate input."""

import warnings

import numpy as np
import pytest
from scipy import integrate, stats

from experiments.statistics import (
    Decision,
    bayesian_means,
    bayesian_proportions,
    expected_duration_days,
    frequentist_means,
    frequentist_proportions,
    normal_power,
    prob_b_beats_a,
    sample_size_per_arm,
    sequential_means,
    sequential_proportions,
    srm_blocks_decision,
    srm_check,
    thompson_weights,
)

TOL = 1e-4
ALPHA = 0.05
SIMULATIONS = 2000
# Four binomial standard deviations of a false-positive rate estimated from SIMULATIONS runs.
FPR_TOLERANCE = 4 * np.sqrt(ALPHA * (1 - ALPHA) / SIMULATIONS)

# GrowthBook gbstats, tests/frequentist/test_tests.py: A mean 0.41 sd 3.9 n 3407, B mean 0.70 sd 6.2 n 3461.
GROWTHBOOK_MEANS = (1396.87, 52377.9767, 3407, 2422.7, 134698.29, 3461)


def _assert_close(actual, expected, tol=TOL):
    assert actual == pytest.approx(expected, abs=tol)


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- power analysis --------------------------------------------------------------------------


def test_sample_size_per_arm__evan_miller_reference__6347():
    # Evan Miller's sample size calculator: baseline 20%, +10% relative MDE, α 0.05 two-sided, power 0.8.
    assert sample_size_per_arm(0.20, 0.10) == 6347


def test_sample_size_per_arm__one_sided_or_larger_effect__needs_fewer_users():
    two_sided = sample_size_per_arm(0.20, 0.10)

    assert sample_size_per_arm(0.20, 0.10, two_sided=False) < two_sided
    assert sample_size_per_arm(0.20, 0.20) < two_sided
    assert sample_size_per_arm(0.20, 0.10, power=0.9) > two_sided


@pytest.mark.parametrize(("baseline", "mde"), [(0.0, 0.1), (0.2, 0.0), (0.6, 1.0), (1.2, 0.1)])
def test_sample_size_per_arm__impossible_rates__are_refused(baseline, mde):
    with pytest.raises(ValueError):
        sample_size_per_arm(baseline, mde)


def test_expected_duration_days__rounds_up_to_whole_days():
    assert expected_duration_days(6347, 2, 1000) == 13
    assert expected_duration_days(500, 2, 1000) == 1
    with pytest.raises(ValueError):
        expected_duration_days(500, 2, 0)


def test_normal_power__statsmodels_reference():
    # statsmodels tests, test_power.py (values from R `pwr`): d 0.3, n1 80, ratio 1, α 0.05 two-sided.
    assert normal_power(0.3, 80) == pytest.approx(0.4751008706, abs=1e-9)


def test_normal_power__vectorised__agrees_with_scalar_and_grows_with_n():
    n = np.array([20, 80, 200, 800])

    powers = normal_power(0.3, n, ratio=1.5)

    assert np.all(np.diff(powers) > 0)
    for i, n1 in enumerate(n):
        assert powers[i] == pytest.approx(normal_power(0.3, int(n1), ratio=1.5))


# --- fixed horizon ---------------------------------------------------------------------------


def test_frequentist_means__growthbook_reference__absolute():
    result = frequentist_means(*GROWTHBOOK_MEANS, relative=False)

    _assert_close(result.effect, 0.29)
    _assert_close(result.ci_low, 0.04538)
    _assert_close(result.ci_high, 0.53462)
    _assert_close(result.p_value, 0.02016)
    assert result.decision == Decision.TREATMENT_BETTER


def test_frequentist_means__growthbook_reference__relative_lift_by_delta_method():
    # Same source, relative test: lift 0.70732, CI (-0.03526, 1.44989), p 0.06191.
    result = frequentist_means(*GROWTHBOOK_MEANS, relative=True)

    _assert_close(result.effect, 0.70732)
    _assert_close(result.ci_low, -0.03526)
    _assert_close(result.ci_high, 1.44989)
    _assert_close(result.p_value, 0.06191)
    assert result.decision == Decision.INCONCLUSIVE


def test_frequentist_proportions__growthbook_reference__relative_lift():
    # GrowthBook gbstats, tests/frequentist/test_tests.py: 14/28 vs 16/30 -> 0.06667, CI (-0.47767, 0.61101), p 0.80707.
    result = frequentist_proportions(14, 28, 16, 30, alpha=0.05)

    _assert_close(result.effect, 0.06667)
    _assert_close(result.ci_low, -0.47767)
    _assert_close(result.ci_high, 0.61101)
    _assert_close(result.p_value, 0.80707)


def test_frequentist_proportions__clear_loss__decides_for_control():
    result = frequentist_proportions(300, 2000, 200, 2000)

    assert result.effect < 0 and result.ci_high < 0
    assert result.decision == Decision.CONTROL_BETTER


def test_frequentist_proportions__arrays__agree_with_scalar_calls():
    x_a, n_a = np.array([14, 100, 5, 0]), np.array([28, 1000, 50, 0])
    x_b, n_b = np.array([16, 130, 2, 3]), np.array([30, 1000, 60, 30])

    vector = frequentist_proportions(x_a, n_a, x_b, n_b)

    for i in range(len(x_a)):
        scalar = frequentist_proportions(int(x_a[i]), int(n_a[i]), int(x_b[i]), int(n_b[i]))
        np.testing.assert_allclose(
            [vector.effect[i], vector.ci_low[i], vector.ci_high[i], vector.p_value[i]],
            [scalar.effect, scalar.ci_low, scalar.ci_high, scalar.p_value],
        )
        assert vector.decision[i] == scalar.decision


def test_frequentist__zero_trials_zero_baseline_or_zero_variance__insufficient_data(no_warnings):
    proportions = frequentist_proportions([0, 0, 10, 1], [0, 100, 10, 1], [5, 5, 10, 5], [50, 100, 10, 10])
    means = frequentist_means([0, 50], [0, 250], [0, 10], [10, 50], [20, 250], [5, 10], relative=False)

    assert np.isnan(proportions.p_value).all() and np.isnan(means.p_value).all()
    assert set(proportions.decision) | set(means.decision) == {Decision.INSUFFICIENT_DATA}


def test_frequentist_proportions__aa_simulation__false_positive_rate_near_alpha():
    rng = np.random.default_rng(20240601)
    n = 2000
    x_a, x_b = rng.binomial(n, 0.1, SIMULATIONS), rng.binomial(n, 0.1, SIMULATIONS)

    result = frequentist_proportions(x_a, n, x_b, n, alpha=ALPHA)

    false_positive_rate = np.mean(result.p_value < ALPHA)
    assert abs(false_positive_rate - ALPHA) <= FPR_TOLERANCE
    assert np.mean(result.decision != Decision.INCONCLUSIVE) == pytest.approx(false_positive_rate)


def test_frequentist_means__aa_simulation__false_positive_rate_near_alpha():
    rng = np.random.default_rng(7)
    values = rng.gamma(shape=2.0, scale=5.0, size=(2, SIMULATIONS, 500))  # skewed, like revenue per user
    sums, sums_sq = values.sum(axis=-1), (values**2).sum(axis=-1)

    result = frequentist_means(sums[0], sums_sq[0], 500, sums[1], sums_sq[1], 500, alpha=ALPHA)

    assert abs(np.mean(result.p_value < ALPHA) - ALPHA) <= FPR_TOLERANCE


# --- sequential ------------------------------------------------------------------------------


def _cumulative_aa_proportions(rng, peeks=50, batch=200, rate=0.1):
    """Cumulative conversions and users per arm after each of `peeks` batches, for SIMULATIONS A/A tests."""
    conversions = rng.binomial(batch, rate, size=(2, SIMULATIONS, peeks)).cumsum(axis=-1)
    users = batch * np.arange(1, peeks + 1)
    return conversions[0], users, conversions[1], users


def test_sequential_proportions__aa_simulation_peeking_every_batch__error_rate_at_most_alpha():
    x_a, n_a, x_b, n_b = _cumulative_aa_proportions(np.random.default_rng(11))

    sequential = sequential_proportions(x_a, n_a, x_b, n_b, alpha=ALPHA, target_n=10_000)

    ever_rejected = (sequential.p_value < ALPHA).any(axis=-1)
    assert ever_rejected.mean() <= ALPHA


def test_fixed_horizon__same_peeking__inflates_error_rate_that_sequential_controls():
    # The reason the sequential analysis exists: peeking at a fixed-horizon test 50 times
    # rejects a true null far more often than alpha.
    x_a, n_a, x_b, n_b = _cumulative_aa_proportions(np.random.default_rng(11))

    fixed = frequentist_proportions(x_a, n_a, x_b, n_b, alpha=ALPHA)

    assert (fixed.p_value < ALPHA).any(axis=-1).mean() > 2 * ALPHA


def test_sequential__half_width__matches_waudby_smith_eq9_as_written_in_gbstats():
    # gbstats writes the half-width as sqrt(s2) * sqrt(2 (n rho^2 + 1) / (n rho)^2 * log(sqrt(n rho^2 + 1) / alpha)),
    # rho^2 = (-2 log alpha + log(-2 log alpha + 1)) / N, s2 = se^2 * (n_a + n_b).
    x_a, n_a, x_b, n_b, target_n = 120, 1000, 150, 1100, 5000
    p_a, p_b = x_a / n_a, x_b / n_b
    se2 = p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b
    n = n_a + n_b
    rho2 = (-2 * np.log(ALPHA) + np.log(-2 * np.log(ALPHA) + 1)) / target_n
    half_width = np.sqrt(se2 * n) * np.sqrt(2 * (n * rho2 + 1) / (n**2 * rho2) * np.log(np.sqrt(n * rho2 + 1) / ALPHA))

    result = sequential_proportions(x_a, n_a, x_b, n_b, alpha=ALPHA, target_n=target_n, relative=False)

    assert result.effect == pytest.approx(p_b - p_a)
    assert result.ci_high - result.effect == pytest.approx(half_width)
    assert result.effect - result.ci_low == pytest.approx(half_width)


def test_sequential__confidence_sequence__wider_than_fixed_interval_and_p_agrees_with_it():
    rng = np.random.default_rng(5)
    n = rng.integers(50, 50_000, 300)
    x_a, x_b = rng.binomial(n, 0.1), rng.binomial(n, 0.11)

    sequential = sequential_proportions(x_a, n, x_b, n)
    fixed = frequentist_proportions(x_a, n, x_b, n)

    assert np.all(sequential.ci_high - sequential.ci_low > fixed.ci_high - fixed.ci_low)
    excludes_zero = (sequential.ci_low > 0) | (sequential.ci_high < 0)
    np.testing.assert_array_equal(excludes_zero, sequential.p_value < ALPHA)


def test_sequential_means__degenerate_input__insufficient_data(no_warnings):
    result = sequential_means([0, 5], [0, 5], [0, 5], [3, 5], [5, 5], [3, 5])

    assert np.isnan(result.p_value).all()
    assert list(result.decision) == [Decision.INSUFFICIENT_DATA] * 2


# --- Bayesian --------------------------------------------------------------------------------


def test_bayesian_proportions__growthbook_reference():
    # GrowthBook gbstats, tests/bayesian/test_tests.py: 49/100 vs 51/100, flat prior ->
    # lift 0.04082, CI (-0.24779, 0.32943), chance to win 0.60918.
    result = bayesian_proportions(49, 100, 51, 100)

    _assert_close(result.lift, 0.04082)
    _assert_close(result.ci_low, -0.24779)
    _assert_close(result.ci_high, 0.32943)
    _assert_close(result.chance_to_win, 0.60918)
    assert result.decision == Decision.INCONCLUSIVE


def test_bayesian__risks__match_numerical_expected_loss():
    result = bayesian_means(100, 1002.25, 10, 105, 1111.5, 10)
    sd = (result.ci_high - result.lift) / stats.norm.ppf(0.975)
    posterior = stats.norm(result.lift, sd)

    assert result.risk_control == pytest.approx(posterior.expect(lambda x: max(x, 0.0)), abs=1e-8)
    assert result.risk_treatment == pytest.approx(posterior.expect(lambda x: max(-x, 0.0)), abs=1e-8)
    assert result.risk_control - result.risk_treatment == pytest.approx(result.lift)


def test_bayesian__decisive_data__picks_winner_by_chance_to_win():
    result = bayesian_proportions([100, 200], [2000, 2000], [200, 100], [2000, 2000])

    assert list(result.decision) == [Decision.TREATMENT_BETTER, Decision.CONTROL_BETTER]


def test_bayesian_proportions__no_data__insufficient_data(no_warnings):
    result = bayesian_proportions([0, 0], [0, 100], [0, 5], [0, 100])

    assert np.isnan(result.chance_to_win).all()
    assert list(result.decision) == [Decision.INSUFFICIENT_DATA] * 2


def test_prob_b_beats_a__evan_miller_closed_form_reference():
    # Evan Miller, "Formulas for Bayesian A/B testing", closed form with Beta(1, 1) priors.
    _assert_close(prob_b_beats_a(49, 100, 51, 100), 0.61077)


@pytest.mark.parametrize(("x_a", "n_a", "x_b", "n_b"), [
    (3, 40, 9, 40),  # successes smallest: sums over alpha
    (95, 100, 90, 100),  # failures smallest: sums over beta
    (0, 0, 0, 0),  # no data: the priors tie
    (400, 1000, 20, 30),  # arms of different sizes
])
def test_prob_b_beats_a__matches_numerical_integration(x_a, n_a, x_b, n_b):
    a, b = stats.beta(1 + x_a, 1 + n_a - x_a), stats.beta(1 + x_b, 1 + n_b - x_b)
    expected, _ = integrate.quad(lambda p: b.pdf(p) * a.cdf(p), 0, 1, limit=200)

    assert prob_b_beats_a(x_a, n_a, x_b, n_b) == pytest.approx(expected, abs=1e-8)


def test_prob_b_beats_a__arrays__agree_with_scalar_calls():
    x_a, n_a = np.array([49, 3, 95, 0]), np.array([100, 40, 100, 0])
    x_b, n_b = np.array([51, 9, 90, 0]), np.array([100, 40, 100, 0])

    vector = prob_b_beats_a(x_a, n_a, x_b, n_b)

    for i in range(4):
        assert vector[i] == pytest.approx(prob_b_beats_a(int(x_a[i]), int(n_a[i]), int(x_b[i]), int(n_b[i])))


# --- SRM and bandits -------------------------------------------------------------------------


def test_srm_check__growthbook_reference__blocks_decisions():
    # GrowthBook gbstats check_srm: [1000, 1200] at 50/50 -> p 2.0079e-05 (chi2 18.18).
    chi2, p_value = srm_check([1000, 1200], [0.5, 0.5])

    assert chi2 == pytest.approx(18.1818, abs=TOL)
    assert p_value == pytest.approx(2.0079e-05, rel=1e-4)
    assert srm_blocks_decision(p_value)


def test_srm_check__many_experiments__match_scipy_chisquare():
    counts = np.array([[330, 340, 330], [100, 160, 140], [5000, 2600, 2400]])
    weights = np.array([2, 1, 1])

    chi2, p_value = srm_check(counts, weights)

    expected = stats.chisquare(counts, counts.sum(axis=1, keepdims=True) * weights / weights.sum(), axis=1)
    np.testing.assert_allclose(chi2, expected.statistic)
    np.testing.assert_allclose(p_value, expected.pvalue)
    np.testing.assert_array_equal(srm_blocks_decision(p_value), p_value < 0.001)


def test_srm_check__no_users_yet__nan_and_does_not_block(no_warnings):
    chi2, p_value = srm_check([0, 0], [1, 1])

    assert np.isnan(chi2) and np.isnan(p_value)
    assert not srm_blocks_decision(p_value)


def test_srm_check__non_positive_weight__is_refused():
    with pytest.raises(ValueError, match="positive"):
        srm_check([10, 10], [1, 0])


def test_thompson_weights__sum_to_one_respect_floor_and_favour_the_best_arm():
    weights = thompson_weights([50, 80, 20], [1000, 1000, 1000], floor=0.1, rng=np.random.default_rng(3))

    assert weights.sum() == pytest.approx(1.0)
    assert np.all(weights >= 0.1)
    assert weights.argmax() == 1


def test_thompson_weights__same_seed__same_weights_and_no_data_splits_evenly():
    first = thompson_weights([0, 0], [0, 0], floor=0.0, draws=20_000, rng=np.random.default_rng(9))
    again = thompson_weights([0, 0], [0, 0], floor=0.0, draws=20_000, rng=np.random.default_rng(9))

    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, [0.5, 0.5], atol=0.02)


def test_thompson_weights__floor_above_even_split__is_refused():
    with pytest.raises(ValueError, match="floor"):
        thompson_weights([1, 2, 3], [10, 10, 10], floor=0.4, rng=np.random.default_rng(0))
