import hashlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils.translation import gettext_lazy

from audit.actors import Actor
from audit.models import AuditEvent, canonical_json, one_shot_encoding
from audit.services import GENESIS_HASH, audit_record
from rules.models import Change
from tests.factories import WorkspaceFactory

pytestmark = pytest.mark.django_db

# Values whose JSON is tricky: dates, decimals, tuples, enum members, lazy and non-ASCII text, and
# keys that are not plain strings (numbers sort as text once JSON; 1 and "1" become one key).
TRICKY_VALUES = [
    None,
    "plain",
    {"b": 1, "a": [1, 2.5, None, True, False]},
    {"when": datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC), "amount": Decimal("1.2500"),
     "span": timedelta(hours=1, minutes=5)},
    {"ids": (3, 1, 2), "nested": [{"z": "é “quoted” \\ \"", "a": {"y": 1, "x": 2}}], "empty": {}},
    {"status": Change.Status.PENDING, "label": gettext_lazy("Pending approval")},
    {Change.Field.BID: "0.8010", "change": 1},
    {2: "two", 10: "ten"},
    {1: "number", "1": "text"},
    {"outer": [{None: 1, True: 2, 1.5: 3}]},
]


def _legacy_canonical_json(value) -> str:
    """The format every stored hash was computed in: a JSON round trip, then keys sorted."""
    return json.dumps(json.loads(json.dumps(value, cls=DjangoJSONEncoder)), sort_keys=True)


@pytest.mark.parametrize("value", TRICKY_VALUES)
def test_canonical_json__is_the_format_stored_hashes_were_computed_in(value):
    assert canonical_json(value) == _legacy_canonical_json(value)


def _written(encode, value) -> str | type[Exception]:
    try:
        return encode(value)
    except Exception as error:  # noqa: BLE001 - which error, if any, is what is compared
        return type(error)


@pytest.mark.parametrize("options", [{}, {"sort_keys": True}, {"ensure_ascii": False}])
@pytest.mark.parametrize("value", TRICKY_VALUES)
def test_one_shot_encoding__writes_what_the_encoder_writes(value, options):
    # Sorting keys of mixed types fails alike: TypeError.
    encoder = DjangoJSONEncoder(**options)
    assert _written(one_shot_encoding(encoder), value) == _written(encoder.encode, value)


@pytest.mark.parametrize("before, after", [(None, None), *zip(TRICKY_VALUES, reversed(TRICKY_VALUES), strict=True)])
def test_compute_hash__is_the_sha256_of_the_canonical_payload(before, after):
    event = AuditEvent(
        created_at=datetime(2026, 3, 1, 12, 0, 0, 5000, tzinfo=UTC), workspace_id=3, actor_kind="user",
        actor_label="ana “A”", actor_user_id=7, action="change.apply", subject_type="rules.change", subject_id="12",
        subject_repr="bid 0.89 → 0.80", before=before, after=after, reason="Rule “x”", request_id="r-1",
        prev_hash="f" * 64,
    )
    payload = {
        "prev": event.prev_hash, "created_at": event.created_at.isoformat(), "workspace_id": 3,
        "actor": ["user", "ana “A”", 7], "action": "change.apply", "subject": ["rules.change", "12", "bid 0.89 → 0.80"],
        "before": before, "after": after, "reason": "Rule “x”", "request_id": "r-1",
    }

    assert event.compute_hash() == hashlib.sha256(_legacy_canonical_json(payload).encode()).hexdigest()


@pytest.mark.django_db(transaction=True)
def test_audit_record__outside_a_transaction__is_refused():
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit_record(actor=Actor.system("t"), action="x", subject=WorkspaceFactory())


def test_audit_record__chains_each_event_to_the_previous_one():
    workspace = WorkspaceFactory()
    with transaction.atomic():
        first = audit_record(actor=Actor.system("t"), action="a", subject=workspace, after={"n": 1})
        second = audit_record(actor=Actor.system("t"), action="b", subject=workspace, after={"n": 2})
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    stored = AuditEvent.objects.get(pk=second.pk)
    assert stored.compute_hash() == stored.hash


def test_audit_event__update_and_delete__are_refused():
    workspace = WorkspaceFactory()
    with transaction.atomic():
        event = audit_record(actor=Actor.system("t"), action="a", subject=workspace)
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).update(action="forged")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()


def test_audit_record__tricky_values__are_stored_so_that_the_event_verifies(system_actor):
    workspace = WorkspaceFactory()
    with transaction.atomic():
        events = [audit_record(actor=system_actor, action="x", subject=workspace, before=value, after={"v": value})
                  for value in TRICKY_VALUES]

    for event, value in zip(events, TRICKY_VALUES, strict=True):
        stored = AuditEvent.objects.get(pk=event.pk)
        assert stored.compute_hash() == stored.hash == event.hash
        assert stored.before == json.loads(json.dumps(value, cls=DjangoJSONEncoder))
    assert AuditEvent.objects.filter(pk=events[0].pk, before__isnull=True).exists()  # None is NULL, not JSON null
