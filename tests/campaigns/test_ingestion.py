"""Metric ingestion: whole-batch validation, idempotent upsert, freshness, audit and the on-commit signal."""

import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts.exceptions import PermissionDenied
from accounts.roles import Role
from audit.actors import Actor
from audit.models import AuditEvent
from campaigns import ingestion
from campaigns.exceptions import BatchRejected, IdempotencyKeyReused
from campaigns.ingestion import metrics_ingest, metrics_ingest_csv
from campaigns.models import Campaign, IngestionBatch, MetricFact
from campaigns.signals import metrics_ingested
from tests.campaigns.builders import BUCKET, HOUR, fact_row
from tests.factories import CreativeFactory, SegmentFactory

pytestmark = pytest.mark.django_db


def _nothing_written():
    return (not MetricFact.objects.exists() and not IngestionBatch.objects.exists()
            and not AuditEvent.objects.filter(action="metrics.ingest").exists())


def _rejection(actor, workspace, rows) -> BatchRejected:
    with pytest.raises(BatchRejected) as error:
        metrics_ingest(actor=actor, workspace=workspace, rows=rows)
    return error.value


@pytest.fixture
def received():
    """Calls of the metrics_ingested signal, as a list of their keyword arguments."""
    calls = []

    def receiver(sender, **kwargs):
        calls.append(kwargs)

    metrics_ingested.connect(receiver)
    yield calls
    metrics_ingested.disconnect(receiver)


# --- A good batch -------------------------------------------------------------------------


def test_metrics_ingest__good_batch__stores_every_row_with_its_values(workspace, segment, creative, marketer_actor):
    rows = [
        fact_row(segment, sessions=50, engaged_seconds=900),
        fact_row(segment, creative=creative.pk, variant="B", spend=0.1),
        {"segment_external_id": "adset-1", "bucket_start": (BUCKET + HOUR).isoformat().replace("+00:00", "Z"),
         "clicks": None},
    ]
    result = metrics_ingest(actor=marketer_actor, workspace=workspace, rows=rows)

    assert result == ingestion.IngestResult(rows_received=3, rows_created=3, rows_updated=0,
                                            campaign_ids=[segment.campaign_id], replayed=False)
    plain, with_creative, by_external_id = MetricFact.objects.order_by("bucket_start", "creative_key")
    assert (plain.impressions, plain.clicks, plain.sessions, plain.engaged_seconds) == (1000, 30, 50, 900)
    assert (plain.spend, plain.revenue, plain.creative_id, plain.variant) == (Decimal("12.5"), 40, None, "")
    assert plain.workspace_id == workspace.pk and plain.campaign_id == segment.campaign_id
    assert (with_creative.creative_id, with_creative.creative_key) == (creative.pk, creative.pk)
    assert with_creative.variant == "B"
    assert with_creative.spend == Decimal("0.1000")
    assert by_external_id.segment_id == segment.pk
    assert by_external_id.bucket_start == BUCKET + HOUR
    assert (by_external_id.impressions, by_external_id.clicks, by_external_id.spend) == (0, 0, 0)  # absent or null: 0


def test_metrics_ingest__the_same_batch_again__updates_the_same_rows(workspace, segment, marketer_actor):
    rows = [fact_row(segment), fact_row(segment, bucket=BUCKET + HOUR)]
    metrics_ingest(actor=marketer_actor, workspace=workspace, rows=rows)
    first_ids = set(MetricFact.objects.values_list("pk", flat=True))

    rows[0]["clicks"] = 31
    result = metrics_ingest(actor=marketer_actor, workspace=workspace, rows=rows)

    assert (result.rows_created, result.rows_updated, result.replayed) == (0, 2, False)
    assert set(MetricFact.objects.values_list("pk", flat=True)) == first_ids
    assert MetricFact.objects.get(bucket_start=BUCKET).clicks == 31


def test_metrics_ingest__partly_known_keys__counts_created_and_updated(workspace, segment, marketer_actor):
    metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment)])
    result = metrics_ingest(actor=marketer_actor, workspace=workspace,
                            rows=[fact_row(segment), fact_row(segment, variant="B")])
    assert (result.rows_created, result.rows_updated) == (1, 1)
    assert MetricFact.objects.count() == 2


def test_metrics_ingest__records_freshness_per_campaign_and_never_moves_it_back(workspace, segment, marketer_actor):
    metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment, bucket=BUCKET + 3 * HOUR)])
    before = timezone.now()
    metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment, bucket=BUCKET)])

    campaign = Campaign.objects.get(pk=segment.campaign_id)
    assert campaign.metrics_latest_bucket == BUCKET + 3 * HOUR  # a backfill does not lower it
    assert campaign.metrics_received_at >= before


def test_metrics_ingest__one_audit_event_per_batch_with_its_counts(workspace, segment, marketer_actor):
    metrics_ingest(actor=marketer_actor, workspace=workspace,
                   rows=[fact_row(segment, bucket=BUCKET + i * HOUR) for i in range(5)])
    [event] = AuditEvent.objects.filter(action="metrics.ingest")
    assert event.workspace_id == workspace.pk
    assert event.after["rows_received"] == 5 and event.after["rows_created"] == 5
    assert event.after["campaign_ids"] == [segment.campaign_id]


def test_metrics_ingest__by_an_approver__is_refused(workspace, segment, member):
    with pytest.raises(PermissionDenied):
        metrics_ingest(actor=Actor.for_user(member(Role.APPROVER)), workspace=workspace, rows=[fact_row(segment)])
    assert _nothing_written()


# --- Bad input: the whole batch is refused, naming row, field and reason ------------------


def _unknown(ctx):
    return {"segment": 10**9}


BAD_ROWS = {
    "unknown segment": (_unknown, "segment", "no such segment in this workspace"),
    "segment of another workspace": (
        lambda c: {"segment": c.other_segment.pk}, "segment", "no such segment in this workspace"),
    "segment not an id": (lambda c: {"segment": "first"}, "segment", "not a valid id"),
    "no segment": (lambda c: {"segment": None}, "segment", "required (give segment or segment_external_id)"),
    "segment and external id": (lambda c: {"segment_external_id": "adset-1"}, "segment",
                                "give segment or segment_external_id, not both"),
    "unknown external id": (lambda c: {"segment": None, "segment_external_id": "nope"}, "segment_external_id",
                            "no segment with this external id in this workspace"),
    "ambiguous external id": (lambda c: {"segment": None, "segment_external_id": "twice"}, "segment_external_id",
                              "matches several segments in this workspace; send the segment id"),
    "unknown creative": (lambda c: {"creative": 10**9}, "creative", "no such creative in this workspace"),
    "creative of another workspace": (lambda c: {"creative": c.other_creative.pk}, "creative",
                                      "no such creative in this workspace"),
    "creative of another campaign": (lambda c: {"creative": c.sibling_creative.pk}, "creative",
                                     "belongs to another campaign than the segment"),
    "negative counter": (lambda c: {"conversions": -1}, "conversions", "negative"),
    "negative money": (lambda c: {"spend": "-0.01"}, "spend", "negative"),
    "NaN counter": (lambda c: {"impressions": float("nan")}, "impressions", "not a finite number"),
    "infinite money": (lambda c: {"revenue": float("inf")}, "revenue", "not a finite number"),
    "text counter": (lambda c: {"sessions": "many"}, "sessions", "not a finite number"),
    "fractional count": (lambda c: {"clicks": 2.5}, "clicks", "not a whole number"),
    "huge count": (lambda c: {"engaged_seconds": 10**16}, "engaged_seconds", "too large (must be below 1e+15)"),
    "clicks above impressions": (lambda c: {"impressions": 10, "clicks": 11}, "clicks",
                                 "more clicks than impressions"),
    "misaligned bucket": (lambda c: {"bucket_start": "2026-03-02T11:30:00+00:00"}, "bucket_start",
                          "not the start of a 60-minute bucket (aligned in UTC)"),
    "bucket in the future": (lambda c: {"bucket_start": (c.next_hour + HOUR).isoformat()}, "bucket_start",
                             "in the future"),
    "unparseable bucket": (lambda c: {"bucket_start": "yesterday 10am"}, "bucket_start",
                           "not an ISO-8601 date-time"),
    "bucket without offset": (lambda c: {"bucket_start": "2026-03-02T11:00:00"}, "bucket_start",
                              "has no UTC offset (e.g. 2026-03-01T14:00:00+01:00 or ...Z)"),
    "no bucket": (lambda c: {"bucket_start": None}, "bucket_start", "required"),
    "duplicate key": (lambda c: {"bucket_start": BUCKET.isoformat()}, "bucket_start",
                      "same segment, creative, variant and bucket_start as row 0"),
    "unknown column": (lambda c: {"clikcs": 3}, "clikcs", "unknown field"),
    "variant too long": (lambda c: {"variant": "v" * 65}, "variant", "longer than 64 characters"),
}


class _Context:
    def __init__(self, segment, other_segment):
        self.other_segment = other_segment
        self.other_creative = CreativeFactory(campaign=other_segment.campaign)
        self.sibling_creative = CreativeFactory(campaign__workspace=segment.campaign.workspace)
        SegmentFactory.create_batch(2, campaign=segment.campaign, external_id="twice")
        self.next_hour = timezone.now().replace(minute=0, second=0, microsecond=0) + HOUR


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_metrics_ingest__one_bad_row__refuses_the_batch_naming_row_field_and_reason(
    case, workspace, segment, other_segment, marketer_actor
):
    make_change, field, reason = BAD_ROWS[case]
    changes = make_change(_Context(segment, other_segment))
    bad = {k: v for k, v in {**fact_row(segment, bucket=BUCKET + HOUR), **changes}.items() if v is not None}
    error = _rejection(marketer_actor, workspace, [fact_row(segment), bad])

    assert error.errors == [{"row": 1, "field": field, "reason": reason}]
    assert error.status == 400
    assert _nothing_written()


def test_metrics_ingest__many_problems__are_all_listed_in_row_order(workspace, segment, marketer_actor):
    rows = [fact_row(segment, clicks=-1), fact_row(segment, bucket=BUCKET + HOUR),
            {"segment": 10**9, "bucket_start": "2026-03-02T10:15:00Z", "impressions": 1.5}]
    error = _rejection(marketer_actor, workspace, rows)
    assert [(e["row"], e["field"]) for e in error.errors] == [
        (0, "clicks"), (2, "segment"), (2, "bucket_start"), (2, "impressions"),
    ]
    assert error.error_count == 4


def test_metrics_ingest__more_problems_than_reported__lists_the_first_and_counts_all(
    workspace, segment, marketer_actor, monkeypatch
):
    monkeypatch.setattr(ingestion, "MAX_REPORTED_ERRORS", 3)
    rows = [fact_row(segment, bucket=BUCKET + i * HOUR, clicks=-1) for i in range(5)]
    error = _rejection(marketer_actor, workspace, rows)
    assert [e["row"] for e in error.errors] == [0, 1, 2]
    assert error.error_count == 5
    assert error.extra["errors_truncated"] is True


def test_metrics_ingest__empty_batch__is_refused(workspace, marketer_actor):
    assert "no rows" in _rejection(marketer_actor, workspace, []).message


def test_metrics_ingest__ten_thousand_rows_with_one_bad__is_refused_whole_naming_that_row(workspace, marketer_actor):
    segments = SegmentFactory.create_batch(20, campaign__workspace=workspace)
    rows = [fact_row(segments[i % 20], bucket=BUCKET - (i // 20) * HOUR) for i in range(10_000)]
    rows[7_321]["clicks"] = rows[7_321]["impressions"] + 1

    error = _rejection(marketer_actor, workspace, rows)

    assert error.errors == [{"row": 7_321, "field": "clicks", "reason": "more clicks than impressions"}]
    assert _nothing_written()


def test_metrics_ingest__ten_thousand_good_rows__are_upserted_in_one_batch(workspace, marketer_actor,
                                                                           django_assert_max_num_queries):
    segments = SegmentFactory.create_batch(20, campaign__workspace=workspace)
    rows = [fact_row(segments[i % 20], bucket=BUCKET - (i // 20) * HOUR) for i in range(10_000)]
    # Lookups, upserts in chunks (SQLite binds at most 999 values per query: ~50 rows), freshness,
    # audit: never one query per row.
    with django_assert_max_num_queries(40 if connection.vendor == "postgresql" else 250):
        result = metrics_ingest(actor=marketer_actor, workspace=workspace, rows=rows)
    assert result.rows_created == 10_000
    assert MetricFact.objects.count() == 10_000


# --- All or nothing -----------------------------------------------------------------------


def test_metrics_ingest__a_failure_after_some_chunks_were_written__leaves_nothing(
    workspace, segment, marketer_actor, monkeypatch
):
    monkeypatch.setattr(ingestion, "UPSERT_CHUNK_ROWS", 2)
    monkeypatch.setattr(ingestion, "ARRAY_UPSERT_CHUNK_ROWS", 2)  # the PostgreSQL path's chunks

    def fail_after_upsert(facts, *, now):
        assert MetricFact.objects.count() == 5  # every chunk went in before the failure
        raise RuntimeError("disk full")

    monkeypatch.setattr(ingestion, "_mark_fresh", fail_after_upsert)
    rows = [fact_row(segment, bucket=BUCKET + i * HOUR) for i in range(5)]
    with pytest.raises(RuntimeError, match="disk full"):
        metrics_ingest(actor=marketer_actor, workspace=workspace, rows=rows)
    assert _nothing_written()
    assert Campaign.objects.get(pk=segment.campaign_id).metrics_received_at is None


# --- Idempotency-Key ----------------------------------------------------------------------


def test_metrics_ingest__same_key_same_payload__replays_the_outcome_and_writes_nothing(
    workspace, segment, marketer_actor
):
    rows = [fact_row(segment)]
    first = metrics_ingest(actor=marketer_actor, workspace=workspace, rows=rows, idempotency_key="push-1")
    MetricFact.objects.update(clicks=1)  # so a second write would show

    again = metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[dict(reversed(rows[0].items()))],
                           idempotency_key="push-1")

    assert again == ingestion.IngestResult(**{**first.__dict__, "replayed": True})
    assert MetricFact.objects.get().clicks == 1
    assert IngestionBatch.objects.count() == 1
    assert AuditEvent.objects.filter(action="metrics.ingest").count() == 1


def test_metrics_ingest__same_key_other_payload__is_a_conflict(workspace, segment, marketer_actor):
    metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment)], idempotency_key="push-1")
    with pytest.raises(IdempotencyKeyReused) as error:
        metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment, clicks=1)],
                       idempotency_key="push-1")
    assert error.value.status == 409
    assert MetricFact.objects.get().clicks == 30


def test_metrics_ingest__same_key_in_another_workspace__is_independent(
    workspace, other_workspace, segment, other_segment, marketer_actor, system_actor
):
    metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment)], idempotency_key="k")
    result = metrics_ingest(actor=system_actor, workspace=other_workspace, rows=[fact_row(other_segment)],
                            idempotency_key="k")
    assert not result.replayed
    assert MetricFact.objects.count() == 2


def test_metrics_ingest__a_rejected_batch__does_not_use_up_its_key(workspace, segment, marketer_actor):
    with pytest.raises(BatchRejected):
        metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment, clicks=-1)],
                       idempotency_key="k")
    result = metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment)], idempotency_key="k")
    assert not result.replayed and result.rows_created == 1


# --- After commit -------------------------------------------------------------------------


def test_metrics_ingest__signal__is_sent_after_commit_only(workspace, segment, marketer_actor, received,
                                                            django_capture_on_commit_callbacks):
    other = SegmentFactory(campaign=segment.campaign)
    rows = [fact_row(segment, bucket=BUCKET + HOUR), fact_row(other)]
    with django_capture_on_commit_callbacks() as callbacks:
        metrics_ingest(actor=marketer_actor, workspace=workspace, rows=rows)
    assert received == []  # not inside the transaction

    for callback in callbacks:
        callback()
    assert received == [{"signal": metrics_ingested, "workspace_id": workspace.pk,
                         "campaign_ids": [segment.campaign_id], "segment_ids": sorted([segment.pk, other.pk]),
                         "bucket_min": BUCKET, "bucket_max": BUCKET + HOUR}]


def test_metrics_ingest__rejected_or_replayed__sends_no_signal(workspace, segment, marketer_actor, received,
                                                               django_capture_on_commit_callbacks):
    metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment)], idempotency_key="k")
    with django_capture_on_commit_callbacks(execute=True):
        metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment)], idempotency_key="k")
        with pytest.raises(BatchRejected):
            metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment, clicks=-1)])
    assert received == []


@pytest.mark.django_db(transaction=True)
def test_metrics_ingest__signal_on_a_real_commit__and_never_on_rollback(workspace, segment, marketer_actor,
                                                                        received):
    with pytest.raises(RuntimeError), transaction.atomic():
        metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment)])
        raise RuntimeError("the caller's transaction fails")
    assert received == [] and not MetricFact.objects.exists()

    metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment)])
    assert [call["segment_ids"] for call in received] == [[segment.pk]]


# --- Data quality -------------------------------------------------------------------------


def test_metrics_ingest__spend_without_impressions__flags_the_campaign_until_a_clean_batch(
    workspace, segment, marketer_actor
):
    metrics_ingest(actor=marketer_actor, workspace=workspace,
                   rows=[fact_row(segment, impressions=0, clicks=0, spend="5")])
    flag = Campaign.objects.get(pk=segment.campaign_id).data_quality_flag
    assert flag.startswith("Spend without impressions in 1 row(s)")
    assert "2026-03-02 10:00 UTC" in flag

    metrics_ingest(actor=marketer_actor, workspace=workspace, rows=[fact_row(segment)])
    assert Campaign.objects.get(pk=segment.campaign_id).data_quality_flag == ""


# --- CSV ----------------------------------------------------------------------------------


def _csv(text: str) -> io.BytesIO:
    return io.BytesIO(text.encode())


def test_metrics_ingest_csv__good_file__is_ingested_like_rows(workspace, segment, creative, marketer_actor):
    content = (
        "segment,creative,variant,bucket_start,impressions,clicks,spend\n"
        f"{segment.pk},,,2026-03-02T10:00:00+00:00,100,4,1.25\n"
        f"{segment.pk},{creative.pk},B,2026-03-02T11:00:00+01:00,50,,0\n"
    )
    result = metrics_ingest_csv(actor=marketer_actor, workspace=workspace, file=_csv(content))
    assert (result.rows_created, result.campaign_ids) == (2, [segment.campaign_id])
    first, second = MetricFact.objects.order_by("creative_key")
    assert (first.impressions, first.clicks, first.spend, first.variant) == (100, 4, Decimal("1.25"), "")
    assert (second.bucket_start, second.creative_id, second.clicks, second.variant) == (BUCKET, creative.pk, 0, "B")


def test_metrics_ingest_csv__bad_cells__are_refused_by_data_row(workspace, segment, marketer_actor):
    content = (
        "segment,bucket_start,impressions,clicks\n"
        f"{segment.pk},2026-03-02T10:00:00Z,100,4\n"
        f"{segment.pk},2026-03-02T11:00:00Z,NaN,4\n"
    )
    with pytest.raises(BatchRejected) as error:
        metrics_ingest_csv(actor=marketer_actor, workspace=workspace, file=_csv(content))
    assert error.value.errors == [{"row": 1, "field": "impressions", "reason": "not a finite number"}]
    assert _nothing_written()


def test_metrics_ingest_csv__not_a_csv__is_refused(workspace, marketer_actor):
    with pytest.raises(BatchRejected) as error:
        metrics_ingest_csv(actor=marketer_actor, workspace=workspace, file=io.BytesIO(b"\xff\xfe\x00garbage"))
    assert error.value.errors[0]["field"] == "file"


def test_metrics_ingest_csv__same_key_same_file__replays(workspace, segment, marketer_actor):
    content = f"segment,bucket_start,impressions\n{segment.pk},2026-03-02T10:00:00Z,100\n"
    metrics_ingest_csv(actor=marketer_actor, workspace=workspace, file=_csv(content), idempotency_key="f1")
    assert metrics_ingest_csv(actor=marketer_actor, workspace=workspace, file=_csv(content),
                              idempotency_key="f1").replayed


def test_bucket_alignment__follows_the_workspace_bucket_length(workspace, segment, marketer_actor):
    workspace.metric_bucket_minutes = 15
    workspace.save()
    ok = metrics_ingest(actor=marketer_actor, workspace=workspace,
                        rows=[fact_row(segment, bucket=BUCKET + timedelta(minutes=45))])
    assert ok.rows_created == 1
    error = _rejection(marketer_actor, workspace, [fact_row(segment, bucket=BUCKET + timedelta(minutes=50))])
    assert error.errors[0]["reason"] == "not the start of a 15-minute bucket (aligned in UTC)"
