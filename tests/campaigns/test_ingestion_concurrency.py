"""Two pushes at once, on PostgreSQL: the unique Idempotency-Key and row locks keep the outcome single."""

import threading

import pytest
from django.db import connection

from campaigns import ingestion
from campaigns.ingestion import metrics_ingest
from campaigns.models import IngestionBatch, MetricFact
from tests.campaigns.builders import BUCKET, HOUR, fact_row

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL"),
    pytest.mark.django_db(transaction=True),
]


def _run_together(monkeypatch, *pushes):
    """Run each push in its own thread and connection, all past their key check before any writes."""
    barrier = threading.Barrier(len(pushes), timeout=30)
    count_existing = ingestion._count_existing

    def count_after_everyone_checked(facts):
        barrier.wait()
        return count_existing(facts)

    monkeypatch.setattr(ingestion, "_count_existing", count_after_everyone_checked)
    outcomes = [None] * len(pushes)

    def run(i, push):
        try:
            outcomes[i] = push()
        except Exception as error:  # reported to the test, not lost in the thread
            outcomes[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, push)) for i, push in enumerate(pushes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def test_same_key_pushed_twice_at_once__writes_once_and_replays_the_other(
    monkeypatch, workspace, segment, marketer_actor
):
    rows = [fact_row(segment, bucket=BUCKET + i * HOUR) for i in range(50)]

    def push():
        return metrics_ingest(actor=marketer_actor, workspace=workspace, rows=rows, idempotency_key="once")

    outcomes = _run_together(monkeypatch, push, push)

    assert sorted(o.replayed for o in outcomes) == [False, True], outcomes
    assert IngestionBatch.objects.count() == 1
    assert MetricFact.objects.count() == 50


def test_overlapping_batches_at_once__both_apply_without_deadlock(monkeypatch, workspace, segment, marketer_actor):
    rows = [fact_row(segment, bucket=BUCKET - i * HOUR) for i in range(3000)]

    def push(order):
        return lambda: metrics_ingest(actor=marketer_actor, workspace=workspace, rows=order)

    outcomes = _run_together(monkeypatch, push(rows), push(rows[::-1]))

    assert all(isinstance(o, ingestion.IngestResult) for o in outcomes), outcomes
    assert MetricFact.objects.count() == 3000
