"""Applied changes on their way to the ad platforms, through the workspace's connectors.

  - When a change is applied, one ChangePush per enabled connector of its workspace is written
    in the same transaction, and a task is enqueued for each once it commits: a change is never
    applied without its pushes on record, and a push never leaves for a change rolled back.
  - Each attempt goes through the connector's circuit breaker, whose state is on the
    PlatformConnector row so that every worker sees it: closed lets pushes through; after
    `failure_threshold` consecutive failures it opens and pushes wait; once `cool_down_seconds`
    have passed, ONE worker claims the trial (a conditional UPDATE open -> half-open, so two
    workers never both try); the trial's success closes the breaker, its failure re-opens it.
  - A failed attempt is retried by the task with exponential backoff; after the last retry the
    push is marked failed. Pending or failed, it stays visible ("applied, push pending/failed")
    and can be sent again (`change_push_retry`).
  - Delivery is at least once: a webhook receiver dedupes by `delivery_key` (also sent as the
    X-Rules-Delivery header); the sandbox does so itself.
"""

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.exceptions import Conflict
from accounts.models import Workspace
from accounts.roles import Perm
from accounts.services import require_perm, snapshot
from audit.actors import Actor
from audit.services import audit_record
from campaigns.connectors import Connector, PushResult, SandboxConnector, WebhookConnector, new_secret

from .exceptions import CircuitOpen, DeliveryFailed
from .models import Change, ChangePush, PlatformConnector, SandboxReceipt
from .targets import target_type

logger = logging.getLogger(__name__)
Breaker = PlatformConnector.Breaker
SANDBOX_NAME = "Sandbox"
CONNECTOR_FIELDS = ("name", "kind", "url", "enabled", "timeout_seconds", "failure_threshold", "cool_down_seconds")


# --- enqueue on apply ----------------------------------------------------------------------------

def pushes_enqueue(*, changes: Sequence[Change]) -> list[ChangePush]:
    """Inside the apply transaction: record a push per enabled connector, send them after commit."""
    if not changes:
        return []
    connectors: dict[int, list[PlatformConnector]] = {}
    for connector in PlatformConnector.objects.filter(workspace_id__in={c.workspace_id for c in changes},
                                                      enabled=True):
        connectors.setdefault(connector.workspace_id, []).append(connector)
    pushes = ChangePush.objects.bulk_create(
        [ChangePush(workspace_id=c.workspace_id, change=c, connector=k)
         for c in changes for k in connectors.get(c.workspace_id, [])]
    )
    ids = [push.pk for push in pushes]
    if ids:
        transaction.on_commit(lambda: _enqueue(ids))
    return pushes


# A push's task runs within seconds of its change's commit. One never tried this long after it was
# recorded lost its enqueue (the broker was down at commit).
PUSH_LOST_AFTER = timedelta(minutes=5)
# A push being retried may rightly wait up to its task's longest backoff between attempts (rules.tasks,
# `retry_backoff_max`): only a longer silence means its retry was lost with its message.
PUSH_RETRY_LOST_AFTER = timedelta(hours=1) + PUSH_LOST_AFTER


def pushes_resend_lost(*, now: datetime) -> list[int]:
    """Send again the pending pushes whose task was lost; returns their ids.

    Each is claimed by a conditional UPDATE of `last_attempt_at` (healthchecks' flips): the row
    changes only if it still holds the value read, so two beats never both send it. Delivery is at
    least once anyway: a push whose task was only late is sent twice, and the receiver dedupes it.
    """
    lost = ChangePush.objects.filter(
        Q(last_attempt_at__isnull=True, created_at__lte=now - PUSH_LOST_AFTER)
        | Q(last_attempt_at__lte=now - PUSH_RETRY_LOST_AFTER),
        status=ChangePush.Status.PENDING,
    ).values_list("pk", "last_attempt_at")
    claimed = [pk for pk, seen in lost if _claim_lost(pk, seen, now)]
    if claimed:
        transaction.on_commit(lambda: _enqueue(claimed))
    return claimed


@transaction.atomic
def _claim_lost(push_id: int, seen: datetime | None, now: datetime) -> bool:
    unchanged = Q(last_attempt_at__isnull=True) if seen is None else Q(last_attempt_at=seen)
    if not ChangePush.objects.filter(unchanged, pk=push_id, status=ChangePush.Status.PENDING).update(
            last_attempt_at=now):
        return False  # another beat claimed it, or an attempt concluded it, since it was read
    push = ChangePush.objects.get(pk=push_id)
    audit_record(actor=Actor.worker("resend_lost_pushes"), action="change.push_resent", subject=push,
                 workspace_id=push.workspace_id,
                 before={"last_attempt_at": seen.isoformat() if seen else None},
                 after={"change": push.change_id, "connector": push.connector_id, "last_attempt_at": now.isoformat()})
    return True


def _enqueue(push_ids: list[int]) -> None:
    # Imported here: rules.tasks imports the engine, which imports the change pipeline, which
    # imports this module.
    from .tasks import push_change

    for push_id in push_ids:
        push_change.delay(push_id)


def change_payload(change: Change) -> dict:
    """What the platform receives: the applied change as plain JSON."""
    target = change.target
    return {
        "delivery_key": f"change-{change.pk}",
        "change_id": change.pk,
        "workspace_id": change.workspace_id,
        "kind": change.kind,
        "target": {"type": target_type(target), "id": target.pk, "external_id": target.external_id,
                    "name": str(target)},
        "field": change.field,
        "old_value": change.old_value,
        "new_value": change.capped_value,
        "applied_at": change.applied_at.isoformat() if change.applied_at else None,
        "rule_id": change.rule_id,
        "reason": change.reason,
    }


# --- one attempt ---------------------------------------------------------------------------------

def change_push_attempt(*, push_id: int, final: bool = False, now: datetime | None = None) -> ChangePush | None:
    """Try one push once. Returns the push; raises CircuitOpen or DeliveryFailed when a retry should follow.

    A push already succeeded (a redelivered task) or vanished is left alone. On the last attempt
    a failure (or a breaker still open) marks the push failed instead.
    """
    push = ChangePush.objects.select_related("change__segment", "change__creative", "change__campaign").filter(
        pk=push_id).first()
    if push is None or push.status != ChangePush.Status.PENDING:
        return push
    now = now or timezone.now()
    connector = PlatformConnector.objects.get(pk=push.connector_id)
    if not connector.enabled:
        return _record(push, connector, PushResult(ok=False, detail="The connector is disabled."), now, final=True,
                       attempted=False)
    if not breaker_admit(connector, now=now):
        return _wait_for_breaker(push, connector, now, final=final)
    result = connector_for(connector).push(change_payload(push.change))
    push = _record(push, connector, result, now, final=final)
    if not result.ok and not final:
        raise DeliveryFailed(f"Push {push.pk} to {connector}: {result.detail or result.status_code}")
    return push


def _wait_for_breaker(push: ChangePush, connector: PlatformConnector, now: datetime, *, final: bool) -> ChangePush:
    if final:
        return _record(push, connector, PushResult(ok=False, detail="The connector's circuit stayed open."), now,
                       final=True, attempted=False)
    raise CircuitOpen(f"{connector}: circuit open, the push waits for the cool-down.",
                      extra={"retry_in_seconds": connector.cool_down_seconds})


@transaction.atomic
def _record(push: ChangePush, connector: PlatformConnector, result: PushResult, now: datetime, *, final: bool,
            attempted: bool = True) -> ChangePush:
    push = ChangePush.objects.select_for_update().get(pk=push.pk)
    if push.status != ChangePush.Status.PENDING:
        return push  # a concurrent attempt already concluded it
    if attempted:
        push.attempts += 1
        breaker_record(connector.pk, ok=result.ok, now=now)
    push.last_attempt_at, push.last_status_code, push.last_error = now, result.status_code, result.detail
    if result.ok:
        push.status, push.succeeded_at = ChangePush.Status.SUCCEEDED, now
    elif final:
        push.status = ChangePush.Status.FAILED
    push.save(update_fields=["attempts", "last_attempt_at", "last_status_code", "last_error", "status",
                             "succeeded_at"])
    if push.status != ChangePush.Status.PENDING:
        audit_record(actor=Actor.worker("push_change"), action=f"change.push_{push.status}", subject=push,
                     workspace_id=push.workspace_id,
                     after={"change": push.change_id, "connector": connector.pk, "attempts": push.attempts,
                            "status_code": result.status_code, "detail": result.detail})
    return push


def connector_for(connector: PlatformConnector) -> Connector:
    if connector.kind == PlatformConnector.Kind.SANDBOX:
        return SandboxConnector(ledger=_ReceiptLedger(connector))
    return WebhookConnector(url=connector.url, secret=connector.secret, timeout=connector.timeout_seconds,
                            clock=time.time)


class _ReceiptLedger:
    """The sandbox platform's memory: SandboxReceipt rows, one per delivery key."""

    def __init__(self, connector: PlatformConnector):
        self.connector = connector

    def record(self, delivery_key: str, payload: dict) -> bool:
        try:
            with transaction.atomic():
                SandboxReceipt.objects.create(connector=self.connector, delivery_key=delivery_key, payload=payload)
        except IntegrityError:
            return False
        return True


# --- circuit breaker -----------------------------------------------------------------------------

def breaker_admit(connector: PlatformConnector, *, now: datetime) -> bool:
    """May a push go out now? Closed: yes. Open or half-open: only the one worker that claims the
    trial once the cool-down has passed (a half-open trial older than a cool-down is presumed lost
    with its worker, and is claimed again)."""
    if connector.breaker_state == Breaker.CLOSED:
        return True
    cooled = now - timedelta(seconds=connector.cool_down_seconds)
    claimed = PlatformConnector.objects.filter(
        pk=connector.pk, breaker_state__in=[Breaker.OPEN, Breaker.HALF_OPEN], breaker_changed_at__lte=cooled,
    ).update(breaker_state=Breaker.HALF_OPEN, breaker_changed_at=now)
    return claimed == 1


def breaker_record(connector_id: int, *, ok: bool, now: datetime) -> str:
    """After an attempt: success closes the breaker; a failure counts, and opens it at the threshold
    or when it was the half-open trial. Returns the new state."""
    connector = PlatformConnector.objects.select_for_update().get(pk=connector_id)
    before = connector.breaker_state
    if ok:
        connector.breaker_state, connector.consecutive_failures = Breaker.CLOSED, 0
    else:
        connector.consecutive_failures += 1
        if before == Breaker.HALF_OPEN or connector.consecutive_failures >= connector.failure_threshold:
            connector.breaker_state = Breaker.OPEN
    if connector.breaker_state != before or connector.breaker_state == Breaker.OPEN:
        connector.breaker_changed_at = now
    connector.save(update_fields=["breaker_state", "consecutive_failures", "breaker_changed_at"])
    if connector.breaker_state != before:
        audit_record(actor=Actor.worker("push_change"), action=f"connector.breaker_{connector.breaker_state}",
                     subject=connector, before={"breaker_state": before},
                     after={"breaker_state": connector.breaker_state,
                            "consecutive_failures": connector.consecutive_failures})
    return connector.breaker_state


# --- services: connectors and retries ----------------------------------------------------------

@transaction.atomic
def connector_create(*, actor: Actor, workspace: Workspace, name: str, kind: str, url: str = "",
                     **fields) -> tuple[PlatformConnector, str]:
    """A new connector. Returns it with its signing secret (webhooks), shown this once."""
    require_perm(actor, Perm.MANAGE_WORKSPACE, workspace.pk)
    connector = PlatformConnector(workspace=workspace, name=name, kind=kind, url=url, **fields)
    if kind == PlatformConnector.Kind.WEBHOOK:
        connector.secret = new_secret()
    connector.full_clean()
    connector.save()
    audit_record(actor=actor, action="connector.create", subject=connector, after=_public(connector))
    return connector, connector.secret


@transaction.atomic
def connector_update(*, actor: Actor, connector: PlatformConnector, reason: str = "", **fields) -> PlatformConnector:
    require_perm(actor, Perm.MANAGE_WORKSPACE, connector.workspace_id)
    connector = PlatformConnector.objects.select_for_update().get(pk=connector.pk)
    before = _public(connector)
    unknown = sorted(set(fields) - set(CONNECTOR_FIELDS) | ({"kind"} & set(fields)))
    if unknown:
        raise ValidationError({name: ["This field cannot be changed here."] for name in unknown})
    for name, value in fields.items():
        setattr(connector, name, value)
    connector.full_clean()
    connector.save(update_fields=[*fields, "updated_at"])  # never the breaker's state: workers own it
    audit_record(actor=actor, action="connector.update", subject=connector, before=before, after=_public(connector),
                 reason=reason)
    return connector


def _public(connector: PlatformConnector) -> dict:
    return snapshot(connector, exclude=("secret",))


@transaction.atomic
def connector_ensure_sandbox(*, actor: Actor, workspace: Workspace) -> PlatformConnector:
    """The demo's and simulator's connector: created once per workspace."""
    existing = PlatformConnector.objects.filter(workspace=workspace, name=SANDBOX_NAME).first()
    if existing is not None:
        return existing
    return connector_create(actor=actor, workspace=workspace, name=SANDBOX_NAME,
                            kind=PlatformConnector.Kind.SANDBOX)[0]


@transaction.atomic
def change_push_retry(*, actor: Actor, push: ChangePush) -> ChangePush:
    """Send a failed push again (after fixing the endpoint, say)."""
    require_perm(actor, Perm.MANAGE_WORKSPACE, push.workspace_id)
    push = ChangePush.objects.select_for_update().get(pk=push.pk)
    if push.status != ChangePush.Status.FAILED:
        raise Conflict(f"This push is {push.get_status_display().lower()}: only a failed push is sent again.")
    push.status = ChangePush.Status.PENDING
    push.save(update_fields=["status"])
    audit_record(actor=actor, action="change.push_retry", subject=push,
                 after={"change": push.change_id, "connector": push.connector_id})
    transaction.on_commit(lambda: _enqueue([push.pk]))
    return push
