"""Evaluating one trigger for every segment at once, over its last N windows.

Window k (0 = the latest) covers buckets [E-(k+1)w, E-kw) of the grid, and its baseline the
`b` buckets just before it. Every kind returns, per segment and window, the numbers that
decided it and a status: passed, failed, or insufficient data (too small a sample, a zero
baseline, no variance: never treated as passing).

Everything is computed from range sums for all segments at once (`rules.aggregates`): the
numerator and denominator over a window or a baseline, and for ratios the moments of their
per-bucket values (count, sum, sum of squares), which is all the tests below need.

Statistics (see `rules.statistics`): rates (successes / trials) use the two-proportion z-test
and the p-chart; ratios (spend / conversions...) have no Bernoulli sample size, so they are
tested on their per-bucket values: Welch's test (mean, sample variance and count of each side),
and a Shewhart X-bar chart whose centre is the mean of the baseline's per-bucket values, whose
sigma is their sample standard deviation, and whose statistic is the mean of the window's
per-bucket values, with limits centre ± k·sigma/sqrt(buckets in the window). With one-bucket
windows that is the k-sigma chart of the baseline buckets themselves.
"""

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from campaigns.metrics import MetricKind, get_metric

from .aggregates import MetricSeries
from .models import Trigger
from .statistics import k_sigma_limits, p_chart_limits, two_proportion_ztest, welch_ttest


class Status(IntEnum):
    FAILED = 0
    PASSED = 1
    INSUFFICIENT = 2


# Why a segment had insufficient data (per window), recorded next to the numbers.
LOW_SAMPLE = "low_sample"
LOW_BASELINE = "low_baseline"
NO_BASELINE_VALUE = "no_baseline_value"
NO_STATISTIC = "no_statistic"
# What `WindowResult.insufficient_reason` codes stand for (0: the data sufficed). Codes, not
# strings: a cycle judges ~460k segment windows, and numpy handles strings as Python objects.
INSUFFICIENT_REASONS = ("", LOW_SAMPLE, LOW_BASELINE, NO_BASELINE_VALUE, NO_STATISTIC)

_ALTERNATIVE = {
    Trigger.Direction.BELOW: "smaller",
    Trigger.Direction.ABOVE: "larger",
    Trigger.Direction.EITHER: "two-sided",
}


@dataclass
class WindowResult:
    """One window of one trigger, every array of shape (segments,)."""

    numerator: np.ndarray
    denominator: np.ndarray
    value: np.ndarray
    baseline_numerator: np.ndarray | None = None
    baseline_denominator: np.ndarray | None = None
    baseline: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # statistic, p_value, limits...
    status: np.ndarray | None = None
    insufficient_reason: np.ndarray | None = None  # int8 index into INSUFFICIENT_REASONS


@dataclass
class TriggerResult:
    trigger: Trigger
    windows: list[WindowResult]  # [0] is the current window
    status: np.ndarray  # combined over the windows
    consecutive: np.ndarray  # windows in a row, from the latest, in which the condition held


@dataclass(frozen=True)
class _Span:
    current: slice
    baseline: slice


def spans(trigger: Trigger, *, n_buckets: int, bucket_minutes: int) -> list[_Span]:
    w = trigger.window_minutes // bucket_minutes
    b = trigger.baseline_minutes // bucket_minutes
    result = []
    for k in range(trigger.consecutive_windows):
        end = n_buckets - k * w
        result.append(_Span(current=slice(end - w, end), baseline=slice(max(end - w - b, 0), end - w)))
    return result


def lookback_buckets(trigger: Trigger, bucket_minutes: int) -> int:
    return (trigger.consecutive_windows * trigger.window_minutes + trigger.baseline_minutes) // bucket_minutes


def window_offsets(trigger: Trigger, bucket_minutes: int) -> set[int]:
    """The ends of every range `spans` asks for, in buckets before the end of the current window."""
    w = trigger.window_minutes // bucket_minutes
    b = trigger.baseline_minutes // bucket_minutes
    return {offset for k in range(trigger.consecutive_windows) for offset in (k * w, (k + 1) * w, (k + 1) * w + b)}


def needs_bucket_moments(trigger: Trigger) -> bool:
    """Whether the trigger judges its metric's per-bucket values (a ratio's test or chart)."""
    return (get_metric(trigger.metric).kind == MetricKind.RATIO
            and trigger.kind in (Trigger.Kind.SIGNIFICANT_CHANGE, Trigger.Kind.CONTROL_LIMIT))


def evaluate_trigger(trigger: Trigger, series: MetricSeries, *, bucket_minutes: int) -> TriggerResult:
    evaluate_window = _KINDS[trigger.kind]
    windows = []
    for span in spans(trigger, n_buckets=series.n_buckets, bucket_minutes=bucket_minutes):
        result = evaluate_window(trigger, series, span)
        _apply_min_sample(trigger, result)
        windows.append(result)
    if len(windows) == 1:  # most triggers: the window decides alone, no need to reduce over windows
        return TriggerResult(trigger, windows, windows[0].status, (windows[0].status == Status.PASSED).astype(np.int64))
    statuses = np.stack([w.status for w in windows], axis=1)  # (segments, windows)
    return TriggerResult(trigger, windows, _combine(statuses), _leading_passes(statuses))


# --- kinds -----------------------------------------------------------------------------------


def _threshold(trigger: Trigger, series: MetricSeries, span: _Span) -> WindowResult:
    result = _window_values(series, span.current)
    threshold = float(trigger.threshold)
    held = result.value < threshold if trigger.direction == Trigger.Direction.BELOW else result.value > threshold
    result.status = _status(held, valid=np.isfinite(result.value), reason=NO_STATISTIC, result=result)
    return result


def _relative_change(trigger: Trigger, series: MetricSeries, span: _Span) -> WindowResult:
    result = _with_baseline(series, span)
    change = result.extra["change_pct"] = change_pct(result.value, result.baseline)
    threshold = float(trigger.threshold)
    held = {
        Trigger.Direction.BELOW: change <= -threshold,
        Trigger.Direction.ABOVE: change >= threshold,
        Trigger.Direction.EITHER: np.abs(change) >= threshold,
    }[trigger.direction]
    result.status = _status(held, valid=np.isfinite(change), reason=NO_BASELINE_VALUE, result=result)
    return result


def _significant_change(trigger: Trigger, series: MetricSeries, span: _Span) -> WindowResult:
    result = _with_baseline(series, span)
    confidence = float(trigger.confidence)
    alternative = _ALTERNATIVE[trigger.direction]
    if series.metric.kind == MetricKind.RATE:
        test = two_proportion_ztest(
            result.baseline_numerator, result.baseline_denominator, result.numerator, result.denominator,
            confidence=confidence, alternative=alternative,
        )
        scale = series.metric.scale
    else:
        current, baseline = series.bucket_moments(span.current), series.bucket_moments(span.baseline)
        test = welch_ttest(*baseline, *current, confidence=confidence, alternative=alternative)
        result.extra["bucket_mean"], _, result.extra["buckets"] = current
        result.extra["baseline_bucket_mean"], _, result.extra["baseline_buckets"] = baseline
        scale = 1.0  # per-bucket values are already scaled
    p_value = np.asarray(test.p_value, dtype=float)
    result.extra.update(
        statistic=np.asarray(test.statistic, dtype=float), p_value=p_value,
        difference=scale * np.asarray(test.diff, dtype=float),
        ci_low=scale * np.asarray(test.ci_low, dtype=float), ci_high=scale * np.asarray(test.ci_high, dtype=float),
    )
    result.status = _status(p_value < 1 - confidence, valid=np.isfinite(p_value), reason=NO_STATISTIC,
                            result=result)
    return result


def _control_limit(trigger: Trigger, series: MetricSeries, span: _Span) -> WindowResult:
    result = _with_baseline(series, span)
    k = float(trigger.k_sigma)
    statistic = result.value
    if series.metric.kind == MetricKind.RATE:
        # p-chart: the baseline's p̄, with the current window's own sample size.
        with np.errstate(divide="ignore", invalid="ignore"):
            p_bar = result.baseline / series.metric.scale
        low, high = p_chart_limits(p_bar, result.denominator, k=k)
        low, high = series.metric.scale * np.asarray(low), series.metric.scale * np.asarray(high)
    else:
        # X-bar chart: the window's mean per bucket against the baseline buckets' mean and spread.
        statistic, _, buckets = series.bucket_moments(span.current)
        centre, variance, baseline_buckets = series.bucket_moments(span.baseline)
        sigma = np.sqrt(variance)
        with np.errstate(divide="ignore", invalid="ignore"):
            low, high = k_sigma_limits(centre, np.where(buckets > 0, sigma / np.sqrt(buckets), np.nan), k=k)
        result.extra.update(bucket_mean=statistic, buckets=buckets, baseline_bucket_mean=centre,
                            baseline_bucket_std=sigma, baseline_buckets=baseline_buckets)
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    result.extra.update(lower_limit=low, upper_limit=high)
    held = {
        Trigger.Direction.BELOW: statistic < low,
        Trigger.Direction.ABOVE: statistic > high,
        Trigger.Direction.EITHER: (statistic < low) | (statistic > high),
    }[trigger.direction]
    valid = np.isfinite(low) & np.isfinite(high) & np.isfinite(statistic)
    result.status = _status(held, valid=valid, reason=NO_STATISTIC, result=result)
    return result


_KINDS = {
    Trigger.Kind.THRESHOLD: _threshold,
    Trigger.Kind.RELATIVE_CHANGE: _relative_change,
    Trigger.Kind.SIGNIFICANT_CHANGE: _significant_change,
    Trigger.Kind.CONTROL_LIMIT: _control_limit,
}


# --- numbers that follow from others (`rules.decisions` recomputes them when read) ------------


# Both divide only where the divisor is positive (`where=`), so nothing warns and no error state
# need be set: a cycle calls them thousands of times, on mostly small arrays.
def ratio(numerator: np.ndarray, denominator: np.ndarray, scale: float) -> np.ndarray:
    """A metric's value, `scale * numerator / denominator`; NaN without a denominator."""
    return np.divide(scale * numerator, denominator, out=np.full(len(denominator), np.nan), where=denominator > 0)


def change_pct(value: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """The value's change from its baseline, in percent; NaN without a positive baseline."""
    defined = baseline > 0
    change = np.divide(value - baseline, baseline, out=np.full(len(baseline), np.nan), where=defined)
    return np.multiply(change, 100, out=change, where=defined)


# --- helpers ---------------------------------------------------------------------------------


def _window_values(series: MetricSeries, window: slice) -> WindowResult:
    numerator, denominator = series.sums(window)
    value = ratio(numerator, denominator, series.metric.scale)
    return WindowResult(numerator=numerator, denominator=denominator, value=value,
                        insufficient_reason=np.zeros(len(value), dtype=np.int8))


def _with_baseline(series: MetricSeries, span: _Span) -> WindowResult:
    result = _window_values(series, span.current)
    base = _window_values(series, span.baseline)
    result.baseline_numerator, result.baseline_denominator = base.numerator, base.denominator
    result.baseline = base.value
    return result


def _status(held: np.ndarray, *, valid: np.ndarray, reason: str, result: WindowResult) -> np.ndarray:
    result.insufficient_reason[~valid] = INSUFFICIENT_REASONS.index(reason)
    return np.where(valid, np.where(held, Status.PASSED, Status.FAILED), Status.INSUFFICIENT)


def _apply_min_sample(trigger: Trigger, result: WindowResult) -> None:
    """Too small a sample is insufficient whatever the numbers say (checked last, so it wins)."""
    checks = [(result.baseline_denominator, LOW_BASELINE), (result.denominator, LOW_SAMPLE)]
    for denominator, reason in checks:
        if denominator is not None:
            low = denominator < trigger.min_sample
            result.status = np.where(low, Status.INSUFFICIENT, result.status)
            result.insufficient_reason[low] = INSUFFICIENT_REASONS.index(reason)


def _combine(statuses: np.ndarray) -> np.ndarray:
    """Passed only if it held in every window; failed if any window failed; else insufficient."""
    all_passed = np.all(statuses == Status.PASSED, axis=1)
    any_failed = np.any(statuses == Status.FAILED, axis=1)
    return np.where(all_passed, Status.PASSED, np.where(any_failed, Status.FAILED, Status.INSUFFICIENT))


def _leading_passes(statuses: np.ndarray) -> np.ndarray:
    """How many windows in a row, from the latest, passed."""
    return np.cumprod(statuses == Status.PASSED, axis=1).sum(axis=1)
