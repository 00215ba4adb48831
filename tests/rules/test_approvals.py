"""Deciding changes: four eyes, levels and limits, comments, content binding, SLA escalation, expiry."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from accounts.roles import Role
from audit.actors import Actor
from audit.models import AuditEvent
from campaigns.models import Segment
from rules.approvals import (
    change_approve,
    change_escalate,
    change_reject,
    change_revise,
    changes_escalate_overdue,
    changes_expire,
)
from rules.binding import content_hash
from rules.changes import change_apply, change_propose, changes_route
from rules.exceptions import (
    AboveApprovalLevel,
    AboveApprovalLimit,
    AlreadyApprovedByYou,
    ApprovalNoLongerValid,
    CannotApproveOwnChange,
    ChangeContentChanged,
    ChangeNotDecidable,
    CommentRequired,
    NotAnApprover,
    TopLevelReached,
)
from rules.models import Approval, Change
from rules.schedules import GOVERNANCE_BEAT_TASKS
from rules.tasks import escalate_overdue_changes, expire_waiting_changes
from tests.factories import CampaignFactory, SegmentFactory, WorkspaceFactory
from tests.rules.facts import NOW, SYSTEM
from tests.rules.governance_builders import approver, policy, propose_bid
from tests.rules.pipeline_builders import reloaded, rule_with_action, run
from tests.rules.test_changes import _in_threads, postgres_only

pytestmark = pytest.mark.django_db
D = Decimal
Status = Change.Status


@pytest.fixture
def strict_policy(workspace):
    """Auto-applies moves of at most 5%; two levels (60 and 240 minutes); expiry after 12 hours."""
    return policy(workspace, auto_apply_max_pct=D("5"))


@pytest.fixture
def pending(strict_policy, segment):
    """A 10% bid change waiting at level 1."""
    change = propose_bid(segment, "1.1000")
    assert (change.status, change.approval_level) == (Status.PENDING, 1)
    return change


def as_actor(user):
    return Actor.for_user(user)


# --- routing into the workflow ------------------------------------------------------------------

def test_change_propose__above_the_policy__waits_at_level_1_with_sla_and_expiry(pending):
    assert pending.sla_due_at == NOW + timedelta(minutes=60)
    assert pending.expires_at == NOW + timedelta(minutes=720)
    assert [e["check"] for e in pending.policy_report if not e["held"]] == ["max_pct"]
    assert change_apply(actor=SYSTEM, change=pending).status == Status.PENDING  # not applicable before approval


# --- approve --------------------------------------------------------------------------------------

def test_change_approve__by_an_approver_of_the_level__applies_the_change(workspace, pending, segment):
    decided = change_approve(actor=as_actor(approver(workspace)), change=pending, now=NOW)

    assert decided.status == Status.APPLIED
    assert reloaded(segment)[0].bid == D("1.1000")
    approval = Approval.objects.get(change=pending, decision=Approval.Decision.APPROVE)
    assert approval.content_hash == content_hash(decided) and approval.level == 1


def test_change_approve__by_the_requester__is_refused(workspace, strict_policy, segment):
    marketer_admin = approver(workspace, role=Role.ADMIN)
    change = propose_bid(segment, "1.1000", actor=as_actor(marketer_admin))

    with pytest.raises(CannotApproveOwnChange):
        change_approve(actor=as_actor(marketer_admin), change=change)
    assert Change.objects.get(pk=change.pk).status == Status.PENDING


def test_change_approve__by_the_owner_of_the_rule_that_made_it__is_refused(workspace, strict_policy, segment):
    owner = approver(workspace, level=2)
    rule = rule_with_action(workspace, "bid_pct", 10, owner=owner)
    [planned] = run(rule, [segment])
    assert planned.change.status == Status.PENDING

    with pytest.raises(CannotApproveOwnChange, match="your rule"):
        change_approve(actor=as_actor(owner), change=planned.change)


def test_change_approve__above_the_approvers_limit__is_refused_and_escalation_is_offered(workspace, pending):
    limited = approver(workspace, approval_limit_pct=D("5"))

    with pytest.raises(AboveApprovalLimit, match="Escalate it instead"):
        change_approve(actor=as_actor(limited), change=pending)

    escalated = change_escalate(actor=as_actor(limited), change=pending, comment="Above my 5% limit", now=NOW)
    assert (escalated.status, escalated.approval_level) == (Status.ESCALATED, 2)
    assert escalated.sla_due_at == NOW + timedelta(minutes=240)


def test_change_approve__above_the_approvers_amount_limit__is_refused(workspace, segment):
    policy(workspace, auto_apply_max_daily_amount=D("5"))
    change, _ = _propose_budget(segment, "110.0000")
    with pytest.raises(AboveApprovalLimit, match="10.00 a day"):
        change_approve(actor=as_actor(approver(workspace, approval_limit_amount=D("9"))), change=change)


def test_change_approve__at_a_level_above_the_approvers__is_refused(workspace, pending):
    change_escalate(actor=as_actor(approver(workspace)), change=pending, comment="For level 2")

    with pytest.raises(AboveApprovalLevel):
        change_approve(actor=as_actor(approver(workspace, level=1)), change=pending)
    assert change_approve(actor=as_actor(approver(workspace, level=2)), change=pending).status == Status.APPLIED


@pytest.mark.parametrize("role", [Role.MARKETER, Role.INTEGRATOR])
def test_change_approve__by_a_role_that_does_not_decide__is_refused(workspace, pending, member, role):
    with pytest.raises(NotAnApprover):
        change_approve(actor=as_actor(member(role, approval_level=3)), change=pending)


def test_change_approve__by_an_approver_with_level_0__is_refused(workspace, pending):
    with pytest.raises(NotAnApprover):
        change_approve(actor=as_actor(approver(workspace, level=0)), change=pending)


def test_change_approve__by_a_worker__is_refused(pending):
    with pytest.raises(NotAnApprover):
        change_approve(actor=Actor.worker("sneaky"), change=pending)


def test_change_approve__of_another_workspaces_change__is_refused(other_workspace, pending):
    with pytest.raises(NotAnApprover):
        change_approve(actor=as_actor(approver(other_workspace, level=5)), change=pending)


def test_change_approve__when_the_target_moved__leaves_the_change_conflicted(workspace, pending, segment):
    Segment.objects.filter(pk=segment.pk).update(bid=D("1.5000"))

    decided = change_approve(actor=as_actor(approver(workspace)), change=pending)

    assert decided.status == Status.CONFLICTED
    assert reloaded(segment)[0].bid == D("1.5000")


# --- four eyes and more: several approvers, bound to the content ---------------------------------

def test_change_approve__with_two_approvals_required__applies_only_after_a_second_approver(workspace, segment):
    policy(workspace, auto_apply_max_pct=D("5"), approvals_required=2)
    change = propose_bid(segment, "1.1000")
    first, second = approver(workspace), approver(workspace)

    assert change_approve(actor=as_actor(first), change=change).status == Status.PENDING
    with pytest.raises(AlreadyApprovedByYou):
        change_approve(actor=as_actor(first), change=change)
    assert change_approve(actor=as_actor(second), change=change).status == Status.APPLIED


def test_an_approval__is_void_once_the_change_is_revised(workspace, segment, member):
    policy(workspace, auto_apply_max_pct=D("5"), approvals_required=2)
    change = propose_bid(segment, "1.1000")
    first, second = approver(workspace), approver(workspace)
    change_approve(actor=as_actor(first), change=change, now=NOW)

    revised = change_revise(actor=as_actor(member(Role.MARKETER)), change=change, value="1.0800",
                            reason="A smaller step", now=NOW)
    after_second = change_approve(actor=as_actor(second), change=revised, now=NOW)

    # The first approval was for 1.1000: it no longer counts, so one approval of two is still missing.
    assert (revised.revision, revised.capped_value, revised.approval_level) == (1, "1.0800", 1)
    assert after_second.status == Status.PENDING
    assert change_approve(actor=as_actor(first), change=revised, now=NOW).status == Status.APPLIED
    assert reloaded(segment)[0].bid == D("1.0800")


def test_change_approve__on_content_the_approver_did_not_see__is_refused(workspace, pending, member):
    seen = content_hash(pending)
    change_revise(actor=as_actor(member(Role.MARKETER)), change=pending, value="1.0900", reason="Smaller")

    with pytest.raises(ChangeContentChanged):
        change_approve(actor=as_actor(approver(workspace)), change=pending, content_hash=seen)
    assert Change.objects.get(pk=pending.pk).status == Status.PENDING


def test_change_apply__of_an_approved_change_edited_since__is_refused(workspace, segment):
    policy(workspace)  # defaults: a 10% step auto-applies
    change = propose_bid(segment, "1.1000", key="auto")
    assert change.status == Status.APPROVED  # approved, not yet applied (the caller applies it)
    Change.objects.filter(pk=change.pk).update(capped_value="1.2000")  # edited behind the services' back

    with pytest.raises(ApprovalNoLongerValid):
        change_apply(actor=SYSTEM, change=change)
    assert reloaded(segment)[0].bid == D("1.0000")


# --- reject, escalate, comments ----------------------------------------------------------------

def test_change_reject__needs_a_comment_and_then_is_final(workspace, pending, segment):
    decider = as_actor(approver(workspace))
    with pytest.raises(CommentRequired):
        change_reject(actor=decider, change=pending, comment="  ")

    rejected = change_reject(actor=decider, change=pending, comment="Too early in the day")

    assert rejected.status == Status.REJECTED and reloaded(segment)[0].bid == D("1.0000")
    with pytest.raises(ChangeNotDecidable):
        change_approve(actor=decider, change=pending)


def test_change_escalate__needs_a_comment(workspace, pending):
    with pytest.raises(CommentRequired):
        change_escalate(actor=as_actor(approver(workspace)), change=pending, comment="")


def test_change_escalate__at_the_top_level__is_refused(workspace, pending):
    change_escalate(actor=as_actor(approver(workspace, level=2)), change=pending, comment="up")
    with pytest.raises(TopLevelReached):
        change_escalate(actor=as_actor(approver(workspace, level=2)), change=pending, comment="further up")


# --- the SLA clock, with time travel -----------------------------------------------------------------

def test_changes_escalate_overdue__escalates_once_when_the_sla_runs_out(pending):
    assert changes_escalate_overdue(now=NOW + timedelta(minutes=59)) == []

    assert changes_escalate_overdue(now=NOW + timedelta(minutes=61)) == [pending.pk]
    assert changes_escalate_overdue(now=NOW + timedelta(minutes=62)) == []  # claimed: never twice

    change = Change.objects.get(pk=pending.pk)
    assert (change.status, change.approval_level) == (Status.ESCALATED, 2)
    assert change.sla_due_at == NOW + timedelta(minutes=61 + 240)
    assert AuditEvent.objects.filter(action="change.escalate", subject_id=str(pending.pk)).count() == 1
    assert Approval.objects.get(change=pending, decision=Approval.Decision.ESCALATE).actor_label == (
        "system:approval_sla")


def test_changes_escalate_overdue__at_the_top_level__stops_the_clock_and_waits_for_expiry(pending):
    changes_escalate_overdue(now=NOW + timedelta(minutes=61))

    assert changes_escalate_overdue(now=NOW + timedelta(minutes=61 + 241)) == []

    change = Change.objects.get(pk=pending.pk)
    assert (change.status, change.approval_level, change.sla_due_at) == (Status.ESCALATED, 2, None)
    assert AuditEvent.objects.filter(action="change.sla_breach", subject_id=str(pending.pk)).count() == 1


def test_changes_escalate_overdue__skips_a_change_decided_meanwhile(workspace, pending):
    change_reject(actor=as_actor(approver(workspace)), change=pending, comment="No")

    assert changes_escalate_overdue(now=NOW + timedelta(days=1)) == []
    assert Change.objects.get(pk=pending.pk).status == Status.REJECTED


def test_changes_expire__expires_a_change_waiting_past_its_expiry_once(pending, segment):
    assert changes_expire(now=NOW + timedelta(minutes=719)) == []

    assert changes_expire(now=NOW + timedelta(minutes=720)) == [pending.pk]
    assert changes_expire(now=NOW + timedelta(minutes=721)) == []

    assert Change.objects.get(pk=pending.pk).status == Status.EXPIRED
    assert reloaded(segment)[0].bid == D("1.0000")


# --- batches are decided as one ---------------------------------------------------------------------

def test_a_reallocation_batch__waits_as_one_and_is_approved_as_one(workspace):
    policy(workspace, always_require_approval=["reallocation"])
    campaign = CampaignFactory(workspace=workspace)
    giver, receiver = SegmentFactory(campaign=campaign), SegmentFactory(campaign=campaign)
    changes = [_propose_budget(giver, "95.0000", key="g", batch_id="b")[0],
               _propose_budget(receiver, "105.0000", key="r", batch_id="b")[0]]
    assert {c.status for c in changes} == {Status.PROPOSED}  # the caller routes the batch as one

    routed = changes_route(actor=SYSTEM, changes=changes, now=NOW)
    assert {c.status for c in routed} == {Status.PENDING}

    change_approve(actor=as_actor(approver(workspace)), change=routed[1], now=NOW)

    assert set(Change.objects.filter(batch_id="b").values_list("status", flat=True)) == {Status.APPLIED}
    assert [s.daily_budget for s in reloaded(giver, receiver)] == [D("95.0000"), D("105.0000")]


def _propose_budget(segment, new_budget: str, *, key: str = "test:budget", batch_id: str = ""):
    return change_propose(
        actor=SYSTEM, target=segment, field=Change.Field.DAILY_BUDGET, old_value=f"{segment.daily_budget:.4f}",
        requested_value=new_budget, capped_value=new_budget, cap_report=[], idempotency_key=key, now=NOW,
        batch_id=batch_id, route_now=not batch_id,
    )


# --- the beat ------------------------------------------------------------------------------------------

def test_governance_beat_tasks__are_created_by_migrate():
    for name, task, minutes in GOVERNANCE_BEAT_TASKS:
        periodic = PeriodicTask.objects.get(name=name)
        assert (periodic.task, periodic.interval.every) == (task, minutes)


def test_escalate_overdue_changes_task__escalates_what_is_due_now(workspace, strict_policy, segment):
    change = propose_bid(segment, "1.1000", now=timezone.now() - timedelta(minutes=61))

    assert escalate_overdue_changes.apply().get() == 1
    assert Change.objects.get(pk=change.pk).approval_level == 2
    assert expire_waiting_changes.apply().get() == 0


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_beats__escalate_an_overdue_change_exactly_once():
    workspace = WorkspaceFactory()
    policy(workspace, auto_apply_max_pct=D("5"))
    segment = SegmentFactory(campaign=CampaignFactory(workspace=workspace), bid=D("1.00"))
    change = propose_bid(segment, "1.1000")

    results = _in_threads(4, lambda: changes_escalate_overdue(now=NOW + timedelta(minutes=61)))

    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    assert Approval.objects.filter(change=change, decision=Approval.Decision.ESCALATE).count() == 1
    assert Change.objects.get(pk=change.pk).approval_level == 2
