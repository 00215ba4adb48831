"""Checks of a rule's settings against the metric registry and the workspace guardrails.

One source of truth for the services, the admin forms and the API: each check returns
messages a marketer understands, keyed by the field they concern. Values arrive as
already-parsed Python values (Decimal, int, str), not raw strings.
"""

import math
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal

from django.core.exceptions import ValidationError

from accounts.models import Workspace
from campaigns.metrics import DERIVED_METRICS, MetricKind
from campaigns.models import Campaign, Segment

from .models import Rule, Trigger

# A rule may look back at most this far (current windows × consecutive + baseline): it bounds
# the size of the one aggregate query each evaluation runs.
MAX_LOOKBACK_MINUTES = 35 * 24 * 60
MAX_CONSECUTIVE_WINDOWS = 48

_BASELINE_KINDS = {Trigger.Kind.RELATIVE_CHANGE, Trigger.Kind.SIGNIFICANT_CHANGE, Trigger.Kind.CONTROL_LIMIT}
_VALUE_ACTIONS = {
    Rule.Action.BID_PCT, Rule.Action.BUDGET_PCT, Rule.Action.SET_BID, Rule.Action.SET_BUDGET,
    Rule.Action.REALLOCATE_BUDGET,
}

Errors = dict[str, list[str]]
TRIGGER_FIELDS = (
    "metric", "kind", "direction", "threshold", "window_minutes", "baseline_minutes", "confidence",
    "k_sigma", "consecutive_windows", "min_sample",
)
_TRIGGER_DEFAULTS = {name: Trigger._meta.get_field(name).get_default() for name in TRIGGER_FIELDS}


def with_trigger_defaults(trigger: Mapping) -> dict:
    """A trigger's settings with the model's defaults filled in; refuses fields a trigger does not have."""
    unknown = set(trigger) - set(TRIGGER_FIELDS) - {"id", "position"}
    if unknown:
        raise ValidationError({name: ["A trigger has no such setting."] for name in sorted(unknown)})
    return {**_TRIGGER_DEFAULTS, **{k: v for k, v in trigger.items() if k in TRIGGER_FIELDS}}


def trigger_problems(workspace: Workspace, trigger: Mapping) -> Errors:
    """The model's field checks (types, ranges), then `trigger_errors` on the values they parsed."""
    instance = Trigger(**with_trigger_defaults(trigger))
    problems: Errors = {}
    try:
        instance.full_clean(exclude=["rule"])  # also turns "0.01" into Decimal("0.01")
    except ValidationError as exc:
        problems = dict(exc.message_dict)
    parsed = {name: None if name in problems else getattr(instance, name) for name in TRIGGER_FIELDS}
    registry = trigger_errors(workspace, {**parsed, "metric": instance.metric})
    if "metric" in registry:
        # The registry's message about an unknown metric says more than the model's "not a valid choice".
        problems.pop("metric", None)
    _merge(problems, {f: m for f, m in registry.items() if f not in problems})
    return problems


def rule_problems(rule: Rule, campaigns: list[Campaign], fields: tuple[str, ...]) -> Errors:
    """Everything wrong with a rule's settings (not its triggers): model checks, guardrails, scope, name."""
    problems: Errors = {}
    try:
        rule.full_clean(exclude=["workspace", "owner"], validate_unique=False)
    except ValidationError as exc:
        _merge(problems, exc.message_dict)
    _merge(problems, rule_errors(rule.workspace, {name: getattr(rule, name) for name in fields}))
    if Rule.objects.filter(workspace_id=rule.workspace_id, name=rule.name).exclude(pk=rule.pk).exists():
        _merge(problems, {"name": ["Another rule of this workspace already has this name."]})
    foreign = [c.name for c in campaigns if c.workspace_id != rule.workspace_id]
    if foreign:
        _merge(problems, {"campaigns": [f"Not campaigns of this workspace: {', '.join(foreign)}."]})
    return problems


def _merge(errors: Errors, more: Mapping[str, list[str]]) -> None:
    for field, messages in more.items():
        errors.setdefault(field, []).extend(messages)


def trigger_errors(workspace: Workspace, trigger: Mapping) -> Errors:
    """Everything wrong with one trigger's settings (empty when it is valid)."""
    errors: Errors = defaultdict(list)
    metric = DERIVED_METRICS.get(trigger.get("metric") or "")
    if metric is None:
        known = ", ".join(sorted(DERIVED_METRICS))
        errors["metric"].append(f"Unknown metric “{trigger.get('metric')}”. Choose one of: {known}.")
    kind = trigger.get("kind")
    if kind not in Trigger.Kind.values:
        errors["kind"].append(f"Unknown trigger kind “{kind}”.")
        return dict(errors)
    _check_threshold(errors, kind, metric, trigger)
    _check_windows(errors, workspace, kind, metric, trigger)
    return dict(errors)


def _check_threshold(errors: Errors, kind: str, metric, trigger: Mapping) -> None:
    threshold = trigger.get("threshold")
    direction = trigger.get("direction") or Trigger.Direction.BELOW
    label = Trigger.Kind(kind).label.lower()
    if kind in (Trigger.Kind.THRESHOLD, Trigger.Kind.RELATIVE_CHANGE):
        if threshold is None:
            errors["threshold"].append(f"A trigger on an {label} needs a threshold.")
            return
        if not isinstance(threshold, int | float | Decimal) or isinstance(threshold, bool):
            errors["threshold"].append("The threshold must be a number.")
            return
    elif threshold is not None:
        errors["threshold"].append(f"A “{Trigger.Kind(kind).label}” trigger takes no threshold: leave it empty.")
        return
    if kind == Trigger.Kind.THRESHOLD:
        if direction == Trigger.Direction.EITHER:
            errors["direction"].append("An absolute threshold needs a direction: above or below.")
        if metric is not None and metric.kind == MetricKind.RATE and not 0 <= threshold <= 1:
            errors["threshold"].append(
                f"{metric.label} is a rate between 0 and 1: write 0.015 for 1.5%."
            )
        elif threshold < 0:
            errors["threshold"].append("The threshold cannot be negative.")
    elif kind == Trigger.Kind.RELATIVE_CHANGE and threshold <= 0:
        errors["threshold"].append("The relative change is a positive % (e.g. 20 for a 20% move).")


def _check_windows(errors: Errors, workspace: Workspace, kind: str, metric, trigger: Mapping) -> None:
    bucket = workspace.metric_bucket_minutes
    window = trigger.get("window_minutes") or 0
    baseline = trigger.get("baseline_minutes") or 0
    consecutive = trigger.get("consecutive_windows") or 1
    for field, minutes in (("window_minutes", window), ("baseline_minutes", baseline)):
        if minutes <= 0 or minutes % bucket:
            errors[field].append(f"Use a whole number of metric buckets: a multiple of {bucket} minutes.")
    if errors.get("window_minutes") or errors.get("baseline_minutes"):
        return
    if kind in _BASELINE_KINDS and baseline < window:
        errors["baseline_minutes"].append(f"The baseline must be at least as long as the window ({window} minutes).")
    is_ratio = metric is not None and metric.kind == MetricKind.RATIO
    if kind == Trigger.Kind.SIGNIFICANT_CHANGE and is_ratio and window < 2 * bucket:
        errors["window_minutes"].append(
            f"A significance test on {metric.label} compares per-bucket values: the window needs at least "
            f"2 metric buckets ({2 * bucket} minutes)."
        )
    if kind == Trigger.Kind.CONTROL_LIMIT and is_ratio and baseline < 2 * window:
        errors["baseline_minutes"].append(
            f"Control limits on {metric.label} come from the spread of past windows: the baseline needs at "
            f"least 2 windows ({2 * window} minutes)."
        )
    if not 1 <= consecutive <= MAX_CONSECUTIVE_WINDOWS:
        errors["consecutive_windows"].append(f"Use between 1 and {MAX_CONSECUTIVE_WINDOWS} consecutive windows.")
    elif consecutive * window + baseline > MAX_LOOKBACK_MINUTES:
        errors["baseline_minutes"].append(
            f"The trigger looks back {(consecutive * window + baseline) // 1440} days; the limit is "
            f"{MAX_LOOKBACK_MINUTES // 1440} days."
        )


def rule_errors(workspace: Workspace, rule: Mapping) -> Errors:
    """Everything wrong with a rule's own settings (not its triggers)."""
    errors: Errors = defaultdict(list)
    _check_action(errors, rule)
    _check_guardrails(errors, workspace, rule)
    _check_active_hours(errors, rule)
    _check_segment_filter(errors, rule.get("segment_filter") or {})
    floor, ceiling = rule.get("value_floor"), rule.get("value_ceiling")
    if floor is not None and ceiling is not None and floor > ceiling:
        errors["value_ceiling"].append(f"The ceiling {ceiling} is below the floor {floor}.")
    return dict(errors)


def _check_action(errors: Errors, rule: Mapping) -> None:
    action = rule.get("action")
    if action not in Rule.Action.values:
        errors["action"].append(f"Unknown action “{action}”.")
        return
    value = rule.get("action_value")
    label = Rule.Action(action).label
    if action not in _VALUE_ACTIONS:
        if value is not None:
            errors["action_value"].append(f"“{label}” takes no value: leave it empty.")
    elif value is None:
        errors["action_value"].append(f"“{label}” needs a value.")
    elif action in (Rule.Action.BID_PCT, Rule.Action.BUDGET_PCT) and (value == 0 or abs(value) > 100):
        errors["action_value"].append("Give the change in % between -100 and 100, not 0 (e.g. -10 to lower by 10%).")
    elif action in (Rule.Action.SET_BID, Rule.Action.SET_BUDGET) and value <= 0:
        errors["action_value"].append("The value to set must be positive.")
    elif action == Rule.Action.REALLOCATE_BUDGET and not 0 < value <= 100:
        errors["action_value"].append("Give the share of budget to move, in % between 0 and 100.")
    rank_metric = (rule.get("action_params") or {}).get("rank_metric")
    if rank_metric is not None and rank_metric not in DERIVED_METRICS:
        errors["action_params"].append(f"Unknown metric “{rank_metric}” to rank segments by.")


def _check_guardrails(errors: Errors, workspace: Workspace, rule: Mapping) -> None:
    step = rule.get("max_step_pct")
    if step is not None and step > workspace.guardrail_max_step_pct:
        errors["max_step_pct"].append(
            f"Max step {_pct(step)} is wider than the workspace guardrail of {_pct(workspace.guardrail_max_step_pct)}."
        )
    per_window, minutes = rule.get("max_change_per_window_pct"), rule.get("cap_window_minutes") or 60
    if per_window is not None:
        # The whole allowance of a long window may be used within one hour, and a short window
        # repeats within the hour: either way this is the most one hour can see.
        per_hour = per_window * math.ceil(60 / minutes) if minutes < 60 else per_window
        limit = workspace.guardrail_max_change_per_hour_pct
        if per_hour > limit:
            errors["max_change_per_window_pct"].append(
                f"Max change {_pct(per_window)} per {minutes} minutes allows {_pct(per_hour)} per hour, wider "
                f"than the workspace guardrail of {_pct(limit)} per hour."
            )
    actions = rule.get("max_actions_per_day")
    if actions is not None and actions > workspace.guardrail_max_actions_per_rule_per_day:
        errors["max_actions_per_day"].append(
            f"{actions} actions a day is more than the workspace guardrail of "
            f"{workspace.guardrail_max_actions_per_rule_per_day}."
        )
    share = rule.get("max_channel_share_pct")
    if share is not None and share > workspace.guardrail_max_channel_share_pct:
        errors["max_channel_share_pct"].append(
            f"Max channel share {_pct(share)} is wider than the workspace guardrail of "
            f"{_pct(workspace.guardrail_max_channel_share_pct)}."
        )


def _check_active_hours(errors: Errors, rule: Mapping) -> None:
    start, end = rule.get("active_hours_start"), rule.get("active_hours_end")
    if (start is None) != (end is None):
        errors["active_hours_end" if end is None else "active_hours_start"].append(
            "Set both the start and the end hour, or neither (active all day)."
        )
    elif start is not None and start == end:
        errors["active_hours_end"].append("The end hour must differ from the start hour (22 to 6 runs overnight).")


def _check_segment_filter(errors: Errors, segment_filter) -> None:
    if not isinstance(segment_filter, Mapping):
        errors["segment_filter"].append('Write the segment filter as {"attribute": "value"}.')
        return
    for key, value in segment_filter.items():
        if key not in Segment.CRITERIA_KEYS:
            errors["segment_filter"].append(
                f"Unknown segment attribute “{key}”. Use: {', '.join(Segment.CRITERIA_KEYS)}."
            )
        elif not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
            errors["segment_filter"].append(f"The value of “{key}” must be text or a list of texts.")


def _pct(value) -> str:
    return f"{Decimal(value).normalize():f}%"
