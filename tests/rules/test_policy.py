"""The approval policy: routing (auto-apply or approval), campaign overrides, writes, and the one
state machine of a change (every illegal move refused)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from reversion.models import Version

from accounts.exceptions import PermissionDenied
from accounts.roles import Role
from audit.actors import Actor
from audit.models import AuditEvent
from campaigns.models import DeliveryStatus
from rules.approvals import change_approve, change_escalate, change_reject
from rules.changes import (
    TRANSITIONS,
    change_apply,
    change_mark_conflicted,
    change_propose,
    change_transition,
    changes_route,
)
from rules.exceptions import ChangeNotDecidable, IllegalTransition
from rules.models import ApprovalPolicy, Change
from rules.policy import (
    approval_policy_create,
    approval_policy_update,
    auto_applied_amount_in_day,
    policy_for,
)
from rulesplatform.change_rollback import change_rollback
from tests.factories import CampaignFactory, SegmentFactory
from tests.rules.facts import NOW, SYSTEM
from tests.rules.governance_builders import approver, policy, propose_bid
from tests.rules.pipeline_builders import reloaded, rule_with_action, run

pytestmark = pytest.mark.django_db
D = Decimal
Status = Change.Status


@pytest.fixture
def campaign(workspace):
    return CampaignFactory(workspace=workspace)


@pytest.fixture
def segment(campaign):
    return SegmentFactory(campaign=campaign, bid=D("1.00"), daily_budget=D("100"))


def propose(target, field, old, new, *, key, **fields):
    change, _ = change_propose(actor=SYSTEM, target=target, field=field, old_value=old, requested_value=new,
                               capped_value=new, cap_report=[], idempotency_key=key, now=NOW, **fields)
    return change


# --- routing -------------------------------------------------------------------------------------

def test_default_policy__auto_approves_a_move_within_10_percent(segment):
    change = propose_bid(segment, "1.1000")

    assert change.status == Status.APPROVED and all(e["held"] for e in change.policy_report)
    assert change_apply(actor=SYSTEM, change=change, now=NOW).status == Status.APPLIED


def test_default_policy__sends_a_larger_move_to_level_1(segment):
    assert propose_bid(segment, "1.1001").status == Status.PENDING


def test_daily_amount__counts_what_auto_applied_changes_moved_in_the_last_24_hours(workspace, segment):
    policy(workspace, auto_apply_max_pct=D("50"), auto_apply_max_daily_amount=D("25"))
    first = propose(segment, "daily_budget", "100.0000", "110.0000", key="a")
    change_apply(actor=SYSTEM, change=first, now=NOW)
    second = propose(reloaded(segment)[0], "daily_budget", "110.0000", "120.0000", key="b")
    change_apply(actor=SYSTEM, change=second, now=NOW)

    third = propose(reloaded(segment)[0], "daily_budget", "120.0000", "126.0000", key="c")

    assert auto_applied_amount_in_day(workspace_id=workspace.pk, now=NOW) == D("20")
    assert third.status == Status.PENDING  # 20 + 6 > 25
    assert [e["check"] for e in third.policy_report if not e["held"]] == ["daily_amount"]


def test_gates__pausing_a_campaign_always_needs_approval_by_default(campaign):
    change = propose(campaign, "status", DeliveryStatus.ACTIVE, DeliveryStatus.PAUSED, key="pause")

    assert change.status == Status.PENDING
    assert next(e for e in change.policy_report if e["check"] == "gates")["value"] == "pause_campaign"


def test_gates__a_manual_change_kind__can_be_gated(workspace, segment):
    policy(workspace, always_require_approval=["manual"])

    assert propose_bid(segment, "1.0100", kind=Change.Kind.MANUAL).status == Status.PENDING
    assert propose_bid(segment, "1.0100", key="rule").status == Status.APPROVED


def test_campaign_policy__replaces_the_workspace_policy_for_that_campaign_only(workspace, campaign, segment):
    policy(workspace, auto_apply_max_pct=D("50"))
    policy(workspace, campaign=campaign, auto_apply_max_pct=D("1"))
    elsewhere = SegmentFactory(campaign=CampaignFactory(workspace=workspace), bid=D("1.00"))

    assert propose_bid(segment, "1.2000", key="here").status == Status.PENDING
    assert propose_bid(elsewhere, "1.2000", key="there").status == Status.APPROVED
    assert policy_for(workspace_id=workspace.pk, campaign_id=campaign.pk).auto_apply_max_pct == D("1")


def test_rule_changes__go_through_the_policy(workspace, segment):
    policy(workspace, auto_apply_max_pct=D("5"))
    rule = rule_with_action(workspace, "bid_pct", 10)

    [planned] = run(rule, [segment])

    assert planned.change.status == Status.PENDING and reloaded(segment)[0].bid == D("1.0000")


def test_rule_changes__within_the_policy__apply_at_once(workspace, segment):
    rule = rule_with_action(workspace, "bid_pct", 10)

    [planned] = run(rule, [segment])

    assert planned.change.status == Status.APPLIED and reloaded(segment)[0].bid == D("1.1000")
    assert AuditEvent.objects.filter(action="change.auto_approve", subject_id=str(planned.change.pk)).exists()


def test_a_rollback__is_not_held_up_by_the_policy(workspace, segment, admin_actor):
    policy(workspace, auto_apply_max_pct=D("0"))
    applied = change_approve(actor=Actor.for_user(approver(workspace)), change=propose_bid(segment, "1.1000"))

    rollback = change_rollback(actor=admin_actor, change=applied, reason="Wrong segment")

    assert rollback.status == Status.APPLIED and reloaded(segment)[0].bid == D("1.0000")


# --- policy writes --------------------------------------------------------------------------------

def test_approval_policy_create__by_an_admin__is_audited_and_versioned(workspace, admin_actor):
    created = approval_policy_create(actor=admin_actor, workspace=workspace, auto_apply_max_pct=D("7"),
                                     level_sla_minutes=[30, 60, 120])

    approval_policy_update(actor=admin_actor, policy=created, auto_apply_max_pct=D("3"), reason="Tighter")

    assert created.max_level == 3 and created.sla_minutes(2) == 60
    assert AuditEvent.objects.filter(action="approval_policy.create", subject_id=str(created.pk)).exists()
    versions = Version.objects.get_for_object(created)
    assert [v.field_dict["auto_apply_max_pct"] for v in versions] == [D("3"), D("7")]


@pytest.mark.parametrize("role", [Role.MARKETER, Role.APPROVER, Role.INTEGRATOR])
def test_approval_policy_create__by_a_non_admin__is_refused(workspace, member, role):
    with pytest.raises(PermissionDenied):
        approval_policy_create(actor=Actor.for_user(member(role)), workspace=workspace)


@pytest.mark.parametrize("fields", [
    {"level_sla_minutes": []}, {"level_sla_minutes": [60, 0]}, {"level_sla_minutes": "60"},
    {"always_require_approval": ["launch_rockets"]}, {"approvals_required": 0},
])
def test_approval_policy_update__with_invalid_settings__is_refused(workspace, admin_actor, fields):
    created = approval_policy_create(actor=admin_actor, workspace=workspace)
    with pytest.raises(ValidationError):
        approval_policy_update(actor=admin_actor, policy=created, **fields)


def test_approval_policy_create__for_a_campaign_of_another_workspace__is_refused(workspace, other_workspace,
                                                                                 admin_actor):
    with pytest.raises(ValidationError):
        approval_policy_create(actor=admin_actor, workspace=workspace,
                               campaign=CampaignFactory(workspace=other_workspace))


def test_one_policy_per_workspace(workspace, admin_actor):
    approval_policy_create(actor=admin_actor, workspace=workspace)
    with pytest.raises(ValidationError):
        approval_policy_create(actor=admin_actor, workspace=workspace)
    assert ApprovalPolicy.objects.count() == 1


# --- one state machine ------------------------------------------------------------------------------

ALL = list(Status)
ILLEGAL = [(a, b) for a in ALL for b in ALL if b not in TRANSITIONS.get(a, frozenset())]


@pytest.mark.parametrize(("from_status", "to_status"), ILLEGAL)
def test_change_transition__every_move_outside_the_table__is_refused(from_status, to_status):
    change = Change(status=from_status)

    with pytest.raises(IllegalTransition):
        change_transition(change, to_status)
    assert change.status == from_status


def test_the_table__has_no_way_out_of_a_final_status():
    final = {Status.APPLIED, Status.REJECTED, Status.EXPIRED, Status.BLOCKED, Status.CONFLICTED, Status.FAILED}
    assert not final & set(TRANSITIONS)
    assert {to for targets in TRANSITIONS.values() for to in targets} >= final - {Status.BLOCKED}


@pytest.mark.parametrize("final", [Status.APPLIED, Status.REJECTED, Status.EXPIRED, Status.BLOCKED])
def test_services__refuse_to_decide_a_change_that_is_final(workspace, segment, final):
    change = propose_bid(segment, "1.5000")
    Change.objects.filter(pk=change.pk).update(status=final)
    decider = Actor.for_user(approver(workspace, level=3))

    for decide in (change_approve, change_reject, change_escalate):
        with pytest.raises(ChangeNotDecidable):
            decide(actor=decider, change=change, comment="c")
    with pytest.raises(IllegalTransition):
        change_mark_conflicted(actor=SYSTEM, change=change, reason="late")
    assert Change.objects.get(pk=change.pk).status == final


def test_a_pending_change__cannot_be_applied_without_approval(segment):
    change = propose_bid(segment, "1.5000")

    assert change_apply(actor=SYSTEM, change=change, now=NOW + timedelta(minutes=1)).status == Status.PENDING
    assert reloaded(segment)[0].bid == D("1.0000")


def test_changes_route__leaves_a_change_already_routed_alone(segment):
    change = propose_bid(segment, "1.5000")  # pending at level 1, by another run say
    due = change.sla_due_at

    changes_route(actor=SYSTEM, changes=[change], now=NOW + timedelta(minutes=30))

    change.refresh_from_db()
    assert (change.status, change.sla_due_at) == (Status.PENDING, due)
    assert AuditEvent.objects.filter(action="change.await_approval", subject_id=str(change.pk)).count() == 1
