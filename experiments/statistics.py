"""Experiment statistics: power analysis, fixed-horizon, sequential and Bayesian analysis, SRM, Thompson sampling.

Conventions follow GrowthBook's gbstats (packages/stats/gbstats) so results can be checked
against theirs:

- ``a`` is the control, ``b`` the variant; the effect is ``b - a``, or ``(b - a) / a`` when
  ``relative=True``.
- A proportion arm's variance is the Bernoulli ``p(1 - p)`` (no ddof correction); a mean arm's is
  the sample variance (ddof=1) from its sum and sum of squares.
- The variance of the relative lift comes from the delta method,
  ``var_b / (mean_a² n_b) + var_a mean_b² / (mean_a⁴ n_a)``, and the t distribution uses the
  Welch–Satterthwaite degrees of freedom of the arms' variances.

All analyses are vectorised like ``rules.statistics`` (on which they are built): pass arrays to
analyse many variants / metrics / peeks at once. NaN p-values mean "insufficient data".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import numpy as np
from scipy import special, stats

from rules.statistics import estimate_test, scalar_or_array, welch_df, z_for_confidence

# GrowthBook's default SRM threshold: below this p-value the observed split is treated as
# broken assignment, and no decision may be taken from the experiment.
SRM_P_VALUE_THRESHOLD = 0.001

# GrowthBook's default sequential tuning parameter: the (combined) sample size at which the
# confidence sequence is tightest.
DEFAULT_SEQUENTIAL_TARGET_N = 5000


class Decision(StrEnum):
    TREATMENT_BETTER = "treatment_better"
    CONTROL_BETTER = "control_better"
    INCONCLUSIVE = "inconclusive"
    INSUFFICIENT_DATA = "insufficient_data"


@dataclass(frozen=True)
class EffectResult:
    """Frequentist outcome: effect with its interval (a confidence sequence when sequential)."""

    effect: np.ndarray | float
    ci_low: np.ndarray | float
    ci_high: np.ndarray | float
    p_value: np.ndarray | float
    decision: np.ndarray | Decision


@dataclass(frozen=True)
class BayesianResult:
    """Posterior of the relative lift; risks are expected relative losses of shipping each arm."""

    lift: np.ndarray | float
    ci_low: np.ndarray | float
    ci_high: np.ndarray | float
    chance_to_win: np.ndarray | float
    risk_control: np.ndarray | float
    risk_treatment: np.ndarray | float
    decision: np.ndarray | Decision


class _Arm(NamedTuple):
    mean: np.ndarray
    var: np.ndarray
    n: np.ndarray


class _Effect(NamedTuple):
    estimate: np.ndarray
    se: np.ndarray
    df: np.ndarray


# --- power analysis --------------------------------------------------------------------------


def sample_size_per_arm(
    baseline_rate: float, relative_mde: float, *, alpha: float = 0.05, power: float = 0.8, two_sided: bool = True
) -> int:
    """Users per arm to detect a relative change of a conversion rate (Evan Miller's calculator).

    n = (z_α·sqrt(2 p(1-p)) + z_β·sqrt(p(1-p) + p'(1-p')))² / δ², with p the baseline, p' = p + δ,
    δ = p·relative_mde: the standard deviation under H0 (both arms at p) for the rejection
    threshold and under H1 for the power. Rounded to the nearest integer as the calculator shows
    it (20%, +10% relative → 6,347.06 → 6,347).
    """
    delta = baseline_rate * relative_mde
    treated_rate = baseline_rate + delta
    if not (0 < baseline_rate < 1 and 0 < treated_rate < 1) or delta == 0:
        raise ValueError("baseline_rate and baseline_rate * (1 + relative_mde) must be distinct rates in (0, 1)")
    z_alpha = z_for_confidence(1 - alpha, "two-sided" if two_sided else "larger")
    z_beta = stats.norm.ppf(power)
    sd_null = math.sqrt(2 * baseline_rate * (1 - baseline_rate))
    sd_alternative = math.sqrt(baseline_rate * (1 - baseline_rate) + treated_rate * (1 - treated_rate))
    return round((z_alpha * sd_null + z_beta * sd_alternative) ** 2 / delta**2)


def expected_duration_days(n_per_arm: int, arms: int, daily_traffic: float) -> int:
    """Whole days until every arm has ``n_per_arm`` users, with ``daily_traffic`` users a day split over the arms."""
    if daily_traffic <= 0:
        raise ValueError("daily_traffic must be positive")
    return math.ceil(n_per_arm * arms / daily_traffic)


def normal_power(effect_size, n1, *, ratio: float = 1.0, alpha: float = 0.05, two_sided: bool = True):
    """Power of a two-sample z-test for a standardised effect (statsmodels ``NormalIndPower``).

    ``n1`` is the first arm's size, ``n1 * ratio`` the second's. The two-sided power counts both
    rejection tails, as statsmodels does.
    """
    effect_size, n1 = np.broadcast_arrays(np.asarray(effect_size, dtype=float), np.asarray(n1, dtype=float))
    shift = effect_size * np.sqrt(1 / (1 / n1 + 1 / (n1 * ratio)))
    crit = z_for_confidence(1 - alpha, "two-sided" if two_sided else "larger")
    power = stats.norm.sf(crit - shift)
    if two_sided:
        power = power + stats.norm.cdf(-crit - shift)
    return scalar_or_array(power)


# --- fixed-horizon frequentist ---------------------------------------------------------------


def frequentist_proportions(x_a, n_a, x_b, n_b, *, alpha: float = 0.05, relative: bool = True) -> EffectResult:
    """Fixed-horizon t-test of conversion rates (gbstats ``TwoSidedTTest`` on proportion statistics)."""
    return _frequentist(_effect(_proportion_arm(x_a, n_a), _proportion_arm(x_b, n_b), relative), alpha)


def frequentist_means(
    sum_a, sum_sq_a, n_a, sum_b, sum_sq_b, n_b, *, alpha: float = 0.05, relative: bool = True
) -> EffectResult:
    """Fixed-horizon Welch t-test of means given per-arm sums and sums of squares."""
    arm_a, arm_b = _sample_arm(sum_a, sum_sq_a, n_a), _sample_arm(sum_b, sum_sq_b, n_b)
    return _frequentist(_effect(arm_a, arm_b, relative), alpha)


def _frequentist(effect: _Effect, alpha: float) -> EffectResult:
    test = estimate_test(effect.estimate, effect.se, df=effect.df, confidence=1 - alpha)
    return EffectResult(
        effect=test.diff,
        ci_low=test.ci_low,
        ci_high=test.ci_high,
        p_value=test.p_value,
        decision=_decision(test.ci_low > 0, test.ci_high < 0, test.p_value),
    )


# --- sequential (always-valid) ---------------------------------------------------------------


def sequential_proportions(
    x_a, n_a, x_b, n_b, *, alpha: float = 0.05, target_n: float = DEFAULT_SEQUENTIAL_TARGET_N, relative: bool = True
) -> EffectResult:
    """Always-valid analysis of conversion rates: safe to look after every batch of data."""
    arm_a, arm_b = _proportion_arm(x_a, n_a), _proportion_arm(x_b, n_b)
    return _sequential(_effect(arm_a, arm_b, relative), arm_a.n + arm_b.n, alpha, target_n)


def sequential_means(
    sum_a,
    sum_sq_a,
    n_a,
    sum_b,
    sum_sq_b,
    n_b,
    *,
    alpha: float = 0.05,
    target_n: float = DEFAULT_SEQUENTIAL_TARGET_N,
    relative: bool = True,
) -> EffectResult:
    """Always-valid analysis of means given per-arm sums and sums of squares."""
    arm_a, arm_b = _sample_arm(sum_a, sum_sq_a, n_a), _sample_arm(sum_b, sum_sq_b, n_b)
    return _sequential(_effect(arm_a, arm_b, relative), arm_a.n + arm_b.n, alpha, target_n)


def _sequential(effect: _Effect, n_total, alpha: float, target_n: float) -> EffectResult:
    """Asymptotic normal-mixture confidence sequence (Howard et al. 2021; Waudby-Smith et al. 2023).

    With σ² the per-observation variance (se² · n, as gbstats does for two samples) and mixing
    parameter ρ, the half-width at n observations is
        σ · sqrt( (n ρ² + 1) / (n² ρ²) · log((n ρ² + 1) / α²) )
    (Waudby-Smith et al. 2023, "Time-uniform central limit theory and asymptotic confidence
    sequences", eq. 9; the same as gbstats ``sequential_interval_halfwidth``), valid
    simultaneously for every n, so peeking does not inflate the error rate. ρ is chosen to make
    the sequence tightest at ``target_n`` (ibid., eq. 161).

    The p-value is the always-valid one, 1 / (mixture martingale) capped at 1, which is ≤ α
    exactly when the confidence sequence excludes 0.
    """
    rho2 = _sequential_rho_squared(alpha, target_n)
    n = np.asarray(n_total, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        sigma2 = effect.se**2 * n
        growth = n * rho2 + 1
        half_width = np.sqrt(sigma2 * growth / (n**2 * rho2) * np.log(growth / alpha**2))
        log_martingale = n**2 * rho2 * effect.estimate**2 / (2 * sigma2 * growth) - 0.5 * np.log(growth)
        p_value = np.minimum(1.0, np.exp(-log_martingale))
    ci_low, ci_high = effect.estimate - half_width, effect.estimate + half_width
    return EffectResult(
        effect=scalar_or_array(effect.estimate),
        ci_low=scalar_or_array(ci_low),
        ci_high=scalar_or_array(ci_high),
        p_value=scalar_or_array(p_value),
        decision=_decision(ci_low > 0, ci_high < 0, p_value),
    )


def _sequential_rho_squared(alpha: float, target_n: float) -> float:
    if not (0 < alpha < 1) or target_n <= 0:
        raise ValueError("alpha must be in (0, 1) and target_n positive")
    log_alpha = math.log(alpha)
    return (-2 * log_alpha + math.log(-2 * log_alpha + 1)) / target_n


# --- Bayesian --------------------------------------------------------------------------------


def bayesian_proportions(x_a, n_a, x_b, n_b, *, alpha: float = 0.05, win_threshold: float = 0.95) -> BayesianResult:
    """Gaussian posterior of the relative lift of conversion rates under a flat prior (gbstats)."""
    effect = _effect(_proportion_arm(x_a, n_a), _proportion_arm(x_b, n_b), relative=True)
    return _bayesian(effect, alpha, win_threshold)


def bayesian_means(
    sum_a, sum_sq_a, n_a, sum_b, sum_sq_b, n_b, *, alpha: float = 0.05, win_threshold: float = 0.95
) -> BayesianResult:
    """Gaussian posterior of the relative lift of means under a flat prior (gbstats)."""
    arm_a, arm_b = _sample_arm(sum_a, sum_sq_a, n_a), _sample_arm(sum_b, sum_sq_b, n_b)
    return _bayesian(_effect(arm_a, arm_b, relative=True), alpha, win_threshold)


def _bayesian(effect: _Effect, alpha: float, win_threshold: float) -> BayesianResult:
    """Posterior lift ~ N(estimate, se²): with a flat prior the posterior is the likelihood.

    Risks are the expected losses E[max(lift, 0)] (shipping control) and E[max(-lift, 0)]
    (shipping the variant), closed forms of the normal's partial expectations.
    """
    mu, sd = effect.estimate, effect.se
    z = mu / sd
    half_width = z_for_confidence(1 - alpha) * sd
    chance_to_win = stats.norm.cdf(z)
    risk_control = sd * stats.norm.pdf(z) + mu * stats.norm.cdf(z)
    risk_treatment = sd * stats.norm.pdf(z) - mu * stats.norm.cdf(-z)
    return BayesianResult(
        lift=scalar_or_array(mu),
        ci_low=scalar_or_array(mu - half_width),
        ci_high=scalar_or_array(mu + half_width),
        chance_to_win=scalar_or_array(chance_to_win),
        risk_control=scalar_or_array(risk_control),
        risk_treatment=scalar_or_array(risk_treatment),
        decision=_decision(chance_to_win >= win_threshold, chance_to_win <= 1 - win_threshold, chance_to_win),
    )


def prob_b_beats_a(x_a, n_a, x_b, n_b):
    """Exact P(p_b > p_a) for Beta(1 + x, 1 + n - x) posteriors (uniform Beta(1, 1) priors).

    Evan Miller's closed form (https://www.evanmiller.org/bayesian-ab-testing.html):
        P(X > Y) = Σ_{i=0}^{α_X-1} B(α_Y + i, β_X + β_Y) / ((β_X + i) B(1 + i, β_X) B(α_Y, β_Y))
    for X ~ Beta(α_X, β_X), Y ~ Beta(α_Y, β_Y). The sum has α_X terms, so each pair is summed over
    whichever of its four parameters is smallest, by symmetry: P(B > A) = 1 - P(A > B), and
    P(B > A) = P(1 - A > 1 - B) with 1 - p ~ Beta(β, α). Cost is O(smallest count) per pair.
    """
    x_a, n_a, x_b, n_b = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x_a, n_a, x_b, n_b)))
    alpha_a, beta_a, alpha_b, beta_b = x_a + 1, n_a - x_a + 1, x_b + 1, n_b - x_b + 1
    # Each orientation is (a1, b1, a2, b2) of a P(X > Y) summed over a1 terms;
    # `complement` marks those that give 1 - P(B > A).
    orientations = np.stack(
        [
            (alpha_b, beta_b, alpha_a, beta_a),  # P(B > A)
            (alpha_a, beta_a, alpha_b, beta_b),  # P(A > B) = 1 - P(B > A)
            (beta_a, alpha_a, beta_b, alpha_b),  # P(1 - A > 1 - B) = P(B > A)
            (beta_b, alpha_b, beta_a, alpha_a),  # P(1 - B > 1 - A) = 1 - P(B > A)
        ]
    )  # shape (4, 4, *batch)
    complement = np.array([False, True, False, True])
    best = np.argmin(orientations[:, 0], axis=0)
    a1, b1, a2, b2 = np.take_along_axis(orientations, best[None, None], axis=0)[0]
    p = _prob_x_greater(a1, b1, a2, b2)
    return scalar_or_array(np.where(complement[best], 1 - p, p))


def _prob_x_greater(a1, b1, a2, b2) -> np.ndarray:
    """P(X > Y), X ~ Beta(a1, b1), Y ~ Beta(a2, b2), integer a1, summed over a padded term grid."""
    i = np.arange(int(a1.max(initial=1)))
    terms = np.exp(
        special.betaln(a2[..., None] + i, (b1 + b2)[..., None])
        - np.log(b1[..., None] + i)
        - special.betaln(1 + i, b1[..., None])
        - special.betaln(a2, b2)[..., None]
    )
    return np.where(i < a1[..., None], terms, 0.0).sum(axis=-1)


# --- sample ratio mismatch -------------------------------------------------------------------


def srm_check(counts, weights) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Chi-squared goodness of fit of observed arm counts to the intended split (gbstats ``check_srm``).

    ``counts`` has the arms on its last axis (leading axes are independent experiments);
    ``weights`` are the intended traffic shares, any positive scale. Returns (χ², p-value); the
    p-value is NaN when no user has been counted.
    """
    counts = np.asarray(counts, dtype=float)
    weights = np.asarray(weights, dtype=float)
    if (weights <= 0).any():
        raise ValueError("weights must be positive; leave arms that receive no traffic out")
    total = counts.sum(axis=-1, keepdims=True)
    expected = weights / weights.sum(axis=-1, keepdims=True) * total
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(total[..., 0] > 0, ((counts - expected) ** 2 / expected).sum(axis=-1), np.nan)
    p_value = stats.chi2.sf(chi2, counts.shape[-1] - 1)
    return scalar_or_array(chi2), scalar_or_array(p_value)


def srm_blocks_decision(p_value, *, threshold: float = SRM_P_VALUE_THRESHOLD):
    """True where the split is implausible enough that the experiment's results must not be acted on."""
    return np.asarray(p_value) < threshold


# --- bandit allocation -----------------------------------------------------------------------


def thompson_weights(successes, trials, *, floor: float, draws: int = 10_000, rng: np.random.Generator) -> np.ndarray:
    """Traffic weights proportional to each arm's posterior probability of being best.

    Monte Carlo over Beta(1 + successes, 1 + failures) posteriors; every arm then keeps at least
    ``floor`` of the traffic (so a losing arm still gathers data and the estimates stay honest),
    the rest shared by probability of being best. Weights sum to 1.
    """
    successes = np.asarray(successes, dtype=float)
    trials = np.asarray(trials, dtype=float)
    arms = successes.shape[-1]
    if not 0 <= floor * arms <= 1:
        raise ValueError(f"floor must be between 0 and 1/{arms} for {arms} arms")
    samples = rng.beta(1 + successes, 1 + trials - successes, size=(draws, arms))
    prob_best = np.bincount(samples.argmax(axis=1), minlength=arms) / draws
    return floor + (1 - floor * arms) * prob_best


# --- helpers ---------------------------------------------------------------------------------


def _proportion_arm(successes, trials) -> _Arm:
    successes, trials = np.broadcast_arrays(np.asarray(successes, dtype=float), np.asarray(trials, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = successes / trials
    return _Arm(mean, mean * (1 - mean), trials)


def _sample_arm(total, total_sq, n) -> _Arm:
    total, total_sq, n = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (total, total_sq, n)))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / n
        # Clip the rounding error of constant data (sum_sq - sum²/n ≈ -1e-12) to a zero variance.
        var = np.maximum((total_sq - total * mean) / (n - 1), 0.0)
    return _Arm(mean, var, n)


def _effect(arm_a: _Arm, arm_b: _Arm, relative: bool) -> _Effect:
    """Absolute or relative (delta-method) effect of b over a, its standard error and Welch df."""
    valid = (arm_a.n >= 2) & (arm_b.n >= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        se2_a, se2_b = arm_a.var / arm_a.n, arm_b.var / arm_b.n
        if relative:
            valid &= arm_a.mean != 0
            estimate = (arm_b.mean - arm_a.mean) / arm_a.mean
            variance = se2_b / arm_a.mean**2 + se2_a * arm_b.mean**2 / arm_a.mean**4
        else:
            estimate = arm_b.mean - arm_a.mean
            variance = se2_a + se2_b
        se = np.sqrt(variance)  # NaN, silently, for impossible input such as successes > trials
    # A zero variance (e.g. no conversions in either arm) says nothing about the effect's uncertainty.
    valid &= variance > 0
    df = np.asarray(welch_df(arm_a.var, arm_a.n, arm_b.var, arm_b.n))
    return _Effect(np.where(valid, estimate, np.nan), np.where(valid, se, np.nan), df)


def _decision(treatment_better, control_better, evidence) -> np.ndarray | Decision:
    """Decision per element; NaN evidence (p-value or chance to win) means insufficient data."""
    decision = np.select(
        [np.isnan(evidence), treatment_better, control_better],
        [Decision.INSUFFICIENT_DATA.value, Decision.TREATMENT_BETTER.value, Decision.CONTROL_BETTER.value],
        default=Decision.INCONCLUSIVE.value,
    )
    return Decision(str(decision)) if decision.ndim == 0 else decision
