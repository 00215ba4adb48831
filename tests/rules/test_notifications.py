"""Notifications: e-mail and signed webhooks to a real local receiver, sent after commit, retried
with backoff, every attempt in the delivery log."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail

from accounts.roles import Role
from audit.actors import Actor
from campaigns.models import DeliveryStatus
from rules.approvals import change_escalate, change_reject, changes_escalate_overdue
from rules.exceptions import DeliveryFailed
from rules.manual_changes import change_propose_manual
from rules.models import Change, NotificationDelivery, NotificationEvent, Rule
from rules.notifications import notification_deliver, notification_endpoint_create
from rules.tasks import deliver_notification
from tests.rules.facts import NOW
from tests.rules.governance_builders import approver, policy
from tests.rules.pipeline_builders import reloaded, rule_with_action, run
from tests.rules.receiver import Receiver

pytestmark = pytest.mark.django_db
Delivery = NotificationDelivery


@pytest.fixture
def people(workspace, member):
    policy(workspace, auto_apply_max_pct=Decimal("5"))
    return {
        "marketer": member(Role.MARKETER),
        "level1": approver(workspace, level=1),
        "level2": approver(workspace, level=2),
        "integrator": member(Role.INTEGRATOR),
    }


def propose(people, segment, value="1.1000") -> Change:
    return change_propose_manual(actor=Actor.for_user(people["marketer"]), target=segment, field="bid", value=value,
                                 reason="Competitor raised bids", now=NOW)


def endpoint(workspace, admin_actor, receiver: Receiver, **fields):
    created, secret = notification_endpoint_create(actor=admin_actor, workspace=workspace, name="Ops",
                                                   url=receiver.url, **fields)
    receiver.secret = secret
    return created


def test_a_change_awaiting_approval__emails_its_approvers_and_calls_the_signed_webhook(
        workspace, people, segment, admin_user, admin_actor, eager_tasks, django_capture_on_commit_callbacks):
    with Receiver() as receiver:
        endpoint(workspace, admin_actor, receiver)
        with django_capture_on_commit_callbacks(execute=True):
            change = propose(people, segment)

    assert change.status == Change.Status.PENDING
    deciders = [people["level1"], people["level2"], admin_user]  # admins decide every level
    assert sorted(m.to[0] for m in mail.outbox) == sorted(u.email for u in deciders)
    assert "awaits your approval" in mail.outbox[0].subject
    [request] = receiver.requests
    assert request.signature_valid
    assert request.json["event"] == "change.pending" and request.json["data"]["changes"][0]["id"] == change.pk
    assert request.headers["X-Rules-Delivery"] == str(request.json["delivery"])
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.DELIVERED}


def test_nothing_is_sent_for_a_transaction_that_rolls_back(people, segment, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        propose(people, segment)
    assert len(callbacks) == 1 and mail.outbox == []  # sending waits for the commit


def test_a_decision__tells_the_requester(workspace, people, segment, eager_tasks,
                                         django_capture_on_commit_callbacks):
    change = propose(people, segment)

    with django_capture_on_commit_callbacks(execute=True):
        change_reject(actor=Actor.for_user(people["level1"]), change=change, comment="Not during the sale")

    [message] = mail.outbox
    assert message.to == [people["marketer"].email]
    assert "rejected" in message.subject and "Not during the sale" in message.body


def test_an_sla_escalation__tells_the_approvers_of_the_next_level_only(people, segment, eager_tasks,
                                                                       django_capture_on_commit_callbacks):
    propose(people, segment)

    with django_capture_on_commit_callbacks(execute=True):
        changes_escalate_overdue(now=NOW + timedelta(minutes=61))

    assert [m.to for m in mail.outbox] == [[people["level2"].email]]
    assert "escalated to level 2" in mail.outbox[0].subject


def test_an_endpoint__receives_only_the_events_it_subscribed_to(workspace, people, segment, admin_actor):
    with Receiver() as receiver:
        endpoint(workspace, admin_actor, receiver, events=[NotificationEvent.CHANGE_ESCALATED])
        change = propose(people, segment)
        change_escalate(actor=Actor.for_user(people["level1"]), change=change, comment="Above my comfort")

    webhooks = Delivery.objects.filter(channel=Delivery.Channel.WEBHOOK)
    assert list(webhooks.values_list("event", flat=True)) == [NotificationEvent.CHANGE_ESCALATED]


def test_a_webhook_answering_500_then_200__is_retried_by_the_task_and_delivered(
        workspace, people, segment, admin_actor):
    with Receiver(statuses=[500, 200]) as receiver:
        endpoint(workspace, admin_actor, receiver)
        propose(people, segment)
        webhook = Delivery.objects.get(channel=Delivery.Channel.WEBHOOK)
        # Run in place, as a worker would: the failure raises, Celery retries (eagerly: at once).
        result = deliver_notification.apply(args=[webhook.pk])

    delivery = Delivery.objects.get(channel=Delivery.Channel.WEBHOOK)
    assert result.get() == Delivery.Status.DELIVERED
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (Delivery.Status.DELIVERED, 2, 200)
    assert [r.signature_valid for r in receiver.requests] == [True, True]
    assert deliver_notification.retry_backoff and deliver_notification.max_retries == 10


def test_a_webhook_that_keeps_failing__is_logged_then_marked_failed_on_the_last_attempt(
        workspace, people, segment, admin_actor):
    with Receiver(statuses=[503]) as receiver:
        endpoint(workspace, admin_actor, receiver)
        propose(people, segment)
        delivery = Delivery.objects.get(channel=Delivery.Channel.WEBHOOK)

        with pytest.raises(DeliveryFailed):
            notification_deliver(delivery_id=delivery.pk, now=NOW)
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == (Delivery.Status.PENDING, 1, 503)

        notification_deliver(delivery_id=delivery.pk, final=True, now=NOW + timedelta(minutes=1))

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_attempt_at) == (
        Delivery.Status.FAILED, 2, NOW + timedelta(minutes=1))
    assert "not now" in delivery.last_error


def test_an_escalation_rule__alerts_the_approvers_and_pauses_the_segment(workspace, people, segment):
    rule = rule_with_action(workspace, Rule.Action.ESCALATE_ALERT, action_params={"pause": True},
                            name="CPA guard")

    [planned] = run(rule, [segment])

    alert = Delivery.objects.filter(event=NotificationEvent.ALERT_ESCALATED)
    assert sorted(alert.values_list("recipient", flat=True)) == sorted([people["level1"].email,
                                                                         people["level2"].email])
    assert "CPA guard" in alert.first().subject
    assert planned.change.field == "status" and planned.change.status == Change.Status.APPLIED
    assert reloaded(segment)[0].status == DeliveryStatus.PAUSED


def test_an_escalation_rule_without_pause__only_alerts(workspace, people, segment):
    rule = rule_with_action(workspace, Rule.Action.ESCALATE_ALERT, name="CPA guard")

    assert run(rule, [segment]) == []
    assert run(rule, [segment]) == []  # the same window alerts once

    assert Delivery.objects.filter(event=NotificationEvent.ALERT_ESCALATED).count() == 2  # two approvers, once
    assert not Change.objects.exists()
