"""Confidence intervals shown on the dashboards, vectorised over groups (campaigns, segments).

- Rates (CVR = conversions / clicks, CTR = clicks / impressions): the Wilson score interval. Each
  click is a Bernoulli trial, and unlike the normal (Wald) interval Wilson stays inside [0, 1] and
  keeps its coverage for the small counts and rates near 0 that segments have.
- Ratios of two sums (CPA = spend / conversions, ROAS = revenue / spend): neither part is a count of
  trials, and both vary from bucket to bucket, so the interval is the delta method for a ratio
  metric over the per-bucket totals (Deng, Knoblich & Lu 2018, "Applying the Delta Method in Metric
  Analytics"): with n buckets of numerator y_i and denominator x_i, R = sum(y) / sum(x) and

      Var(R) ≈ (s_yy − 2 R s_xy + R² s_xx) / (n x̄²)

  where s are the sample (co)variances across buckets. It needs at least 2 buckets with some
  denominator; otherwise the bounds are NaN ("no interval"), never a made-up width.
"""

from statistics import NormalDist

import numpy as np

DEFAULT_CONFIDENCE = 0.95


def z_value(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes, trials, *, confidence: float = DEFAULT_CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for successes / trials; NaN where there is no trial."""
    x, n = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    z = z_value(confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = x / n
        denominator = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    valid = n > 0
    return np.where(valid, centre - half, np.nan), np.where(valid, centre + half, np.nan)


def ratio_delta_interval(
    n, sum_x, sum_y, sum_xx, sum_yy, sum_xy, *, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ratio, low, high) of sum(y) / sum(x) from per-group moments of the per-bucket totals."""
    n, sx, sy, sxx, syy, sxy = (np.asarray(v, dtype=float) for v in (n, sum_x, sum_y, sum_xx, sum_yy, sum_xy))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sx > 0, sy / sx, np.nan)
        mean_x, mean_y = sx / n, sy / n
        var_x = (sxx - n * mean_x**2) / (n - 1)
        var_y = (syy - n * mean_y**2) / (n - 1)
        cov_xy = (sxy - n * mean_x * mean_y) / (n - 1)
        variance = (var_y - 2 * ratio * cov_xy + ratio**2 * var_x) / (n * mean_x**2)
        half = z_value(confidence) * np.sqrt(np.maximum(variance, 0))
    valid = (n >= 2) & (sx > 0)
    # Spend and revenue are never negative: neither is the ratio, whatever the normal approximation says.
    return ratio, np.where(valid, np.maximum(ratio - half, 0), np.nan), np.where(valid, ratio + half, np.nan)
