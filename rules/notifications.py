"""Telling people about changes: approvers when one waits for them, requesters when it is decided,
approvers when a guard metric breaks its limit.

Two channels: e-mail (Django's e-mail backend: the console in development) and signed webhooks
to the workspace's notification endpoints (`campaigns.connectors.sign`). Each message is a
NotificationDelivery row written inside the transaction of the event it tells about (a
rolled-back decision notifies nobody) and sent by a Celery task once that transaction commits,
retried with exponential backoff; every attempt's outcome stays on the row (the delivery log).
"""

import logging
import smtplib
import time
from collections.abc import Sequence
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, Workspace
from accounts.roles import Perm
from accounts.services import locked_update, refuse_unknown_fields, require_perm, snapshot
from audit.actors import Actor
from audit.services import audit_record
from campaigns.connectors import DELIVERY_HEADER, new_secret, post_signed_json

from .exceptions import DeliveryFailed
from .models import Change, NotificationDelivery, NotificationEndpoint, NotificationEvent, Rule
from .policy import membership_authority
from .targets import target_type

logger = logging.getLogger(__name__)
Event = NotificationEvent
Delivery = NotificationDelivery
WEBHOOK_TIMEOUT_SECONDS = 10
ENDPOINT_FIELDS = ("name", "url", "events", "enabled")


# --- endpoints (workspace admins) ----------------------------------------------------------------

@transaction.atomic
def notification_endpoint_create(*, actor: Actor, workspace: Workspace, name: str, url: str,
                                 events: list[str] | None = None,
                                 enabled: bool = True) -> tuple[NotificationEndpoint, str]:
    """A new webhook endpoint. Returns it with its signing secret, shown this once."""
    require_perm(actor, Perm.MANAGE_WORKSPACE, workspace.pk)
    endpoint = NotificationEndpoint(workspace=workspace, name=name, url=url, events=list(events or []),
                                    enabled=enabled, secret=new_secret())
    endpoint.full_clean()
    endpoint.save()
    audit_record(actor=actor, action="notification_endpoint.create", subject=endpoint, after=_public(endpoint))
    return endpoint, endpoint.secret


@transaction.atomic
def notification_endpoint_update(*, actor: Actor, endpoint: NotificationEndpoint, reason: str = "",
                                 **fields) -> NotificationEndpoint:
    require_perm(actor, Perm.MANAGE_WORKSPACE, endpoint.workspace_id)
    refuse_unknown_fields(fields, ENDPOINT_FIELDS, verb="changed")
    endpoint, before = locked_update(endpoint, fields, public=_public)
    audit_record(actor=actor, action="notification_endpoint.update", subject=endpoint, before=before,
                 after=_public(endpoint), reason=reason)
    return endpoint


@transaction.atomic
def notification_endpoint_delete(*, actor: Actor, endpoint: NotificationEndpoint, reason: str = "") -> None:
    """Its delivery log stays (the rows lose their link to it)."""
    require_perm(actor, Perm.MANAGE_WORKSPACE, endpoint.workspace_id)
    audit_record(actor=actor, action="notification_endpoint.delete", subject=endpoint, before=_public(endpoint),
                 reason=reason)
    endpoint.delete()


def _public(endpoint: NotificationEndpoint) -> dict:
    return snapshot(endpoint, exclude=("secret",))


# --- events --------------------------------------------------------------------------------------

def notify_pending(*, changes: Sequence[Change]) -> None:
    """The changes wait at their approval level: tell whoever may decide it (never the requester)."""
    notify_pending_groups(groups=[changes])


def notify_pending_groups(*, groups: Sequence[Sequence[Change]]) -> None:
    """`notify_pending` for each group (a change, or a batch told as one), the workspaces' approvers and
    endpoints read once and every delivery written in one insert."""
    workspace_ids = {changes[0].workspace_id for changes in groups}
    audience = _Audience(Membership.objects.filter(workspace_id__in=workspace_ids).select_related("user"),
                         NotificationEndpoint.objects.filter(workspace_id__in=workspace_ids, enabled=True))
    rows = []
    for changes in groups:
        first = changes[0]
        event = Event.CHANGE_ESCALATED if first.approval_level > 1 else Event.CHANGE_PENDING
        verb = f"escalated to level {first.approval_level}" if first.approval_level > 1 else "awaits your approval"
        sla = f"SLA: decide by {first.sla_due_at:%Y-%m-%d %H:%M} UTC." if first.sla_due_at else ""
        rows += _deliveries(
            workspace_id=first.workspace_id, event=event, change=first,
            subject=f"Change #{first.pk} {verb}: {_describe(first)}", text=_text(changes, sla),
            data={"changes": [change_data(c) for c in changes]},
            emails=audience.approver_emails(workspace_id=first.workspace_id, level=first.approval_level,
                                            exclude_user_ids=_own_user_ids(first)),
            endpoints=audience.endpoints.get(first.workspace_id, []),
        )
    _save(rows)


class _Audience:
    """Who hears of events in some workspaces: their memberships and enabled endpoints."""

    def __init__(self, memberships, endpoints):
        self.memberships: dict[int, list[Membership]] = {}
        for membership in memberships:
            self.memberships.setdefault(membership.workspace_id, []).append(membership)
        self.endpoints: dict[int, list[NotificationEndpoint]] = {}
        for endpoint in endpoints:
            self.endpoints.setdefault(endpoint.workspace_id, []).append(endpoint)

    def approver_emails(self, *, workspace_id: int, level: int, exclude_user_ids: set[int]) -> list[str]:
        return sorted({
            m.user.email for m in self.memberships.get(workspace_id, [])
            if m.user.email and m.user.is_active and m.user_id not in exclude_user_ids
            and membership_authority(m).decides_level(level)
        })


def notify_decided(*, changes: Sequence[Change], event: str, comment: str = "") -> None:
    """Tell the requester (for a rule's change: the rule's owner) what became of their change."""
    first = changes[0]
    _notify(
        workspace_id=first.workspace_id, event=event, change=first,
        subject=f"Change #{first.pk} {Event(event).label.lower()}: {_describe(first)}",
        text=_text(changes, f"Comment: {comment}" if comment else ""),
        data={"changes": [change_data(c) for c in changes], "comment": comment},
        emails=_emails_of(_own_user_ids(first)),
    )


def notify_alert(*, rule: Rule, segment_names: Sequence[str], summary: str, window_end: datetime,
                 paused: bool) -> None:
    """A guard metric broke its limit: every approver of the workspace hears of it."""
    action = " The segments are being paused." if paused else ""
    _notify(
        workspace_id=rule.workspace_id, event=Event.ALERT_ESCALATED, change=None,
        subject=f"Alert from rule “{rule.name}”: {', '.join(segment_names)}",
        text=f"{summary}{action}\nWindow ending {window_end:%Y-%m-%d %H:%M} UTC.",
        data={"rule": rule.pk, "rule_version": rule.version, "rule_name": rule.name, "segments": list(segment_names),
              "window_end": window_end.isoformat(), "summary": summary, "pause": paused},
        emails=approver_emails(workspace_id=rule.workspace_id, level=1, exclude_user_ids=set()),
    )


def change_data(change: Change) -> dict:
    return {
        "id": change.pk, "workspace": change.workspace_id, "kind": change.kind, "status": change.status,
        "target_type": target_type(change.target), "target_id": change.target.pk, "target_name": str(change.target),
        "field": change.field, "old_value": change.old_value, "requested_value": change.requested_value,
        "capped_value": change.capped_value, "approval_level": change.approval_level,
        "sla_due_at": change.sla_due_at.isoformat() if change.sla_due_at else None,
        "rule": change.rule_id, "reason": change.reason,
    }


def _describe(change: Change) -> str:
    return f"{change.target} {change.get_field_display().lower()} {change.old_value} → {change.capped_value}"


def _text(changes: Sequence[Change], footer: str) -> str:
    lines = [f"#{c.pk}: {_describe(c)} (requested {c.requested_value}). {c.reason}".strip() for c in changes]
    return "\n".join([*lines, footer]).strip()


def _own_user_ids(change: Change) -> set[int]:
    ids = {change.requested_by_id, change.rule.owner_id if change.rule_id else None}
    return {pk for pk in ids if pk is not None}


def approver_emails(*, workspace_id: int, level: int, exclude_user_ids: set[int]) -> list[str]:
    audience = _Audience(Membership.objects.filter(workspace_id=workspace_id).select_related("user"), [])
    return audience.approver_emails(workspace_id=workspace_id, level=level, exclude_user_ids=exclude_user_ids)


def _emails_of(user_ids: set[int]) -> list[str]:
    users = get_user_model().objects.filter(pk__in=user_ids, is_active=True).exclude(email="")
    return sorted(users.values_list("email", flat=True))


def _notify(*, workspace_id: int, event: str, change: Change | None, subject: str, text: str, data: dict,
            emails: list[str]) -> list[Delivery]:
    endpoints = NotificationEndpoint.objects.filter(workspace_id=workspace_id, enabled=True)
    return _save(_deliveries(workspace_id=workspace_id, event=event, change=change, subject=subject, text=text,
                             data=data, emails=emails, endpoints=endpoints))


def _deliveries(*, workspace_id: int, event: str, change: Change | None, subject: str, text: str, data: dict,
                emails: list[str], endpoints) -> list[Delivery]:
    rows = [Delivery(workspace_id=workspace_id, event=event, channel=Delivery.Channel.EMAIL, recipient=email,
                     change=change, subject=subject[:200], payload={"text": text}) for email in emails]
    for endpoint in endpoints:
        if endpoint.wants(event):
            rows.append(Delivery(workspace_id=workspace_id, event=event, channel=Delivery.Channel.WEBHOOK,
                                 endpoint=endpoint, recipient=endpoint.url, change=change, subject=subject[:200],
                                 payload={"event": event, "subject": subject, "data": data}))
    return rows


def _save(rows: list[Delivery]) -> list[Delivery]:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("notifications are written inside the transaction of the event they tell about")
    created = Delivery.objects.bulk_create(rows)
    ids = [row.pk for row in created]
    transaction.on_commit(lambda: _enqueue(ids))
    return created


def _enqueue(delivery_ids: list[int]) -> None:
    # Imported here: rules.tasks imports the engine, which imports the change pipeline, which
    # imports this module.
    from .tasks import deliver_notification

    for delivery_id in delivery_ids:
        deliver_notification.delay(delivery_id)


# --- sending -------------------------------------------------------------------------------------

class _SendFailed(Exception):
    def __init__(self, detail: str, status_code: int | None = None):
        super().__init__(detail)
        self.detail, self.status_code = detail, status_code


def notification_deliver(*, delivery_id: int, final: bool = False, now: datetime | None = None) -> Delivery | None:
    """One attempt at one delivery. Returns the row; raises DeliveryFailed when a retry should follow.

    Already delivered (a redelivered task) or vanished: nothing to do. On the last attempt a
    failure marks the delivery failed instead of asking for another retry.
    """
    delivery = Delivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != Delivery.Status.PENDING:
        return delivery
    now = now or timezone.now()
    try:
        status_code = _send(delivery)
    except _SendFailed as failure:
        _record_attempt(delivery, now=now, ok=False, status_code=failure.status_code, error=failure.detail,
                        final=final)
        if final:
            logger.warning("Notification %s failed for good: %s", delivery.pk, failure.detail)
            return delivery
        raise DeliveryFailed(f"Notification {delivery.pk}: {failure.detail}") from None
    _record_attempt(delivery, now=now, ok=True, status_code=status_code, error="", final=final)
    return delivery


def _send(delivery: Delivery) -> int | None:
    if delivery.channel == Delivery.Channel.EMAIL:
        try:
            send_mail(delivery.subject, delivery.payload.get("text", ""), settings.DEFAULT_FROM_EMAIL,
                      [delivery.recipient])
        except (smtplib.SMTPException, OSError) as error:
            raise _SendFailed(f"E-mail not sent: {error}") from None
        return None
    if delivery.endpoint is None or not delivery.endpoint.enabled:
        raise _SendFailed("The endpoint was removed or disabled.")
    body = {**delivery.payload, "delivery": delivery.pk, "created_at": delivery.created_at.isoformat()}
    result = post_signed_json(delivery.endpoint.url, delivery.endpoint.secret, body, timestamp=int(time.time()),
                              timeout=WEBHOOK_TIMEOUT_SECONDS, headers={DELIVERY_HEADER: str(delivery.pk)})
    if not result.ok:
        raise _SendFailed(result.detail or f"HTTP {result.status_code}", result.status_code)
    return result.status_code


def _record_attempt(delivery: Delivery, *, now: datetime, ok: bool, status_code: int | None, error: str,
                    final: bool) -> None:
    delivery.attempts += 1
    delivery.last_attempt_at, delivery.last_status_code, delivery.last_error = now, status_code, error
    if ok:
        delivery.status, delivery.delivered_at = Delivery.Status.DELIVERED, now
    elif final:
        delivery.status = Delivery.Status.FAILED
    delivery.save(update_fields=["attempts", "last_attempt_at", "last_status_code", "last_error", "status",
                                 "delivered_at"])
