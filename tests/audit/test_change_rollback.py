"""Rolling back an applied change: the inverse change through the pipeline, compare-and-set, rights."""

from decimal import Decimal

import pytest

from accounts.exceptions import ApplicationError, Conflict, PermissionDenied
from accounts.roles import Role
from audit.actors import Actor
from audit.models import AuditEvent
from audit.selectors import object_history
from campaigns import services as campaign_services
from rules.changes import change_apply, change_propose
from rules.models import Change
from rulesplatform.change_rollback import change_rollback
from tests.factories import SegmentFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def segment(workspace):
    return SegmentFactory(campaign__workspace=workspace, bid=Decimal("1.0000"))


@pytest.fixture
def applied_change(segment, admin_actor):
    change, _ = change_propose(
        actor=admin_actor, target=segment, field=Change.Field.BID, old_value="1.0000", requested_value="1.2000",
        capped_value="1.1000", cap_report=[], idempotency_key="manual:1", kind=Change.Kind.MANUAL, reason="push",
    )
    change = change_apply(actor=admin_actor, change=change)
    assert change.status == Change.Status.APPLIED
    return change


def test_change_rollback__applies_the_inverse_change_as_a_new_change(applied_change, segment, admin_actor):
    rollback = change_rollback(actor=admin_actor, change=applied_change, reason="CPA doubled")

    segment.refresh_from_db()
    assert segment.bid == Decimal("1.0000")
    assert (rollback.kind, rollback.status) == (Change.Kind.ROLLBACK, Change.Status.APPLIED)
    assert (rollback.old_value, rollback.capped_value) == ("1.1000", "1.0000")
    assert "CPA doubled" in rollback.reason
    applied_change.refresh_from_db()
    assert applied_change.status == Change.Status.APPLIED  # the original is history, untouched
    # The target's versions: the change, then its rollback.
    assert len(object_history(type(segment), segment.pk, workspace_ids=None)) == 2
    assert AuditEvent.objects.filter(action="change.apply", after__change=rollback.pk).exists()


def test_change_rollback__when_the_target_moved_since__is_refused_with_the_values(
    applied_change, segment, admin_actor
):
    campaign_services.segment_update(actor=admin_actor, segment=segment, bid=Decimal("1.5"))

    with pytest.raises(Conflict, match="moved since") as refused:
        change_rollback(actor=admin_actor, change=applied_change, reason="undo")

    assert refused.value.extra == {"change": applied_change.pk, "applied_value": "1.1000",
                                   "current_value": "1.5000"}
    assert not Change.objects.filter(kind=Change.Kind.ROLLBACK).exists()


def test_change_rollback__forced_by_a_workspace_admin__overrides_the_later_move(applied_change, segment, admin_actor):
    campaign_services.segment_update(actor=admin_actor, segment=segment, bid=Decimal("1.5"))

    rollback = change_rollback(actor=admin_actor, change=applied_change, reason="undo anyway", force=True)

    segment.refresh_from_db()
    assert segment.bid == Decimal("1.0000")
    assert rollback.old_value == "1.5000"
    assert "(forced)" in rollback.reason


def test_change_rollback__twice__is_refused(applied_change, admin_actor):
    change_rollback(actor=admin_actor, change=applied_change, reason="undo")

    with pytest.raises(Conflict, match="already been rolled back"):
        change_rollback(actor=admin_actor, change=applied_change, reason="undo again")


def test_change_rollback__by_an_approver__is_refused(applied_change, member):
    with pytest.raises(PermissionDenied):
        change_rollback(actor=Actor.for_user(member(Role.APPROVER)), change=applied_change, reason="no")


def test_change_rollback__without_a_reason__is_refused(applied_change, admin_actor):
    with pytest.raises(ApplicationError, match="why"):
        change_rollback(actor=admin_actor, change=applied_change, reason="")


def test_change_rollback__of_a_change_not_applied__is_refused(segment, admin_actor):
    change, _ = change_propose(
        actor=admin_actor, target=segment, field=Change.Field.BID, old_value="1.0000", requested_value="1.2000",
        capped_value="1.1000", cap_report=[], idempotency_key="manual:2", kind=Change.Kind.MANUAL,
    )

    with pytest.raises(Conflict, match="Only an applied change"):
        change_rollback(actor=admin_actor, change=change, reason="undo")
