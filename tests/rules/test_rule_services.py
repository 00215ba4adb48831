"""Rule services: nested triggers as one versioned operation, roles, validation messages, audit."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from accounts.exceptions import Conflict, PermissionDenied
from accounts.roles import Role
from audit.actors import Actor
from audit.models import AuditEvent
from rules.models import Rule
from rules.services import rule_activate, rule_archive, rule_create, rule_pause, rule_update
from tests.factories import CampaignFactory
from tests.rules.facts import trigger

pytestmark = pytest.mark.django_db

CTR_DROP = trigger(metric="ctr", kind="relative_change", direction="below", threshold=Decimal("20"))


@pytest.fixture
def marketer(member):
    return Actor.for_user(member(Role.MARKETER))


@pytest.fixture
def approver(member):
    return Actor.for_user(member(Role.APPROVER))


def _create(actor, workspace, **fields):
    fields = {"name": "CTR drop", "action": "bid_pct", "action_value": Decimal("-10"), "triggers": [CTR_DROP],
              **fields}
    return rule_create(actor=actor, workspace=workspace, owner=actor.user, **fields)


def test_rule_create__by_marketer__is_a_draft_with_its_triggers_and_audited(workspace, marketer):
    campaign = CampaignFactory(workspace=workspace)
    rule = _create(marketer, workspace, campaigns=[campaign])
    assert (rule.status, rule.version) == (Rule.Status.DRAFT, 1)
    assert list(rule.triggers.values_list("metric", "kind", "position")) == [("ctr", "relative_change", 0)]
    event = AuditEvent.objects.get(action="rule.create")
    assert event.after["triggers"][0]["metric"] == "ctr"
    assert event.after["campaigns"] == [campaign.pk]


def test_rule_create__by_approver__is_refused(workspace, approver):
    with pytest.raises(PermissionDenied):
        _create(approver, workspace)


def test_rule_update__replaces_triggers_and_raises_the_version_once(workspace, marketer):
    rule = _create(marketer, workspace)
    cpa = trigger(metric="cpa", kind="threshold", direction="above", threshold=Decimal("40"))
    rule = rule_update(actor=marketer, rule=rule, triggers=[cpa, CTR_DROP], name="CPA and CTR")
    assert rule.version == 2
    assert list(rule.triggers.values_list("metric", flat=True)) == ["cpa", "ctr"]
    event = AuditEvent.objects.get(action="rule.update")
    assert [t["metric"] for t in event.before["triggers"]] == ["ctr"]
    assert [t["metric"] for t in event.after["triggers"]] == ["cpa", "ctr"]


def test_rule_update__without_triggers__keeps_them(workspace, marketer):
    rule = rule_update(actor=marketer, rule=_create(marketer, workspace), description="Watch mobile")
    assert rule.triggers.count() == 1 and rule.version == 2


def test_rule_update__active_rule_by_marketer__is_refused(workspace, marketer, approver):
    rule = rule_activate(actor=approver, rule=_create(marketer, workspace))
    with pytest.raises(PermissionDenied, match="pause it before editing"):
        rule_update(actor=marketer, rule=rule, description="x")


def test_rule_status__activate_pause_archive_need_the_activate_permission(workspace, marketer, approver):
    rule = _create(marketer, workspace)
    with pytest.raises(PermissionDenied):
        rule_activate(actor=marketer, rule=rule)
    assert rule_activate(actor=approver, rule=rule).status == Rule.Status.ACTIVE
    assert rule_pause(actor=approver, rule=rule).status == Rule.Status.PAUSED
    assert rule_archive(actor=approver, rule=rule).status == Rule.Status.ARCHIVED
    with pytest.raises(Conflict):
        rule_activate(actor=approver, rule=rule)
    assert list(AuditEvent.objects.filter(action__startswith="rule.").values_list("action", flat=True)) == [
        "rule.create", "rule.activate", "rule.pause", "rule.archive"]


def test_rule_activate__without_triggers__is_refused(workspace, marketer, approver):
    rule = _create(marketer, workspace, triggers=[])
    with pytest.raises(ValidationError) as error:
        rule_activate(actor=approver, rule=rule)
    assert error.value.message_dict["triggers"] == ["A rule needs at least one trigger before it can run."]


@pytest.mark.parametrize(("fields", "key", "message"), [
    ({"triggers": [trigger(metric="ctrr", kind="threshold", direction="below", threshold=Decimal("0.01"))]},
     "triggers[0].metric", "Unknown metric “ctrr”. Choose one of: "),
    ({"triggers": [trigger(metric="ctr", kind="threshold", direction="below")]},
     "triggers[0].threshold", "A trigger on an absolute threshold needs a threshold."),
    ({"triggers": [trigger(metric="ctr", kind="threshold", direction="below", threshold=Decimal("1.5"))]},
     "triggers[0].threshold", "Click-through rate is a rate between 0 and 1: write 0.015 for 1.5%."),
    ({"triggers": [trigger(metric="ctr", kind="control_limit", threshold=Decimal("3"))]},
     "triggers[0].threshold", "A “Outside control limit (SPC)” trigger takes no threshold: leave it empty."),
    ({"triggers": [trigger(metric="cpa", kind="significant_change")]},
     "triggers[0].window_minutes", "A significance test on Cost per acquisition compares per-bucket values"),
    ({"triggers": [{**CTR_DROP, "window_minutes": 45}]},
     "triggers[0].window_minutes", "Use a whole number of metric buckets: a multiple of 60 minutes."),
    ({"max_step_pct": Decimal("30")}, "max_step_pct", "Max step 30% is wider than the workspace guardrail of 20%."),
    ({"max_change_per_window_pct": Decimal("10"), "cap_window_minutes": 30}, "max_change_per_window_pct",
     "Max change 10% per 30 minutes allows 20% per hour, wider than the workspace guardrail of 10% per hour."),
    ({"action_value": None}, "action_value", "“Change bid by %” needs a value."),
    ({"active_hours_start": 9}, "active_hours_end", "Set both the start and the end hour"),
    ({"segment_filter": {"colour": "red"}}, "segment_filter", "Unknown segment attribute “colour”."),
])
def test_rule_create__invalid_settings__say_what_is_wrong(workspace, marketer, fields, key, message):
    with pytest.raises(ValidationError) as error:
        _create(marketer, workspace, **fields)
    assert any(m.startswith(message) for m in error.value.message_dict[key]), error.value.message_dict
    assert not Rule.objects.exists()


def test_rule_create__campaign_of_another_workspace__is_refused(workspace, other_workspace, marketer):
    with pytest.raises(ValidationError) as error:
        _create(marketer, workspace, campaigns=[CampaignFactory(workspace=other_workspace, name="Theirs")])
    assert error.value.message_dict["campaigns"] == ["Not campaigns of this workspace: Theirs."]
