"""Sentences a marketer reads: why a trigger held or not for a segment, and what a run decided."""

from collections import Counter
from decimal import Decimal

from campaigns.metrics import DerivedMetric

from .models import Evaluation, Trigger
from .triggers import LOW_BASELINE, LOW_SAMPLE, NO_BASELINE_VALUE, Status

_MOVED = {Trigger.Direction.BELOW: "fell", Trigger.Direction.ABOVE: "rose", Trigger.Direction.EITHER: "moved"}


def format_value(metric: DerivedMetric, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric.unit == "%":
        return f"{value * 100:.2f}%"
    if metric.unit == "currency":
        return f"{value:,.2f}"
    if metric.unit == "x":
        return f"{value:.2f}x"
    if metric.unit == "s":
        return f"{value:.1f} s"
    return f"{value:.4g}"


def window_reason(trigger: Trigger, metric: DerivedMetric, window: dict) -> str:
    """Why one window of a trigger passed, failed or lacked data; `window` is its JSON record."""
    if window["status"] == "insufficient_data":
        return _insufficient_reason(trigger, metric, window)
    passed = window["status"] == "passed"
    value = f"{metric.label} {format_value(metric, window['value'])}"
    baseline = format_value(metric, window.get("baseline"))
    if trigger.kind == Trigger.Kind.THRESHOLD:
        side = "below" if trigger.direction == Trigger.Direction.BELOW else "above"
        return f"{value} is {'' if passed else 'not '}{side} {format_value(metric, float(trigger.threshold))}"
    if trigger.kind == Trigger.Kind.RELATIVE_CHANGE:
        return (
            f"{value} vs baseline {baseline}: {window['change_pct']:+.1f}% "
            f"({'reaches' if passed else 'short of'} the {Decimal(trigger.threshold).normalize():f}% trigger)"
        )
    if trigger.kind == Trigger.Kind.SIGNIFICANT_CHANGE:
        alpha = 1 - float(trigger.confidence)
        verdict = f"{_MOVED[trigger.direction]} significantly" if passed else "no significant change"
        return f"{value} vs baseline {baseline}: {verdict} (p = {window['p_value']:.3g}, needs < {alpha:.3g})"
    limits = f"[{format_value(metric, window['lower_limit'])}, {format_value(metric, window['upper_limit'])}]"
    return f"{value} is {'outside' if passed else 'within'} the control limits {limits}"


def _insufficient_reason(trigger: Trigger, metric: DerivedMetric, window: dict) -> str:
    reason = window["insufficient_reason"]
    if reason == LOW_SAMPLE:
        return (f"insufficient data: {window['denominator']:g} {metric.denominator} in the window "
                f"(minimum {trigger.min_sample})")
    if reason == LOW_BASELINE:
        return (f"insufficient data: {window['baseline_denominator']:g} {metric.denominator} in the baseline "
                f"(minimum {trigger.min_sample})")
    if reason == NO_BASELINE_VALUE:
        return f"insufficient data: no baseline {metric.label} to compare with"
    if trigger.kind == Trigger.Kind.SIGNIFICANT_CHANGE:
        return "insufficient data: not enough observations (or no variation) for a significance test"
    if trigger.kind == Trigger.Kind.CONTROL_LIMIT:
        return "insufficient data: the baseline gives no control limits"
    return f"insufficient data: no {metric.label} in the window"


def trigger_reason(trigger: Trigger, metric: DerivedMetric, windows: list[dict], consecutive: int) -> str:
    """The deciding window (the latest that did not pass, else the current one), and the streak."""
    deciding = next((w for w in windows if w["status"] != "passed"), windows[0])
    reason = window_reason(trigger, metric, deciding)
    if trigger.consecutive_windows > 1:
        reason += f"; held {consecutive} of {trigger.consecutive_windows} consecutive windows"
    return reason


STATUS_NAMES = {Status.PASSED: "passed", Status.FAILED: "failed", Status.INSUFFICIENT: "insufficient_data"}


def run_summary(decisions: list[dict], *, blocked: bool) -> str:
    """One sentence for the whole run, e.g. "Fired for 2 of 10 segments (A, B); 8 not fired."."""
    counts = Counter(d["decision"] for d in decisions)
    total = len(decisions)
    if not total:
        return "No segment matches the rule's scope."
    fired = [d["segment_name"] for d in decisions if d["decision"] == Evaluation.Outcome.FIRED]
    parts = []
    if fired:
        names = ", ".join(fired[:5]) + (f" and {len(fired) - 5} more" if len(fired) > 5 else "")
        parts.append(f"Fired for {len(fired)} of {total} segments ({names})")
    for outcome in (Evaluation.Outcome.NOT_FIRED, Evaluation.Outcome.INSUFFICIENT_DATA,
                    Evaluation.Outcome.SKIPPED_STALE):
        if counts[outcome]:
            parts.append(f"{counts[outcome]} {outcome.label.lower()}")
    sentence = "; ".join(parts)
    if not fired:
        sentence = f"Nothing fired ({total} segments): " + sentence
    if blocked:
        sentence += "; every proposed change was blocked by a cap"
    return sentence + "."
