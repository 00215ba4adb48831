"""Sentences a marketer reads: why a trigger held or not for a segment, and what a run decided."""

from decimal import Decimal
from statistics import NormalDist
from typing import TYPE_CHECKING

from campaigns.metrics import DERIVED_METRICS, DerivedMetric

from .models import Evaluation, Rule, Trigger
from .triggers import LOW_BASELINE, LOW_SAMPLE, NO_BASELINE_VALUE, Status

if TYPE_CHECKING:
    from .decisions import SegmentDecisions

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
    if "bucket_mean" in window:  # a ratio's X-bar chart judges the window's mean per bucket
        value = f"{metric.label} {format_value(metric, window['bucket_mean'])} (mean per bucket)"
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


def run_summary(decisions: "SegmentDecisions", *, blocked: bool) -> str:
    """One sentence for the whole run, e.g. "Fired for 2 of 10 segments (A, B); 8 not fired."."""
    counts = decisions.counts()
    total = len(decisions)
    if not total:
        return "No segment matches the rule's scope."
    fired = decisions.fired_names()
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


# --- the rule in one sentence ------------------------------------------------------------------
# Shown on the rule's page and in the rule list, so that a marketer can check what a rule will do
# without reading its settings one by one, e.g. "If CTR of any mobile segment falls below its 3σ
# (99.7%) control limit (from the previous 7 days) for 3 windows in a row of 1 hour each, lower its
# bid by 10%, at most 10% per hour."

_MOVES = {Trigger.Direction.BELOW: "falls", Trigger.Direction.ABOVE: "rises", Trigger.Direction.EITHER: "moves"}
_CHANGES = {**_MOVES, Trigger.Direction.EITHER: "changes"}
_SIDE = {Trigger.Direction.BELOW: "below", Trigger.Direction.ABOVE: "above"}
_LIMIT = {Trigger.Direction.BELOW: "falls below", Trigger.Direction.ABOVE: "rises above",
          Trigger.Direction.EITHER: "leaves"}
_ACRONYM_LENGTH = 4  # ctr, cvr, cpa, cpc, cpm, roas read best as acronyms


def rule_summary(rule, triggers=None) -> str:
    """The rule as one plain-language sentence, generated from its settings and triggers.

    `triggers` defaults to the rule's saved triggers (prefetch them when summarising many rules).
    """
    triggers = list(rule.triggers.all() if triggers is None else triggers)
    if not triggers:
        return "No trigger yet: this rule never fires."
    joiner = " and " if rule.match == Rule.Match.ALL else " or "
    first, *others = (_condition(t) for t in triggers)
    conditions = f"{first[0]} of {_scope(rule)} {first[1]}" + "".join(
        f"{joiner}its {metric} {predicate}" for metric, predicate in others
    )
    return f"If {conditions}, {_action(rule)}{_limits(rule)}{_hours(rule)}."


def metric_name(name: str) -> str:
    """The short name people use: "CTR", "ROAS", "bounce rate"."""
    metric = DERIVED_METRICS.get(name)
    if metric is None:
        return name
    if len(metric.name) <= _ACRONYM_LENGTH:
        return metric.name.upper()
    return metric.label.split(" (")[0].lower()


def _condition(trigger) -> tuple[str, str]:
    """(metric name, what it does) for one trigger, e.g. ("CTR", "is below 1.50% over the last hour")."""
    metric = DERIVED_METRICS.get(trigger.metric)
    direction = trigger.direction
    baseline = f"the previous {_duration(trigger.baseline_minutes)}"
    if trigger.kind == Trigger.Kind.THRESHOLD:
        value = format_value(metric, float(trigger.threshold)) if metric and trigger.threshold is not None else "?"
        return metric_name(trigger.metric), f"is {_SIDE.get(direction, 'beyond')} {value} {_window(trigger)}"
    if trigger.kind == Trigger.Kind.RELATIVE_CHANGE:
        size = f"{Decimal(trigger.threshold).normalize():f}%" if trigger.threshold is not None else "?%"
        either = " either way" if direction == Trigger.Direction.EITHER else ""
        what = f"{_MOVES[direction]} by {size} or more{either} {_window(trigger)} vs {baseline}"
    elif trigger.kind == Trigger.Kind.SIGNIFICANT_CHANGE:
        confidence = f"{float(trigger.confidence) * 100:.4g}%"
        what = f"{_CHANGES[direction]} significantly ({confidence} confidence) {_window(trigger)} vs {baseline}"
    else:
        k = float(trigger.k_sigma)
        coverage = f"{(2 * NormalDist().cdf(k) - 1) * 100:.3g}%"  # two-sided normal coverage of ±k sigma
        plural = "s" if direction == Trigger.Direction.EITHER else ""
        what = f"{_LIMIT[direction]} its {k:g}σ ({coverage}) control limit{plural} (from {baseline}) {_window(trigger)}"
    return metric_name(trigger.metric), what


def _window(trigger) -> str:
    if trigger.consecutive_windows > 1:
        return f"for {trigger.consecutive_windows} windows in a row of {_duration(trigger.window_minutes, '1')} each"
    return f"over the last {_duration(trigger.window_minutes)}"


def _scope(rule) -> str:
    criteria = dict(rule.segment_filter or {}) if isinstance(rule.segment_filter, dict) else {}
    adjectives = [_either(criteria.pop("device", None)), rule.get_channel_display().lower() if rule.channel else ""]
    scope = " ".join(["any", *[a for a in adjectives if a], "segment"])
    if rule.pk is not None:
        names = [c.name for c in rule.campaigns.all()]
        if len(names) > 3:
            scope += f" of {len(names)} campaigns"
        elif names:
            scope += f" of {_either(names)}"
    if criteria:
        scope += " with " + " and ".join(f"{key} {_either(value)}" for key, value in criteria.items())
    return scope


def _either(value) -> str:
    if value is None:
        return ""
    values = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return " or ".join(values)


def _action(rule) -> str:
    value = rule.action_value
    amount = "?" if value is None else f"{abs(Decimal(value)).normalize():f}"
    verb = "raise" if value is not None and value > 0 else "lower"
    rank_metric = metric_name((rule.action_params or {}).get("rank_metric", "roas"))
    receivers = (rule.action_params or {}).get("receiver_count", 2)
    return {
        Rule.Action.BID_PCT: f"{verb} its bid by {amount}%",
        Rule.Action.BUDGET_PCT: f"{verb} its daily budget by {amount}%",
        Rule.Action.SET_BID: f"set its bid to {_money(value)}",
        Rule.Action.SET_BUDGET: f"set its daily budget to {_money(value)}",
        Rule.Action.PAUSE_SEGMENT: "pause it",
        Rule.Action.RESUME_SEGMENT: "resume it",
        Rule.Action.PAUSE_CREATIVE: "pause its campaign's active creatives (never the last one)",
        Rule.Action.RESUME_CREATIVE: "resume its campaign's paused creatives",
        Rule.Action.ROTATE_CREATIVE: "rotate its campaign's creatives (the next one serves first)",
        Rule.Action.REALLOCATE_BUDGET: (f"move {amount}% of its daily budget to the campaign's {receivers} best "
                                        f"segments by {rank_metric}"),
        Rule.Action.ALERT: "send an alert",
        Rule.Action.ESCALATE_ALERT: "alert the approvers" + (" and pause it" if (rule.action_params or {}).get(
            "pause") else ""),
    }.get(rule.action, rule.get_action_display())


def _money(value) -> str:
    """At least two decimals, more only when the value has them: 0.5 -> "0.50", 0.125 -> "0.125"."""
    if value is None:
        return "?"
    value = Decimal(value)
    cents = value.quantize(Decimal("0.01"))
    return f"{cents}" if cents == value else f"{value.normalize():f}"


_AMOUNT_ACTIONS = {Rule.Action.BID_PCT, Rule.Action.BUDGET_PCT, Rule.Action.SET_BID, Rule.Action.SET_BUDGET,
                   Rule.Action.REALLOCATE_BUDGET}


def _limits(rule) -> str:
    if rule.action == Rule.Action.ALERT or (rule.action == Rule.Action.ESCALATE_ALERT
                                            and not (rule.action_params or {}).get("pause")):
        return ""
    if rule.action in _AMOUNT_ACTIONS and rule.max_change_per_window_pct is not None:
        size = f"{Decimal(rule.max_change_per_window_pct).normalize():f}%"
        return f", at most {size} per {_duration(rule.cap_window_minutes)}"
    return f", at most {rule.max_actions_per_day} times a day"


def _hours(rule) -> str:
    start, end = rule.active_hours_start, rule.active_hours_end
    if start is None or end is None:
        return ""
    return f", only between {start:02d}:00 and {end:02d}:00 ({rule.workspace.time_zone})"


def _duration(minutes: int, one: str = "") -> str:
    """60 -> "hour" (or "1 hour" with one=1), 120 -> "2 hours", 1440 -> "day", 10080 -> "7 days", 45 -> "45 minutes"."""
    for size, unit in ((1440, "day"), (60, "hour")):
        if minutes % size == 0:
            count = minutes // size
            return f"{count} {unit}s" if count > 1 else f"{one} {unit}".strip()
    return f"{minutes} minutes"
