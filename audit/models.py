import hashlib
import json
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring, encode_basestring_ascii
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


def one_shot_encoding(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """`encoder.encode`, minus the C encoder that it builds on each call (which costs as much as
    encoding a small dict). The one difference: a circular structure raises RecursionError, not ValueError."""
    if c_make_encoder is None or encoder.indent is not None:
        return encoder.encode
    encode = c_make_encoder(
        None, encoder.default, encode_basestring_ascii if encoder.ensure_ascii else encode_basestring,
        encoder.indent, encoder.key_separator, encoder.item_separator, encoder.sort_keys, encoder.skipkeys,
        encoder.allow_nan,
    )
    return lambda value: "".join(encode(value, 0))


# Configured once: building an encoder per event costs about as much as encoding the event.
_encode = one_shot_encoding(DjangoJSONEncoder())
_encode_sorted = one_shot_encoding(DjangoJSONEncoder(sort_keys=True))
_CONTAINERS = (dict, list, tuple)


def canonical_json(value) -> str:
    """`value` as an event's hash reads it: as JSON data (what the database stores, not Python
    types), keys sorted, default separators; `json.dumps(json.loads(json.dumps(value,
    cls=DjangoJSONEncoder)), sort_keys=True)`, the format every stored hash was computed in.

    Encoding once with sorted keys gives that very text when every key is a plain string: the
    round trip only turns values into JSON data (dates, decimals, tuples, enum members), which
    the encoder writes the same way. Other keys (numbers, None, str subclasses) still take the
    round trip: it turns 1 into "1", sorts it as text, and merges keys that write the same text
    (1 and "1").
    """
    if not isinstance(value, _CONTAINERS) or _string_keys_only(value):
        return _encode_sorted(value)
    return _encode_sorted(json.loads(_encode(value)))


def _string_keys_only(value: dict | list | tuple) -> bool:
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str or (isinstance(item, _CONTAINERS) and not _string_keys_only(item)):
                return False
        return True
    for item in value:
        if isinstance(item, _CONTAINERS) and not _string_keys_only(item):
            return False
    return True


class AuditEventQuerySet(models.QuerySet):
    # Append-only: bulk paths that would rewrite history are refused at the ORM level too.
    def update(self, **kwargs):
        raise PermissionError("audit events are append-only")

    def delete(self):
        raise PermissionError("audit events are append-only")


class AuditEvent(models.Model):
    """One thing that happened, chained by hash to the event before it."""

    class ActorKind(models.TextChoices):
        USER = "user", "User"
        TOKEN = "token", "API token"
        WORKER = "worker", "Worker"
        SYSTEM = "system", "System"

    created_at = models.DateTimeField(db_index=True)
    workspace_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    actor_kind = models.CharField(max_length=8, choices=ActorKind.choices)
    actor_label = models.CharField(max_length=150)
    # No database constraint and no SET_NULL: deleting a user must not rewrite (and so break)
    # the events they caused; `actor_label` keeps their name. No index: no read looks events up by
    # user, and each index is one more write per event (a rules cycle records thousands).
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False,
        related_name="+", db_index=False,
    )
    action = models.CharField(max_length=64)
    subject_type = models.CharField(max_length=64)
    subject_id = models.CharField(max_length=64)
    subject_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    after = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    reason = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        # `action` and `hash` are indexed through Meta rather than `db_index`/`unique`: on PostgreSQL
        # those add a second, LIKE-ready index (varchar_pattern_ops), which nothing reads (the admin
        # filters actions by equality; hashes are never searched), each one more write per event.
        indexes = [models.Index(fields=["subject_type", "subject_id"]), models.Index(fields=["action"])]
        constraints = [models.UniqueConstraint(fields=["hash"], name="audit_event_hash_unique")]

    def __str__(self):
        return f"#{self.pk} {self.action} {self.subject_type}:{self.subject_id} by {self.actor_label}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("audit events are append-only")

    def compute_hash(self) -> str:
        return self.hash_with(before=canonical_json(self.before), after=canonical_json(self.after))

    def hash_with(self, *, before: str, after: str) -> str:
        """`compute_hash` given `before` and `after` as `canonical_json` already (a bulk writer
        stores those very texts).

        The hash is of the canonical JSON of the payload {"prev", "created_at", "workspace_id",
        "actor", "action", "subject", "before", "after", "reason", "request_id"}. Its keys sort as
        action, actor, after, before, created_at...: that text is the other fields' canonical
        JSON, split where after and before go in.
        """
        # Their keys are plain strings and their values flat: `canonical_json` would encode them as they are.
        head = _encode_sorted({"action": self.action, "actor": [self.actor_kind, self.actor_label,
                                                                        self.actor_user_id]})
        tail = _encode_sorted({
            "created_at": self.created_at.isoformat(),
            "prev": self.prev_hash,
            "reason": self.reason,
            "request_id": self.request_id,
            "subject": [self.subject_type, str(self.subject_id), self.subject_repr],
            "workspace_id": self.workspace_id,
        })
        payload = f'{head[:-1]}, "after": {after}, "before": {before}, {tail[1:]}'
        return hashlib.sha256(payload.encode()).hexdigest()


class VersionAudit(models.Model):
    """Revision meta (django-reversion): ties a saved revision to the audit event that recorded it.

    Through it every version carries its actor (user, API token or worker), reason, time and
    workspace, even when no Django user was involved. A restore records two events (the edit
    and the restore itself) into one revision, hence a foreign key rather than a one-to-one.
    """

    revision = models.ForeignKey("reversion.Revision", on_delete=models.CASCADE, related_name="audit_links")
    event = models.OneToOneField(AuditEvent, on_delete=models.PROTECT, related_name="version_link")

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"revision {self.revision_id} <- event {self.event_id}"
