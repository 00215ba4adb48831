"""audit_record_many: thousands of events of one transaction at once, exactly as one audit_record per entry."""

from decimal import Decimal

import pytest
import reversion
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from reversion.models import Version

from audit.actors import Actor
from audit.chain import ChainReport, verify_chain
from audit.models import AuditEvent, VersionAudit
from audit.rollback import version_restore
from audit.selectors import object_history, version_children, version_fields, version_info
from audit.services import AuditEntry, audit_record, audit_record_many
from campaigns import services as campaign_services
from campaigns.models import Segment
from tests.factories import CampaignFactory, SegmentFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db

_VERSION_FIELDS = ("content_type_id", "object_id", "db", "format", "serialized_data", "object_repr")


def _entries(workspace, count: int) -> list[AuditEntry]:
    """`count` entries about segments and campaigns of `workspace`, some with reasons, one with its own workspace."""
    campaign = CampaignFactory(workspace=workspace)
    segments = SegmentFactory.create_batch(count - 1, campaign=campaign)
    entries = [
        AuditEntry("segment.bid_change", segment, before={"bid": "1.00"}, after={"bid": f"1.{n:02d}"},
                   reason="rule fired" if n % 2 else "")
        for n, segment in enumerate(segments)
    ]
    return entries + [AuditEntry("campaign.pause", campaign, after={"status": "paused"}, workspace_id=0)]


def _recorded(events) -> list[tuple]:
    """What an event says, read back from the database (everything but id, time and hashes)."""
    stored = AuditEvent.objects.filter(pk__in=[e.pk for e in events]).order_by("id")
    return [
        (e.action, e.subject_type, e.subject_id, e.subject_repr, e.before, e.after, e.reason, e.workspace_id,
         e.actor_kind, e.actor_label, e.actor_user_id)
        for e in stored
    ]


def _version_of(event: AuditEvent, subject) -> Version:
    """The version of `subject` saved with `event` (a rule's revision also holds its triggers' versions)."""
    return Version.objects.get_for_object(subject).select_related("revision").get(revision__audit_links__event=event)


def _version_row(version: Version) -> tuple:
    return tuple(getattr(version, name) for name in _VERSION_FIELDS)


def test_audit_record_many__records_the_same_events_as_one_audit_record_per_entry(workspace, admin_actor):
    entries = _entries(workspace, 5)

    with transaction.atomic():
        one_by_one = [audit_record(actor=admin_actor, action=e.action, subject=e.subject, before=e.before,
                                   after=e.after, reason=e.reason, workspace_id=e.workspace_id) for e in entries]
        in_bulk = audit_record_many(actor=admin_actor, entries=entries)

    assert _recorded(in_bulk) == _recorded(one_by_one)
    assert [e.workspace_id for e in in_bulk] == [workspace.pk] * 4 + [0]
    assert verify_chain().ok


def test_audit_record_many__chains_its_events_between_single_calls(workspace, system_actor):
    entries = _entries(workspace, 3)

    with transaction.atomic():
        before = audit_record(actor=system_actor, action="a", subject=workspace)
        bulk = audit_record_many(actor=system_actor, entries=entries)
        after = audit_record(actor=system_actor, action="b", subject=workspace)
        second_bulk = audit_record_many(actor=system_actor, entries=entries)

    chain = [before, *bulk, after, *second_bulk]
    assert [e.prev_hash for e in chain[1:]] == [e.hash for e in chain[:-1]]
    assert [e.pk for e in chain] == sorted(e.pk for e in chain)
    assert [e.created_at for e in chain] == sorted(e.created_at for e in chain)
    assert verify_chain() == ChainReport(checked=len(chain))


def test_audit_record_many__of_no_entries__records_nothing(system_actor):
    with transaction.atomic():
        assert audit_record_many(actor=system_actor, entries=[]) == []

    assert not AuditEvent.objects.exists()


def test_audit_record_many__saves_the_version_reversion_itself_would(workspace, admin_actor):
    segment = SegmentFactory(campaign__workspace=workspace)
    with transaction.atomic():
        [event] = audit_record_many(actor=admin_actor, entries=[AuditEntry("segment.update", segment, reason="why")])
    with reversion.create_revision():
        reversion.add_to_revision(Segment.objects.get(pk=segment.pk))

    by_bulk, by_reversion = Version.objects.get_for_object(segment).order_by("pk")
    assert _version_row(by_bulk) == _version_row(by_reversion)
    revision = by_bulk.revision
    assert (revision.date_created, revision.user_id, revision.comment) == (event.created_at, admin_actor.user_id, "why")
    assert list(revision.audit_links.values_list("event_id", flat=True)) == [event.pk]


def test_audit_record_many__versions_read_like_those_of_audit_record(workspace, admin_actor):
    segment = SegmentFactory(campaign__workspace=workspace)
    entry = AuditEntry("segment.update", segment, before={"bid": "1"}, after={"bid": "2"})
    with transaction.atomic():
        single = audit_record(actor=admin_actor, action=entry.action, subject=segment, before=entry.before,
                              after=entry.after)
        [bulk] = audit_record_many(actor=admin_actor, entries=[entry])

    from_single, from_bulk = _version_of(single, segment), _version_of(bulk, segment)
    assert _version_row(from_bulk) == _version_row(from_single)
    assert version_fields(from_bulk) == version_fields(from_single)
    assert version_info(from_bulk).event_ids == [bulk.pk]
    assert from_bulk.revision.comment == from_single.revision.comment == "segment.update"
    newest, oldest = object_history(Segment, segment.pk, workspace_ids=[workspace.pk])
    assert (newest, oldest) == (from_bulk, from_single)


def test_audit_record_many__version_of_a_segment__can_be_restored(workspace, admin_actor):
    segment = SegmentFactory(campaign__workspace=workspace, bid=Decimal("1.00"))
    with transaction.atomic():
        [event] = audit_record_many(actor=admin_actor, entries=[AuditEntry("segment.bid_change", segment)])
    campaign_services.segment_update(actor=admin_actor, segment=segment, bid=Decimal("2.50"))

    version_restore(actor=admin_actor, version=_version_of(event, segment), reason="undo the rule")

    assert Segment.objects.get(pk=segment.pk).bid == Decimal("1.00")


def test_audit_record_many__subject_with_followed_children__is_versioned_with_them(make_rule, workspace, admin_actor):
    rule = make_rule()
    segment = SegmentFactory(campaign__workspace=workspace)
    entries = [AuditEntry("rule.evaluate", rule), AuditEntry("segment.update", segment), AuditEntry("x", workspace)]
    with transaction.atomic():
        rule_event, segment_event, workspace_event = audit_record_many(actor=Actor.worker("rules"), entries=entries)

    rule_version = _version_of(rule_event, rule)
    assert len(version_children(rule_version)["triggers"]) == 2
    assert rule_version.revision.user is None
    assert _version_of(segment_event, segment).revision.user is None
    assert _version_of(workspace_event, workspace).revision.comment == "x"
    events = [rule_event, segment_event, workspace_event]
    assert VersionAudit.objects.filter(event__in=events).values("revision").distinct().count() == 3


def test_audit_record_many__subject_deleted_meanwhile__records_the_event_but_no_version(workspace, system_actor):
    segment = SegmentFactory(campaign__workspace=workspace)
    with transaction.atomic():
        Segment.objects.filter(pk=segment.pk).delete()
        [event] = audit_record_many(actor=system_actor, entries=[AuditEntry("segment.delete", segment)])

    assert AuditEvent.objects.filter(pk=event.pk).exists()
    assert not Version.objects.exists()


def test_audit_record_many__query_count__does_not_grow_with_the_entries(system_actor):
    few, many = _entries(WorkspaceFactory(), 3), _entries(WorkspaceFactory(), 40)
    with transaction.atomic():
        audit_record_many(actor=system_actor, entries=few)  # content types are looked up once, then cached

    counts = []
    for entries in (few, many):
        with transaction.atomic(), CaptureQueriesContext(connection) as queries:
            audit_record_many(actor=system_actor, entries=entries)
        counts.append(len(queries))

    assert counts[0] == counts[1]
    assert counts[1] <= 12


@pytest.mark.django_db(transaction=True)
def test_audit_record_many__outside_a_transaction__is_refused(system_actor):
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit_record_many(actor=system_actor, entries=[AuditEntry("x", WorkspaceFactory())])
