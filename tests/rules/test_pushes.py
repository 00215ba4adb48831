"""Pushes of applied changes to the connectors: enqueued on commit, retried, behind a circuit breaker
whose state is in the database; a failed push stays visible and can be sent again."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from accounts.exceptions import Conflict
from audit.models import AuditEvent
from rules.changes import change_apply
from rules.exceptions import CircuitOpen, DeliveryFailed
from rules.models import Change, ChangePush, PlatformConnector, SandboxReceipt
from rules.pushes import (
    PUSH_LOST_AFTER,
    PUSH_RETRY_LOST_AFTER,
    breaker_admit,
    change_push_attempt,
    change_push_retry,
    connector_create,
    connector_ensure_sandbox,
    pushes_resend_lost,
)
from rules.tasks import resend_lost_pushes
from tests.factories import CampaignFactory, SegmentFactory, WorkspaceFactory
from tests.rules.facts import NOW, SYSTEM
from tests.rules.governance_builders import propose_bid
from tests.rules.receiver import Receiver
from tests.rules.test_changes import _in_threads, postgres_only

pytestmark = pytest.mark.django_db
Breaker = PlatformConnector.Breaker


def applied_change(segment, key: str) -> Change:
    segment.refresh_from_db()
    change = change_apply(actor=SYSTEM, change=propose_bid(segment, f"{segment.bid * Decimal('1.05'):.4f}", key=key),
                          now=NOW)
    assert change.status == Change.Status.APPLIED
    return change


def webhook_connector(workspace, admin_actor, receiver: Receiver, **fields) -> PlatformConnector:
    connector, secret = connector_create(actor=admin_actor, workspace=workspace, name="Ads platform",
                                         kind=PlatformConnector.Kind.WEBHOOK, url=receiver.url, **fields)
    receiver.secret = secret
    return connector


def test_an_applied_change__is_pushed_to_the_sandbox_after_commit(workspace, admin_actor, segment, eager_tasks,
                                                                 django_capture_on_commit_callbacks):
    connector = connector_ensure_sandbox(actor=admin_actor, workspace=workspace)

    with django_capture_on_commit_callbacks(execute=True):
        change = applied_change(segment, "a")

    push = ChangePush.objects.get(change=change)
    assert (push.connector, push.status, push.attempts) == (connector, ChangePush.Status.SUCCEEDED, 1)
    receipt = SandboxReceipt.objects.get(connector=connector)
    assert receipt.payload["new_value"] == "1.0500" and receipt.payload["delivery_key"] == f"change-{change.pk}"


def test_a_rolled_back_apply__enqueues_no_push(workspace, admin_actor, segment, django_capture_on_commit_callbacks):
    connector_ensure_sandbox(actor=admin_actor, workspace=workspace)

    with django_capture_on_commit_callbacks() as callbacks:
        applied_change(segment, "a")

    assert len(callbacks) == 1  # the push task is only enqueued when the apply commits
    assert ChangePush.objects.get().status == ChangePush.Status.PENDING


def test_a_disabled_connector__gets_no_push(workspace, admin_actor, segment):
    connector, _ = connector_create(actor=admin_actor, workspace=workspace, name="Off",
                                    kind=PlatformConnector.Kind.SANDBOX, enabled=False)

    applied_change(segment, "a")

    assert not ChangePush.objects.filter(connector=connector).exists()


def test_webhook_push__failure_then_recovery__the_breaker_opens_then_half_opens_and_closes(
        workspace, admin_actor, segment):
    with Receiver(statuses=[500, 500, 200]) as receiver:
        connector = webhook_connector(workspace, admin_actor, receiver, failure_threshold=2, cool_down_seconds=60)
        first, second = applied_change(segment, "a"), applied_change(segment, "b")
        push_1, push_2 = ChangePush.objects.get(change=first), ChangePush.objects.get(change=second)

        # Two failures in a row: the breaker opens.
        for push in (push_1, push_2):
            with pytest.raises(DeliveryFailed):
                change_push_attempt(push_id=push.pk, now=NOW)
        connector.refresh_from_db()
        assert (connector.breaker_state, connector.consecutive_failures) == (Breaker.OPEN, 2)

        # Within the cool-down nothing is sent: the push waits.
        with pytest.raises(CircuitOpen):
            change_push_attempt(push_id=push_1.pk, now=NOW + timedelta(seconds=30))
        assert len(receiver.requests) == 2

        # After it, one trial goes out (half-open); it succeeds and closes the breaker.
        assert change_push_attempt(push_id=push_1.pk, now=NOW + timedelta(seconds=61)).status == "succeeded"
        connector.refresh_from_db()
        assert (connector.breaker_state, connector.consecutive_failures) == (Breaker.CLOSED, 0)
        assert change_push_attempt(push_id=push_2.pk, now=NOW + timedelta(seconds=62)).status == "succeeded"

    assert [r.signature_valid for r in receiver.requests] == [True] * 4
    assert [r.json["change_id"] for r in receiver.requests] == [first.pk, second.pk, first.pk, second.pk]
    push_1.refresh_from_db()
    assert (push_1.attempts, push_1.last_status_code) == (2, 200)


def test_breaker__a_failed_trial_reopens_it_for_another_cool_down(workspace, admin_actor, segment):
    with Receiver(statuses=[500]) as receiver:
        connector = webhook_connector(workspace, admin_actor, receiver, failure_threshold=1, cool_down_seconds=60)
        push = ChangePush.objects.get(change=applied_change(segment, "a"))
        with pytest.raises(DeliveryFailed):
            change_push_attempt(push_id=push.pk, now=NOW)
        with pytest.raises(DeliveryFailed):
            change_push_attempt(push_id=push.pk, now=NOW + timedelta(seconds=61))  # the trial fails

        connector.refresh_from_db()
        assert (connector.breaker_state, connector.breaker_changed_at) == (Breaker.OPEN, NOW + timedelta(seconds=61))
        with pytest.raises(CircuitOpen):
            change_push_attempt(push_id=push.pk, now=NOW + timedelta(seconds=100))
        assert len(receiver.requests) == 2


def test_breaker__only_one_worker_claims_the_half_open_trial(workspace, admin_actor):
    connector, _ = connector_create(actor=admin_actor, workspace=workspace, name="Hook", kind="webhook",
                                    url="http://127.0.0.1:9/", cool_down_seconds=60)
    PlatformConnector.objects.filter(pk=connector.pk).update(breaker_state=Breaker.OPEN, breaker_changed_at=NOW)
    connector.refresh_from_db()
    later = NOW + timedelta(seconds=61)

    assert [breaker_admit(connector, now=later), breaker_admit(connector, now=later)] == [True, False]


def test_a_push_that_fails_for_good__stays_visible_and_can_be_sent_again(workspace, admin_actor, segment,
                                                                        client_for, admin_user,
                                                                        django_capture_on_commit_callbacks):
    with Receiver(statuses=[503]) as receiver:
        webhook_connector(workspace, admin_actor, receiver)
        change = applied_change(segment, "a")
        push = ChangePush.objects.get(change=change)
        change_push_attempt(push_id=push.pk, final=True, now=NOW)

    push.refresh_from_db()
    assert (push.status, push.attempts, push.last_status_code) == (ChangePush.Status.FAILED, 1, 503)
    listed = client_for(admin_user).get("/api/v1/change-pushes/", {"status": "failed"}).json()["results"]
    assert [(p["change"], p["status"]) for p in listed] == [(change.pk, "failed")]
    assert client_for(admin_user).get(f"/api/v1/changes/{change.pk}/").json()["status"] == "applied"

    with django_capture_on_commit_callbacks() as callbacks:
        change_push_retry(actor=admin_actor, push=push)
    push.refresh_from_db()
    assert push.status == ChangePush.Status.PENDING and len(callbacks) == 1
    with pytest.raises(Conflict):
        change_push_retry(actor=admin_actor, push=push)


def test_change_admin__shows_an_applied_change_whose_push_failed(workspace, admin_actor, admin_user, segment):
    with Receiver(statuses=[503]) as receiver:
        webhook_connector(workspace, admin_actor, receiver)
        change = applied_change(segment, "a")
        change_push_attempt(push_id=ChangePush.objects.get(change=change).pk, final=True, now=NOW)
    client = Client()
    client.force_login(admin_user)

    listing = client.get("/admin/rules/change/")
    page = client.get(f"/admin/rules/change/{change.pk}/change/")

    assert "Ads platform: push failed (1 attempts" in listing.text
    assert page.status_code == 200 and "push failed" in page.text


# --- pushes whose task was lost --------------------------------------------------------------------

def _lost_push(segment, admin_actor, *, key: str = "a", **fields) -> ChangePush:
    """A pending push whose enqueue never happened: its change's on-commit callback is never run here."""
    connector_ensure_sandbox(actor=admin_actor, workspace=segment.campaign.workspace)
    push = ChangePush.objects.get(change=applied_change(segment, key))
    ChangePush.objects.filter(pk=push.pk).update(**fields)
    return ChangePush.objects.get(pk=push.pk)


def test_resend_lost_pushes__never_tried_past_the_limit__is_claimed_sent_and_audited(
        segment, admin_actor, eager_tasks, django_capture_on_commit_callbacks):
    push = _lost_push(segment, admin_actor, created_at=timezone.now() - PUSH_LOST_AFTER - timedelta(minutes=1))

    with django_capture_on_commit_callbacks(execute=True):
        assert resend_lost_pushes.delay().get() == 1

    push.refresh_from_db()
    assert (push.status, push.attempts) == (ChangePush.Status.SUCCEEDED, 1)
    assert SandboxReceipt.objects.get().payload["change_id"] == push.change_id
    event = AuditEvent.objects.get(action="change.push_resent")
    assert (event.subject_id, event.before) == (str(push.pk), {"last_attempt_at": None})


def test_resend_lost_pushes__recent_or_still_retrying__are_left_alone(segment, admin_actor):
    now = timezone.now()
    recent = _lost_push(segment, admin_actor, key="a", created_at=now - PUSH_LOST_AFTER + timedelta(minutes=1))
    retrying = _lost_push(segment, admin_actor, key="b", created_at=now - timedelta(hours=3), attempts=4,
                          last_attempt_at=now - PUSH_RETRY_LOST_AFTER + timedelta(minutes=1))
    done = _lost_push(segment, admin_actor, key="c", created_at=now - timedelta(hours=3),
                      status=ChangePush.Status.FAILED)

    assert pushes_resend_lost(now=now) == []
    for push in (recent, retrying, done):
        assert ChangePush.objects.get(pk=push.pk).last_attempt_at == push.last_attempt_at


def test_resend_lost_pushes__a_retry_silent_past_the_longest_backoff__is_sent_again(segment, admin_actor):
    now = timezone.now()
    push = _lost_push(segment, admin_actor, created_at=now - timedelta(hours=3), attempts=4,
                      last_attempt_at=now - PUSH_RETRY_LOST_AFTER - timedelta(minutes=1))

    assert pushes_resend_lost(now=now) == [push.pk]
    assert ChangePush.objects.get(pk=push.pk).last_attempt_at == now


def test_resend_lost_pushes__the_next_beat__does_not_send_it_again(segment, admin_actor):
    now = timezone.now()
    push = _lost_push(segment, admin_actor, created_at=now - PUSH_LOST_AFTER - timedelta(minutes=1))

    assert pushes_resend_lost(now=now) == [push.pk]
    assert pushes_resend_lost(now=now + timedelta(minutes=5)) == []
    assert AuditEvent.objects.filter(action="change.push_resent").count() == 1


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_beats__resend_a_lost_push_exactly_once():
    workspace = WorkspaceFactory()
    segment = SegmentFactory(campaign=CampaignFactory(workspace=workspace), bid=Decimal("1.00"))
    change = propose_bid(segment, "1.1000")
    connector = connector_ensure_sandbox(actor=SYSTEM, workspace=workspace)
    push = ChangePush.objects.create(workspace=workspace, change=change, connector=connector)
    ChangePush.objects.filter(pk=push.pk).update(created_at=timezone.now() - timedelta(hours=1))

    results = _in_threads(4, lambda: pushes_resend_lost(now=timezone.now()))

    assert sorted(results) == [[], [], [], [push.pk]]
    assert AuditEvent.objects.filter(action="change.push_resent").count() == 1
