"""The rule in one sentence (rules.explain.rule_summary), for rules of several shapes."""

from decimal import Decimal

import pytest

from accounts.models import Workspace
from rules.explain import rule_summary
from rules.models import Rule, Trigger
from rules.services import rule_create
from tests.factories import CampaignFactory, UserFactory
from tests.rules.facts import SYSTEM, trigger


def _rule(**fields) -> Rule:
    defaults = {"name": "r", "match": Rule.Match.ALL, "segment_filter": {}, "action": Rule.Action.BID_PCT,
                "action_value": Decimal("-10"), "max_change_per_window_pct": Decimal("10"), "cap_window_minutes": 60,
                "max_actions_per_day": 10}
    return Rule(**{**defaults, **fields})


def _trigger(**fields) -> Trigger:
    defaults = {"metric": "ctr", "kind": Trigger.Kind.THRESHOLD, "direction": Trigger.Direction.BELOW,
                "window_minutes": 60, "baseline_minutes": 10080, "consecutive_windows": 1,
                "confidence": Decimal("0.95"), "k_sigma": Decimal("3")}
    return Trigger(**{**defaults, **fields})


def test_rule_summary__control_limit_sustained__reads_like_the_issue_example():
    rule = _rule(segment_filter={"device": "mobile"})
    spc = _trigger(kind=Trigger.Kind.CONTROL_LIMIT, k_sigma=Decimal("2.576"), consecutive_windows=3)
    assert rule_summary(rule, [spc]) == (
        "If CTR of any mobile segment falls below its 2.576σ (99%) control limit (from the previous 7 days) "
        "for 3 windows in a row of 1 hour each, lower its bid by 10%, at most 10% per hour."
    )


def test_rule_summary__any_of_two_triggers_with_scope_and_dayparting__joins_them_with_or():
    rule = _rule(match=Rule.Match.ANY, channel="search", segment_filter={"device": ["mobile", "tablet"], "geo": "FR"},
                 action=Rule.Action.REALLOCATE_BUDGET, action_value=Decimal("20"),
                 action_params={"rank_metric": "cvr", "receiver_count": 3}, active_hours_start=8,
                 active_hours_end=20, workspace=Workspace(name="Acme", time_zone="Europe/Paris"))
    cpa = _trigger(metric="cpa", direction=Trigger.Direction.ABOVE, threshold=Decimal("25"), window_minutes=120)
    cvr = _trigger(metric="cvr", kind=Trigger.Kind.SIGNIFICANT_CHANGE, direction=Trigger.Direction.EITHER,
                   confidence=Decimal("0.99"), baseline_minutes=1440)
    assert rule_summary(rule, [cpa, cvr]) == (
        "If CPA of any mobile or tablet search segment with geo FR is above 25.00 over the last 2 hours or its "
        "CVR changes significantly (99% confidence) over the last hour vs the previous day, move 20% of its daily "
        "budget to the campaign's 3 best segments by CVR, at most 10% per hour, only between 08:00 and 20:00 "
        "(Europe/Paris)."
    )


@pytest.mark.parametrize(("rule_fields", "trigger_fields", "expected"), [
    ({"action": Rule.Action.PAUSE_SEGMENT, "action_value": None, "max_actions_per_day": 5},
     {"metric": "bounce_rate", "kind": Trigger.Kind.RELATIVE_CHANGE, "direction": Trigger.Direction.ABOVE,
      "threshold": Decimal("20.000000"), "window_minutes": 30, "baseline_minutes": 1440},
     "If bounce rate of any segment rises by 20% or more over the last 30 minutes vs the previous day, pause it, "
     "at most 5 times a day."),
    ({"action": Rule.Action.BUDGET_PCT, "action_value": Decimal("15"), "max_change_per_window_pct": Decimal("5"),
      "cap_window_minutes": 30},
     {"metric": "roas", "direction": Trigger.Direction.ABOVE, "threshold": Decimal("4")},
     "If ROAS of any segment is above 4.00x over the last hour, raise its daily budget by 15%, at most 5% per "
     "30 minutes."),
    ({"action": Rule.Action.ALERT, "action_value": None},
     {"metric": "spend_pace", "kind": Trigger.Kind.CONTROL_LIMIT, "direction": Trigger.Direction.EITHER,
      "baseline_minutes": 2880},
     "If spend pace of any segment leaves its 3σ (99.7%) control limits (from the previous 2 days) over the last "
     "hour, send an alert."),
    ({"action": Rule.Action.ESCALATE_ALERT, "action_value": None, "action_params": {"pause": True}},
     {"metric": "cpm", "direction": Trigger.Direction.ABOVE, "threshold": Decimal("30"), "consecutive_windows": 2},
     "If CPM of any segment is above 30.00 for 2 windows in a row of 1 hour each, alert the approvers and pause "
     "it, at most 10 times a day."),
    ({"action": Rule.Action.SET_BID, "action_value": Decimal("0.5000")},
     {"metric": "avg_dwell", "threshold": Decimal("12")},
     "If average dwell time of any segment is below 12.0 s over the last hour, set its bid to 0.50, at most 10% "
     "per hour."),
])
def test_rule_summary__each_kind_and_action__says_what_it_does(rule_fields, trigger_fields, expected):
    assert rule_summary(_rule(**rule_fields), [_trigger(**trigger_fields)]) == expected


def test_rule_summary__without_triggers__says_it_never_fires():
    assert rule_summary(_rule(), []) == "No trigger yet: this rule never fires."


@pytest.mark.django_db
def test_rule_summary__saved_rule__reads_its_campaigns_and_triggers(workspace):
    spring, summer = CampaignFactory(workspace=workspace, name="Spring"), CampaignFactory(workspace=workspace,
                                                                                        name="Summer")
    rule = rule_create(actor=SYSTEM, workspace=workspace, owner=UserFactory(), name="Two campaigns",
                       action="bid_pct", action_value=Decimal("-5"), campaigns=[spring, summer],
                       triggers=[trigger(metric="cpc", kind="threshold", direction="above", threshold="2")])
    assert rule_summary(rule).startswith(
        "If CPC of any segment of Spring or Summer is above 2.00 over the last hour, lower its bid by 5%")
