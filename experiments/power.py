"""Power analysis before launch: the sample each arm needs, and how long the campaign's traffic takes to give it.

The baseline and the traffic are those of the campaign over the last 7 days (every segment,
every variant), so the estimate follows the campaign as it is now.

- A rate (CTR, CVR, ...) is tested on its trials: the sample is counted in its denominator
  (impressions, clicks, ...) and sized with Evan Miller's formula (`sample_size_per_arm`).
- A ratio (CPA, ROAS, ...) is tested on its per-bucket values (one observation per segment and
  bucket): the sample is counted in observations and sized with the two-sample normal formula
  n = 2 ((z_α/2 + z_β) σ / δ)², σ the spread of those values, δ the MDE times their mean.

With several variants each comparison with the control is tested at α / (number of
variants) (Bonferroni), so the plan is sized at that level too. The slowest arm sets the
duration: the one with the smallest share of the traffic.
"""

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
from scipy import stats

from campaigns.metrics import DerivedMetric, MetricKind, get_metric
from rules.statistics import z_for_confidence

from .models import Experiment, Variant
from .selectors import campaign_bucket_counters
from .statistics import expected_duration_days, sample_size_per_arm

HISTORY_DAYS = 7


@dataclass(frozen=True)
class PowerAnalysis:
    metric: str
    unit: str  # what the sample counts: the rate's denominator, or "segment-buckets" for a ratio
    baseline: float | None
    daily_sample: float  # of the whole campaign, per day, over the last HISTORY_DAYS days
    smallest_arm_share: float
    alpha_per_comparison: float
    sample_per_arm: int | None
    expected_days: int | None
    problem: str = ""  # why no plan could be made (no traffic, a baseline at 0 or 100%)

    def as_dict(self) -> dict:
        return asdict(self)


def campaign_power_analysis(experiment: Experiment, variants: list[Variant], *, now: datetime) -> PowerAnalysis:
    """The plan from the campaign's traffic in the HISTORY_DAYS days before `now`."""
    metric = get_metric(experiment.primary_metric)
    history = campaign_bucket_counters(campaign_id=experiment.campaign_id, start=now - timedelta(days=HISTORY_DAYS),
                                       end=now, counters={metric.numerator, metric.denominator})
    return power_analysis(experiment, variants, history)


def comparison_alpha(experiment: Experiment, arm_count: int) -> float:
    """The level each variant-vs-control comparison is tested at (Bonferroni over the variants)."""
    return float(experiment.alpha) / max(1, arm_count - 1)


def smallest_share(variants: list[Variant]) -> float:
    total = sum((v.weight for v in variants), Decimal(0))
    return float(min(v.weight for v in variants) / total) if total > 0 else 0.0


def power_analysis(experiment: Experiment, variants: list[Variant], history: pd.DataFrame) -> PowerAnalysis:
    """The plan from `history`: the campaign's counters per (segment, bucket) over the last HISTORY_DAYS days."""
    metric = get_metric(experiment.primary_metric)
    alpha = comparison_alpha(experiment, len(variants))
    share = smallest_share(variants)
    if metric.kind == MetricKind.RATE:
        baseline, daily, n, problem = _rate_plan(experiment, metric, history, alpha)
        unit = metric.denominator
    else:
        baseline, daily, n, problem = _ratio_plan(experiment, metric, history, alpha)
        unit = "segment-buckets"
    days = None
    if n is not None and daily * share > 0:
        days = expected_duration_days(n, 1, daily * share)
    elif not problem:
        problem = "The campaign had no traffic in the last 7 days: the duration cannot be estimated."
    return PowerAnalysis(metric=metric.name, unit=unit, baseline=baseline, daily_sample=daily,
                         smallest_arm_share=share, alpha_per_comparison=alpha, sample_per_arm=n,
                         expected_days=days, problem=problem)


def _rate_plan(experiment: Experiment, metric: DerivedMetric, history: pd.DataFrame, alpha: float):
    trials = float(history[metric.denominator].sum()) if len(history) else 0.0
    daily = trials / HISTORY_DAYS
    if trials <= 0:
        return None, daily, None, "The campaign had no traffic in the last 7 days: there is no baseline."
    baseline = float(history[metric.numerator].sum()) / trials
    try:
        n = sample_size_per_arm(baseline, _mde(experiment), alpha=alpha, power=float(experiment.power))
    except ValueError:
        return baseline, daily, None, (f"A baseline {metric.label.lower()} of {baseline:.2%} leaves no room for "
                                       f"a {experiment.minimum_detectable_effect_pct}% change.")
    return baseline, daily, n, ""


def _ratio_plan(experiment: Experiment, metric: DerivedMetric, history: pd.DataFrame, alpha: float):
    values = ratio_observations(metric, history)
    daily = len(values) / HISTORY_DAYS
    if len(values) < 2 or values.mean() == 0:
        return None, daily, None, "Too few buckets with data in the last 7 days to estimate the spread."
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    z = z_for_confidence(1 - alpha) + stats.norm.ppf(float(experiment.power))
    n = math.ceil(2 * (z * sd / (_mde(experiment) * mean)) ** 2)
    return mean, daily, max(n, 2), ""


def ratio_observations(metric: DerivedMetric, frame: pd.DataFrame) -> np.ndarray:
    """One value of a ratio metric per row (segment and bucket) that has a denominator."""
    if not len(frame):
        return np.array([])
    denominator = frame[metric.denominator].to_numpy(dtype=float)
    numerator = frame[metric.numerator].to_numpy(dtype=float)
    has_data = denominator > 0
    return metric.scale * numerator[has_data] / denominator[has_data]


def _mde(experiment: Experiment) -> float:
    return float(experiment.minimum_detectable_effect_pct) / 100
