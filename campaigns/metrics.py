"""The one registry of derived metrics.

Each metric is a numerator over a denominator of summed counters, so that any
aggregation (segment, campaign, channel, window) is sum(numerator) / sum(denominator)
and the statistics know their sample size: for a *rate* the denominator is the number
of Bernoulli trials (a two-proportion test applies); for a *ratio* it is not, and tests
on per-bucket values apply instead.
"""

from dataclasses import dataclass
from enum import StrEnum


class MetricKind(StrEnum):
    RATE = "rate"  # successes / trials, in [0, 1]
    RATIO = "ratio"  # any non-negative quotient


@dataclass(frozen=True)
class DerivedMetric:
    name: str
    label: str
    numerator: str
    denominator: str
    kind: MetricKind
    scale: float = 1.0
    higher_is_better: bool = True
    unit: str = ""

    def value(self, numerator: float, denominator: float) -> float | None:
        if not denominator:
            return None
        return self.scale * numerator / denominator


DERIVED_METRICS: dict[str, DerivedMetric] = {
    m.name: m
    for m in (
        DerivedMetric("ctr", "Click-through rate", "clicks", "impressions", MetricKind.RATE, unit="%"),
        DerivedMetric("cvr", "Conversion rate", "conversions", "clicks", MetricKind.RATE, unit="%"),
        DerivedMetric("micro_conversion_rate", "Micro-conversion rate", "micro_conversions", "sessions",
                      MetricKind.RATE, unit="%"),
        DerivedMetric("bounce_rate", "Bounce rate", "bounces", "sessions", MetricKind.RATE,
                      higher_is_better=False, unit="%"),
        DerivedMetric("video_completion_rate", "Video completion rate", "video_completions", "video_starts",
                      MetricKind.RATE, unit="%"),
        DerivedMetric("cpa", "Cost per acquisition", "spend", "conversions", MetricKind.RATIO,
                      higher_is_better=False, unit="currency"),
        DerivedMetric("cpc", "Cost per click", "spend", "clicks", MetricKind.RATIO, higher_is_better=False,
                      unit="currency"),
        DerivedMetric("cpm", "Cost per mille", "spend", "impressions", MetricKind.RATIO, scale=1000.0,
                      higher_is_better=False, unit="currency"),
        DerivedMetric("roas", "Return on ad spend", "revenue", "spend", MetricKind.RATIO, unit="x"),
        DerivedMetric("avg_dwell", "Average dwell time", "engaged_seconds", "sessions", MetricKind.RATIO,
                      unit="s"),
        DerivedMetric("spend_pace", "Spend pace (spend / pro-rated budget)", "spend", "budget",
                      MetricKind.RATIO, higher_is_better=False, unit="x"),
    )
}
# `budget` is not a stored counter: the engine derives it as the daily budget pro-rated
# over the buckets of the window, so pacing uses the same numerator/denominator maths.
VIRTUAL_DENOMINATORS = {"budget"}


def get_metric(name: str) -> DerivedMetric:
    try:
        return DERIVED_METRICS[name]
    except KeyError:
        known = ", ".join(sorted(DERIVED_METRICS))
        raise KeyError(f"Unknown metric “{name}”. Known metrics: {known}.") from None


def metric_choices() -> list[tuple[str, str]]:
    return [(m.name, m.label) for m in DERIVED_METRICS.values()]
