"""Demo rules that react to the simulator's "mobile engagement drops at peak hours" incident.

`load_demo_rules` is what `manage.py load_demo` calls. The rules are created and activated
through the services (so they are validated and audited like any other), and are sized on
the workspace's metric bucket so that they fire within a few buckets of the incident
(windows of at least 30 minutes: enough impressions and sessions per mobile segment at
the demo's budgets for the tests to be decisive, see tests/rules/test_demo.py).
"""

import math
from decimal import Decimal

from accounts.models import Workspace
from audit.actors import Actor

from .models import Rule, Trigger
from .services import rule_activate, rule_create

_DAY = 24 * 60


def load_demo_rules(*, actor: Actor, workspace: Workspace, owner) -> list[Rule]:
    """Create (or reuse, when run again) the demo rules of `workspace`, all active."""
    window = workspace.metric_bucket_minutes * max(1, math.ceil(30 / workspace.metric_bucket_minutes))
    rules = []
    for spec in _demo_specs(window=window, interval=workspace.metric_bucket_minutes):
        rule = Rule.objects.filter(workspace=workspace, name=spec["name"]).first()
        if rule is None:
            rule = rule_create(actor=actor, workspace=workspace, owner=owner, **spec)
        if rule.status != Rule.Status.ACTIVE:
            rule = rule_activate(actor=actor, rule=rule, reason="Demo rule")
        rules.append(rule)
    return rules


def _demo_specs(*, window: int, interval: int) -> list[dict]:
    mobile = {"device": "mobile"}
    return [
        {
            "name": "Mobile CTR drop: lower the bid",
            "description": "Mobile click-through falls significantly below the last 24 hours: bid 10% lower.",
            "segment_filter": mobile,
            "evaluation_interval_minutes": interval,
            "action": Rule.Action.BID_PCT,
            "action_value": Decimal("-10"),
            "triggers": [
                {"metric": "ctr", "kind": Trigger.Kind.SIGNIFICANT_CHANGE, "direction": Trigger.Direction.BELOW,
                 "window_minutes": window, "baseline_minutes": _DAY, "confidence": Decimal("0.95"),
                 "min_sample": 200},
            ],
        },
        {
            "name": "Mobile CTR out of control: alert",
            "description": "Mobile click-through rate below its 3-sigma p-chart limit (last 24 hours): alert the team.",
            "segment_filter": mobile,
            "evaluation_interval_minutes": interval,
            "action": Rule.Action.ALERT,
            "triggers": [
                {"metric": "ctr", "kind": Trigger.Kind.CONTROL_LIMIT, "direction": Trigger.Direction.BELOW,
                 "window_minutes": window, "baseline_minutes": _DAY, "k_sigma": Decimal("3"), "min_sample": 200},
            ],
        },
        {
            "name": "Mobile dwell time down 20%: trim budget",
            "description": "Mobile average dwell time 20% below the last 24 hours for 2 windows: budget 10% lower.",
            "segment_filter": mobile,
            "evaluation_interval_minutes": interval,
            "action": Rule.Action.BUDGET_PCT,
            "action_value": Decimal("-10"),
            "triggers": [
                {"metric": "avg_dwell", "kind": Trigger.Kind.RELATIVE_CHANGE, "direction": Trigger.Direction.BELOW,
                 "threshold": Decimal("20"), "window_minutes": window, "baseline_minutes": _DAY,
                 "consecutive_windows": 2, "min_sample": 20},
            ],
        },
    ]
