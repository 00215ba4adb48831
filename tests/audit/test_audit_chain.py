import pytest
from django.db import transaction

from audit.actors import Actor
from audit.models import AuditEvent
from audit.services import GENESIS_HASH, audit_record
from tests.factories import WorkspaceFactory

pytestmark = pytest.mark.django_db


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
