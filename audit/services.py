"""Writing audit events. Always called inside the transaction of the action it records."""

from typing import Any

import reversion
from django.db import connection, transaction
from django.utils import timezone

from .actors import Actor
from .context import current_request_id
from .models import AuditEvent, VersionAudit
from .registry import versioned_entry

GENESIS_HASH = "0" * 64
# Any constant works: it names the lock that serialises appends to the hash chain.
_CHAIN_LOCK_KEY = 0x61756469


def _lock_chain() -> None:
    # Two writers reading the same "last hash" would fork the chain. PostgreSQL gets a
    # transaction-scoped advisory lock; SQLite already serialises writers.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])


def audit_record(
    *,
    actor: Actor,
    action: str,
    subject: Any,
    before: dict | None = None,
    after: dict | None = None,
    reason: str = "",
    workspace_id: int | None = None,
) -> AuditEvent:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the action it records")
    _lock_chain()
    last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
    event = AuditEvent(
        created_at=timezone.now(),
        workspace_id=workspace_id if workspace_id is not None else getattr(subject, "workspace_id", None),
        actor_kind=actor.kind,
        actor_label=actor.label,
        actor_user_id=actor.user_id,
        action=action,
        subject_type=subject._meta.label_lower if hasattr(subject, "_meta") else str(type(subject).__name__),
        subject_id=str(getattr(subject, "pk", subject)),
        subject_repr=str(subject)[:200],
        before=before,
        after=after,
        reason=reason,
        request_id=current_request_id.get(),
        prev_hash=last or GENESIS_HASH,
    )
    event.hash = event.compute_hash()
    event.save()
    _record_version(event, subject, actor)
    return event


def _record_version(event: AuditEvent, subject: Any, actor: Actor) -> None:
    """Save a django-reversion version of a versioned subject, in the transaction of the action.

    The version is of what the database now holds (re-read, with followed children such as
    a rule's triggers), not of the caller's in-memory copy, which may carry stale prefetches.
    Nested inside an outer revision (a restore), it joins that revision instead.
    """
    if versioned_entry(type(subject)) is None:
        return
    stored = type(subject)._base_manager.filter(pk=subject.pk).first()
    if stored is None:
        return
    with reversion.create_revision(manage_manually=True):
        reversion.set_user(actor.user if actor.user_id else None)
        reversion.set_comment(event.reason or event.action)
        reversion.set_date_created(event.created_at)
        reversion.add_to_revision(stored)
        reversion.add_meta(VersionAudit, event=event)
