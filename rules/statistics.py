"""Vectorised significance tests and control limits used by rule triggers and experiments.

Every function takes scalars or array-likes, broadcasts them together, and evaluates all
segments in one numpy pass (a rule may look at thousands of segments per evaluation).

Degenerate inputs — zero trials, fewer than two observations, zero variance — do not raise and
do not warn: the affected elements come back as NaN, and callers treat a NaN p-value as
"insufficient data" (never as significant).

Sign convention: ``a`` is the baseline, ``b`` the current window / variant, and
``diff = b - a``. statsmodels' ``proportions_ztest`` reports ``p1 - p2``, so for the same data
our statistic has the opposite sign (and "larger" means b > a).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
from scipy import special, stats

Alternative = Literal["two-sided", "larger", "smaller"]
ALTERNATIVES: tuple[str, ...] = ("two-sided", "larger", "smaller")


@dataclass(frozen=True)
class TestResult:
    """Outcome of a two-sample test; each field is an array (a float when all inputs were scalars).

    ``diff`` is ``b - a``; ``[ci_low, ci_high]`` is its confidence interval at the requested
    confidence, one-sided (an infinite end) when the alternative is one-sided. For the t and
    Wald tests the interval excludes 0 exactly when ``p_value < 1 - confidence``; the z-test's
    interval uses the unpooled standard error, so right at the margin the two may disagree.
    """

    __test__ = False  # not a pytest test class, despite the name

    statistic: np.ndarray | float
    p_value: np.ndarray | float
    diff: np.ndarray | float
    ci_low: np.ndarray | float
    ci_high: np.ndarray | float


def scalar_or_array(x: np.ndarray) -> np.ndarray | float:
    """0-d results go back to the caller as plain floats."""
    x = np.asarray(x, dtype=float)
    return float(x) if x.ndim == 0 else x


@cache  # a cycle asks for the same few values hundreds of times, and SciPy's scalar call costs ~0.1 ms
def z_for_confidence(confidence: float, alternative: Alternative = "two-sided") -> float:
    """Standard-normal critical value: 1.959964 for 95% two-sided, 1.644854 for 95% one-sided."""
    _check_alternative(alternative)
    tail = 1.0 - confidence
    return float(stats.norm.isf(tail / 2 if alternative == "two-sided" else tail))


def two_proportion_ztest(
    successes_a,
    trials_a,
    successes_b,
    trials_b,
    *,
    confidence: float = 0.95,
    alternative: Alternative = "two-sided",
) -> TestResult:
    """Two-proportion z-test of rate b against rate a.

    The statistic uses the pooled standard error (the H0 of equal rates; statsmodels'
    ``proportions_ztest`` convention), the interval of the difference the unpooled one (no H0 to
    lean on), as in Newcombe's "Wald" interval.
    """
    _check_alternative(alternative)
    x_a, n_a, x_b, n_b = np.broadcast_arrays(*_floats(successes_a, trials_a, successes_b, trials_b))
    valid = (n_a > 0) & (n_b > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_a, p_b = x_a / n_a, x_b / n_b
        pooled = (x_a + x_b) / (n_a + n_b)
        se_pooled = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
        se_unpooled = np.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
        diff = np.where(valid, p_b - p_a, np.nan)
        statistic = diff / _positive_or_nan(se_pooled)
    p_value = _p_value(statistic, alternative, _normal_sf)
    crit = z_for_confidence(confidence, alternative)
    ci_low, ci_high = _interval(diff, _positive_or_nan(se_unpooled), crit, alternative)
    return _result(statistic, p_value, diff, ci_low, ci_high)


def welch_ttest(
    mean_a,
    var_a,
    n_a,
    mean_b,
    var_b,
    n_b,
    *,
    confidence: float = 0.95,
    alternative: Alternative = "two-sided",
) -> TestResult:
    """Welch's unequal-variance t-test of mean b against mean a, from summary moments.

    ``var_*`` are sample variances (ddof=1). Degrees of freedom by Welch–Satterthwaite; equals
    ``scipy.stats.ttest_ind_from_stats(..., equal_var=False)`` with a and b swapped.
    """
    m_a, v_a, n_a, m_b, v_b, n_b = np.broadcast_arrays(*_floats(mean_a, var_a, n_a, mean_b, var_b, n_b))
    valid = (n_a >= 2) & (n_b >= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.where(valid, np.sqrt(v_a / n_a + v_b / n_b), np.nan)
    diff = np.where(valid, m_b - m_a, np.nan)
    return estimate_test(diff, se, df=welch_df(v_a, n_a, v_b, n_b), confidence=confidence, alternative=alternative)


def welch_df(var_a, n_a, var_b, n_b) -> np.ndarray | float:
    """Welch–Satterthwaite degrees of freedom; NaN when both variances are 0 or an arm has n < 2."""
    v_a, n_a, v_b, n_b = np.broadcast_arrays(*_floats(var_a, n_a, var_b, n_b))
    with np.errstate(divide="ignore", invalid="ignore"):
        w_a, w_b = v_a / n_a, v_b / n_b  # squared standard errors of each mean
        df = (w_a + w_b) ** 2 / (w_a**2 / (n_a - 1) + w_b**2 / (n_b - 1))
    return scalar_or_array(np.where((n_a >= 2) & (n_b >= 2) & np.isfinite(df), df, np.nan))


def estimate_test(
    estimate,
    se,
    *,
    df=None,
    confidence: float = 0.95,
    alternative: Alternative = "two-sided",
) -> TestResult:
    """Wald-type test of ``estimate`` against 0 given its standard error.

    Student t with ``df`` degrees of freedom (may vary per element), standard normal when ``df``
    is None. The building block for effects whose standard error comes from elsewhere, e.g. a
    relative lift by the delta method.
    """
    _check_alternative(alternative)
    estimate, se = np.broadcast_arrays(*_floats(estimate, se))
    se = _positive_or_nan(se)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = estimate / se
    if df is None:
        p_value, crit = _p_value(statistic, alternative, _normal_sf), z_for_confidence(confidence, alternative)
    else:
        dist, tail = stats.t(np.asarray(df, dtype=float)), 1.0 - confidence
        p_value = _p_value(statistic, alternative, dist.sf)
        crit = dist.isf(tail / 2 if alternative == "two-sided" else tail)
    ci_low, ci_high = _interval(estimate, se, crit, alternative)
    return _result(statistic, p_value, estimate, ci_low, ci_high)


def p_chart_limits(p_bar, n, *, k: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Shewhart p-chart limits ``p̄ ± k·sqrt(p̄(1-p̄)/n)``, clipped to [0, 1]; NaN where n <= 0.

    n may vary per sample (per segment), which gives the usual stepped limits.
    """
    p_bar, n = np.broadcast_arrays(*_floats(p_bar, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(n > 0, np.sqrt(p_bar * (1 - p_bar) / n), np.nan)
    lcl = np.clip(p_bar - k * sigma, 0.0, 1.0)
    ucl = np.clip(p_bar + k * sigma, 0.0, 1.0)
    return scalar_or_array(lcl), scalar_or_array(ucl)


def k_sigma_limits(mean, std, *, k: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Control limits ``mean ± k·std`` (individuals / Shewhart chart on a baseline's moments)."""
    mean, std = np.broadcast_arrays(*_floats(mean, std))
    std = np.where(std >= 0, std, np.nan)
    return scalar_or_array(mean - k * std), scalar_or_array(mean + k * std)


# --- helpers ---------------------------------------------------------------------------------


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, not {alternative!r}")


def _floats(*values) -> list[np.ndarray]:
    return [np.asarray(v, dtype=float) for v in values]


def _positive_or_nan(se: np.ndarray) -> np.ndarray:
    """A zero standard error carries no information about the difference: report NaN, not ±inf."""
    return np.where(se > 0, se, np.nan)


def _p_value(statistic: np.ndarray, alternative: str, sf) -> np.ndarray:
    """From the survival function of a distribution symmetric about 0 (normal, t), whose cdf(x) is sf(-x)."""
    if alternative == "larger":
        return sf(statistic)
    if alternative == "smaller":
        return sf(-statistic)
    return 2 * sf(np.abs(statistic))


def _normal_sf(x: np.ndarray) -> np.ndarray:
    """`stats.norm.sf`, without its generic argument checks (a sixth of the time on a cycle's arrays)."""
    return special.ndtr(-x)


def _interval(diff, se, crit, alternative: str) -> tuple[np.ndarray, np.ndarray]:
    """Interval consistent with the test: one-sided alternatives get an infinite end."""
    half_width = crit * se
    low, high = diff - half_width, diff + half_width
    if alternative == "larger":
        high = np.where(np.isnan(high), np.nan, np.inf)
    elif alternative == "smaller":
        low = np.where(np.isnan(low), np.nan, -np.inf)
    return low, high


def _result(statistic, p_value, diff, ci_low, ci_high) -> TestResult:
    return TestResult(*(scalar_or_array(v) for v in (statistic, p_value, diff, ci_low, ci_high)))
