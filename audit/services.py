"""Writing audit events. Always called inside the transaction of the action it records."""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import reversion
from django.core import serializers
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, router, transaction
from django.utils import timezone
from django.utils.encoding import force_str
from reversion.models import Revision, Version

# Private to django-reversion, but reversion.models itself imports them: they are how a
# registered model's options (fields, format, id field) and content type are looked up.
from reversion.revisions import _get_content_type, _get_options

from rulesplatform.bulk_insert import bulk_insert

from .actors import Actor
from .context import current_request_id
from .models import AuditEvent, VersionAudit, canonical_json, one_shot_encoding
from .registry import versioned_entry

GENESIS_HASH = "0" * 64
# What django's json serializer encodes an object with (`cls=DjangoJSONEncoder, ensure_ascii=False`).
_encode_version = one_shot_encoding(DjangoJSONEncoder(ensure_ascii=False))
# Any constant works: it names the lock that serialises appends to the hash chain.
_CHAIN_LOCK_KEY = 0x61756469


@dataclass(frozen=True)
class AuditEntry:
    """One event to record with `audit_record_many`: the arguments of one `audit_record` call."""

    action: str
    subject: Any
    before: dict | None = None
    after: dict | None = None
    reason: str = ""
    workspace_id: int | None = None


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
    entry = AuditEntry(action, subject, before=before, after=after, reason=reason, workspace_id=workspace_id)
    [event] = audit_record_many(actor=actor, entries=[entry])
    return event


def audit_record_many(*, actor: Actor, entries: Sequence[AuditEntry]) -> list[AuditEvent]:
    """Record `entries` in order, exactly as one `audit_record` call per entry would.

    One chain lock, one read of the last hash and one insert for all the events, and the
    versions of their subjects written a few queries per model: the query count does not
    grow with the number of entries (except for subjects versioned with followed children).
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit events must be written inside the transaction of the action they record")
    if not entries:
        return []
    events = [_new_event(actor, entry) for entry in entries]
    _append_to_chain(events)
    _record_versions(actor, events, [entry.subject for entry in entries])
    return events


def _new_event(actor: Actor, entry: AuditEntry) -> AuditEvent:
    subject = entry.subject
    workspace_id = entry.workspace_id if entry.workspace_id is not None else getattr(subject, "workspace_id", None)
    return _new_row(
        AuditEvent,
        # One time per event, as one call per event would: later events never predate earlier ones.
        created_at=timezone.now(),
        workspace_id=workspace_id,
        actor_kind=actor.kind,
        actor_label=actor.label,
        actor_user_id=actor.user_id,
        action=entry.action,
        subject_type=subject._meta.label_lower if hasattr(subject, "_meta") else str(type(subject).__name__),
        subject_id=str(getattr(subject, "pk", subject)),
        subject_repr=str(subject)[:200],
        before=entry.before,
        after=entry.after,
        reason=entry.reason,
        request_id=current_request_id.get(),
    )


def _append_to_chain(events: list[AuditEvent]) -> None:
    """Link each event to the one before it (the last stored one for the first) and insert them in order."""
    _lock_chain()
    prev_hash = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS_HASH
    # Each before and after is encoded once: hashed, and stored as it is (jsonb keeps no key order).
    before = [_stored_json(event.before) for event in events]
    after = [_stored_json(event.after) for event in events]
    for event, before_json, after_json in zip(events, before, after, strict=True):
        event.prev_hash = prev_hash
        event.hash = prev_hash = event.hash_with(before=before_json or "null", after=after_json or "null")
    # Ids follow list order, and the chain is verified in id order.
    _insert(events, json_texts={"before": before, "after": after})


def _stored_json(value) -> str | None:
    """A before or after as the event's hash reads it, or None (the JSON field stores None as NULL)."""
    return None if value is None else canonical_json(value)


def _new_row(model: type[models.Model], **values) -> models.Model:
    """`model(**values)`, the fields not given None (the id of a row not stored yet, an event's hashes
    until it is chained), built as Django builds the rows it reads: from positional arguments, half
    the cost of a keyword per field (a rules cycle builds ~10k audit rows)."""
    names, known = _attnames(model)
    if not values.keys() <= known:
        raise TypeError(f"{model.__name__} has no field {sorted(values.keys() - known)}")
    return model(*[values.get(name) for name in names])


@cache
def _attnames(model: type[models.Model]) -> tuple[list[str], frozenset[str]]:
    names = [field.attname for field in model._meta.concrete_fields]
    return names, frozenset(names)


def _insert(rows: list[models.Model], **options) -> None:
    """Insert rows and set their ids: in one query where the database returns ids from a bulk insert."""
    if not rows:
        return
    if connection.features.can_return_rows_from_bulk_insert:
        bulk_insert(rows, **options)
        return
    for row in rows:
        row.save()


def _record_versions(actor: Actor, events: list[AuditEvent], subjects: list[Any]) -> None:
    """Save a django-reversion version of each versioned subject, one revision per event.

    Inside an outer revision (a restore) each version must join that revision, and a subject
    with followed children (a rule's triggers) is saved with them: both go through reversion
    itself, one entry at a time. The others, the bulk of a rules cycle, are written in bulk.
    """
    in_bulk = []
    for event, subject in zip(events, subjects, strict=True):
        entry = versioned_entry(type(subject))
        if entry is None:
            continue
        if entry.follow or reversion.is_active():
            _record_version(event, subject, actor)
        else:
            in_bulk.append((event, subject))
    if in_bulk:
        _record_versions_in_bulk(actor, in_bulk)


def _record_version(event: AuditEvent, subject: Any, actor: Actor) -> None:
    """Save a django-reversion version of a versioned subject, in the transaction of the action.

    The version is of what the database now holds (re-read, with followed children such as
    a rule's triggers), not of the caller's in-memory copy, which may carry stale prefetches.
    Nested inside an outer revision (a restore), it joins that revision instead.
    """
    stored = type(subject)._base_manager.filter(pk=subject.pk).first()
    if stored is None:
        return
    with reversion.create_revision(manage_manually=True):
        reversion.set_user(actor.user if actor.user_id else None)
        reversion.set_comment(event.reason or event.action)
        reversion.set_date_created(event.created_at)
        reversion.add_to_revision(stored)
        reversion.add_meta(VersionAudit, event=event)


def _record_versions_in_bulk(actor: Actor, recorded: list[tuple[AuditEvent, Any]]) -> None:
    """What `_record_version` saves for subjects without followed children, in a few queries.

    The rows are those reversion's `_save_revision` writes (a revision, its one version and
    the VersionAudit meta row), minus its pre/post_revision_commit signals: nothing listens.
    """
    stored = _reread(subject for _, subject in recorded)
    recorded = [(event, stored[type(s), s.pk]) for event, s in recorded if (type(s), s.pk) in stored]
    # Built with ids rather than related objects: setting those is a good part of the cost of a row.
    revisions = [_new_row(Revision, date_created=event.created_at, user_id=actor.user_id,
                          comment=event.reason or event.action)
                 for event, _ in recorded]
    _insert(revisions)
    _insert([_version(obj, revision) for (_, obj), revision in zip(recorded, revisions, strict=True)])
    _insert([_new_row(VersionAudit, revision_id=revision.pk, event_id=event.pk)
             for (event, _), revision in zip(recorded, revisions, strict=True)])


def _reread(subjects) -> dict[tuple[type, Any], models.Model]:
    """What the database now holds for each subject (one query per model), by (model, pk).

    The rows each one points to come along: a version's object_repr is `str(obj)`, and a
    segment's names its campaign, which would otherwise be one more query per segment.
    """
    pks_by_model = defaultdict(set)
    for subject in subjects:
        pks_by_model[type(subject)].add(subject.pk)
    return {
        (model, pk): obj
        for model, pks in pks_by_model.items()
        for pk, obj in model._base_manager.select_related(*_pointed_to(model)).in_bulk(pks).items()
    }


def _pointed_to(model: type[models.Model]) -> list[str]:
    return [field.name for field in model._meta.concrete_fields if field.many_to_one or field.one_to_one]


def _version(obj: models.Model, revision: Revision) -> Version:
    """The version reversion's `_add_to_revision` builds for `obj` (a model without followed relations)."""
    options = _get_options(type(obj))
    return _new_row(
        Version,
        revision_id=revision.pk,
        content_type_id=_get_content_type(type(obj), router.db_for_write(Revision)).pk,
        object_id=force_str(getattr(obj, options.object_id_field)),
        db=router.db_for_write(type(obj), instance=obj),
        format=options.format,
        serialized_data=_serialized(obj, options),
        object_repr=force_str(obj),
    )


def _serialized(obj: models.Model, options) -> str:
    """`serializers.serialize(options.format, (obj,), ...)`, as reversion stores a version.

    JSON (every versioned model's format) is the python serializer's data, encoded in one call:
    the json serializer writes it through `json.dump`, whose pure-Python encoder takes longer.
    """
    arguments = {"fields": options.fields, "use_natural_foreign_keys": options.use_natural_foreign_keys}
    if options.format != "json":
        return serializers.serialize(options.format, (obj,), **arguments)
    [data] = serializers.serialize("python", (obj,), **arguments)
    return f"[{_encode_version(data)}]"
