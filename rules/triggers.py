"""Evaluating one trigger for every segment at once, over its last N windows.

Window k (0 = the latest) covers buckets [E-(k+1)w, E-kw) of the grid, and its baseline the
`b` buckets just before it. Every kind returns, per segment and window, the numbers that
decided it and a status: passed, failed, or insufficient data (too small a sample, a zero
baseline, no variance: never treated as passing).

Statistics (see `rules.statistics`): rates (successes / trials) use the two-proportion z-test
and the p-chart; ratios (spend / conversions...) have no Bernoulli sample size, so they are
tested on their per-bucket values (Welch) and charted against the spread of the baseline's
window-sized blocks (k sigma; with one-bucket windows, the baseline buckets themselves).
"""

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from campaigns.metrics import MetricKind

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
    insufficient_reason: np.ndarray | None = None  # object array of the codes above, "" when sufficient


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


def evaluate_trigger(trigger: Trigger, series: MetricSeries, *, bucket_minutes: int) -> TriggerResult:
    evaluate_window = _KINDS[trigger.kind]
    windows = []
    for span in spans(trigger, n_buckets=series.numerator.shape[1], bucket_minutes=bucket_minutes):
        result = evaluate_window(trigger, series, span)
        _apply_min_sample(trigger, result)
        windows.append(result)
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
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(result.baseline > 0, (result.value - result.baseline) / result.baseline * 100, np.nan)
    result.extra["change_pct"] = change
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
        current, baseline = _bucket_values(series, span.current), _bucket_values(series, span.baseline)
        test = welch_ttest(
            *_moments(baseline), *_moments(current), confidence=confidence, alternative=alternative
        )
        result.extra["bucket_mean"], _, result.extra["buckets"] = _moments(current)
        result.extra["baseline_bucket_mean"], _, result.extra["baseline_buckets"] = _moments(baseline)
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
    if series.metric.kind == MetricKind.RATE:
        # p-chart: the baseline's p̄, with the current window's own sample size.
        with np.errstate(divide="ignore", invalid="ignore"):
            p_bar = result.baseline / series.metric.scale
        low, high = p_chart_limits(p_bar, result.denominator, k=k)
        low, high = series.metric.scale * np.asarray(low), series.metric.scale * np.asarray(high)
    else:
        mean, std, blocks = _baseline_blocks(series, span)
        low, high = k_sigma_limits(mean, std, k=k)
        result.extra.update(baseline_block_mean=mean, baseline_block_std=std, baseline_blocks=blocks)
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    result.extra.update(lower_limit=low, upper_limit=high)
    held = {
        Trigger.Direction.BELOW: result.value < low,
        Trigger.Direction.ABOVE: result.value > high,
        Trigger.Direction.EITHER: (result.value < low) | (result.value > high),
    }[trigger.direction]
    valid = np.isfinite(low) & np.isfinite(high) & np.isfinite(result.value)
    result.status = _status(held, valid=valid, reason=NO_STATISTIC, result=result)
    return result


_KINDS = {
    Trigger.Kind.THRESHOLD: _threshold,
    Trigger.Kind.RELATIVE_CHANGE: _relative_change,
    Trigger.Kind.SIGNIFICANT_CHANGE: _significant_change,
    Trigger.Kind.CONTROL_LIMIT: _control_limit,
}


# --- helpers ---------------------------------------------------------------------------------


def _ratio(numerator: np.ndarray, denominator: np.ndarray, scale: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, scale * numerator / denominator, np.nan)


def _window_values(series: MetricSeries, window: slice) -> WindowResult:
    numerator = series.numerator[:, window].sum(axis=1)
    denominator = series.denominator[:, window].sum(axis=1)
    value = _ratio(numerator, denominator, series.metric.scale)
    return WindowResult(numerator=numerator, denominator=denominator, value=value,
                        insufficient_reason=np.full(len(value), "", dtype=object))


def _with_baseline(series: MetricSeries, span: _Span) -> WindowResult:
    result = _window_values(series, span.current)
    base = _window_values(series, span.baseline)
    result.baseline_numerator, result.baseline_denominator = base.numerator, base.denominator
    result.baseline = base.value
    return result


def _bucket_values(series: MetricSeries, window: slice) -> np.ndarray:
    """Per-bucket metric values; NaN where a bucket had no denominator (it carries no observation)."""
    return _ratio(series.numerator[:, window], series.denominator[:, window], series.metric.scale)


def _moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample variance (ddof=1) and count of the non-NaN values of each row."""
    count = np.sum(~np.isnan(values), axis=1)
    filled = np.where(np.isnan(values), 0.0, values)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count > 0, filled.sum(axis=1) / count, np.nan)
        squares = np.where(np.isnan(values), 0.0, (values - mean[:, None]) ** 2).sum(axis=1)
        variance = np.where(count > 1, squares / (count - 1), np.nan)
    return mean, variance, count.astype(float)


def _baseline_blocks(series: MetricSeries, span: _Span) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, standard deviation and count of the baseline's values per window-sized block."""
    width = span.current.stop - span.current.start
    blocks = (span.baseline.stop - span.baseline.start) // width
    start = span.baseline.stop - blocks * width  # blocks end where the current window starts
    segments = series.numerator.shape[0]

    def per_block(counter: np.ndarray) -> np.ndarray:
        return counter[:, start:span.baseline.stop].reshape(segments, blocks, width).sum(axis=2)

    values = _ratio(per_block(series.numerator), per_block(series.denominator), series.metric.scale)
    mean, variance, count = _moments(values)
    return mean, np.sqrt(variance), count


def _status(held: np.ndarray, *, valid: np.ndarray, reason: str, result: WindowResult) -> np.ndarray:
    result.insufficient_reason[~valid] = reason
    return np.where(valid, np.where(held, Status.PASSED, Status.FAILED), Status.INSUFFICIENT)


def _apply_min_sample(trigger: Trigger, result: WindowResult) -> None:
    """Too small a sample is insufficient whatever the numbers say (checked last, so it wins)."""
    checks = [(result.baseline_denominator, LOW_BASELINE), (result.denominator, LOW_SAMPLE)]
    for denominator, reason in checks:
        if denominator is not None:
            low = denominator < trigger.min_sample
            result.status = np.where(low, Status.INSUFFICIENT, result.status)
            result.insufficient_reason[low] = reason


def _combine(statuses: np.ndarray) -> np.ndarray:
    """Passed only if it held in every window; failed if any window failed; else insufficient."""
    all_passed = np.all(statuses == Status.PASSED, axis=1)
    any_failed = np.any(statuses == Status.FAILED, axis=1)
    return np.where(all_passed, Status.PASSED, np.where(any_failed, Status.FAILED, Status.INSUFFICIENT))


def _leading_passes(statuses: np.ndarray) -> np.ndarray:
    """How many windows in a row, from the latest, passed."""
    return np.cumprod(statuses == Status.PASSED, axis=1).sum(axis=1)
