"""The whole loop with a REAL Celery worker on Redis: metrics in -> receiver enqueues -> worker
evaluates -> the capped change is applied.

The broker is `TEST_REDIS_URL` (default redis://127.0.0.1:6379/3), whatever CELERY_BROKER_URL
says, so the SQLite pass runs it too; the test is skipped only when Redis cannot be reached.
"""

import os
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from celery.contrib.testing.app import TestApp, setup_default_app
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.db import OperationalError, close_old_connections
from django.utils import timezone

from campaigns.ingestion import metrics_ingest
from rules.aggregates import floor_to_bucket
from rules.models import Change, Evaluation
from tests.factories import CampaignFactory, SegmentFactory, WorkspaceFactory
from tests.rules.facts import SYSTEM, active_rule, trigger

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/3")
POLL_SECONDS = 30


def _redis_reachable() -> bool:
    try:
        return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not _redis_reachable(), reason=f"Redis is not reachable at {REDIS_URL} (TEST_REDIS_URL)"),
]


def _close_worker_connection(**kwargs):
    # The worker runs tasks in its own thread: its database connection must not outlive the
    # test, or the test database could not be flushed or dropped.
    close_old_connections()
    from django.db import connection

    connection.close()


@pytest.fixture
def redis_worker():
    """A Celery app on Redis, current for the test (so `.delay()` publishes there), and a worker."""
    app = TestApp(set_as_current=True, config={
        "broker_url": REDIS_URL, "result_backend": None, "task_serializer": "json",
        "accept_content": ["json"], "broker_connection_retry_on_startup": True,
    })
    with setup_default_app(app):
        app.set_current()
        app.set_default()
        app.finalize()
        app.control.purge()  # messages left by an interrupted earlier run
        task_postrun.connect(_close_worker_connection, weak=False)
        try:
            with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=30):
                yield app
        finally:
            task_postrun.disconnect(_close_worker_connection)


def _wait_for(predicate, *, seconds: float = POLL_SECONDS):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except OperationalError:  # SQLite: the worker holds the write lock for a moment
            result = None
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"nothing happened within {seconds} s")


@pytest.mark.django_db(transaction=True)
def test_metrics_ingested__a_real_worker_evaluates_and_applies_the_capped_change(redis_worker):
    workspace = WorkspaceFactory()
    campaign = CampaignFactory(workspace=workspace)
    segment = SegmentFactory(campaign=campaign, bid=Decimal("1.00"))
    rule = active_rule(workspace, campaigns=[campaign], action="bid_pct", action_value=Decimal("-25"), triggers=[
        trigger(metric="ctr", kind="threshold", direction="below", threshold=Decimal("0.04"))])
    # The last three whole buckets: whichever the worker judges (an hour may turn), CTR is 3%.
    last = floor_to_bucket(timezone.now(), workspace.metric_bucket_minutes)
    rows = [{"segment": segment.pk, "bucket_start": (last - timedelta(hours=h)).isoformat(),
             "impressions": 1000, "clicks": 30, "spend": "10", "revenue": "20"} for h in (1, 2, 3)]

    metrics_ingest(actor=SYSTEM, workspace=workspace, rows=rows)

    change = _wait_for(lambda: Change.objects.filter(rule=rule, status=Change.Status.APPLIED).first())
    assert (change.field, change.old_value, change.requested_value, change.capped_value) == (
        "bid", "1.0000", "0.7500", "0.9000")  # -25% asked, the 10% max step applied
    assert [e["cap"] for e in change.cap_report if e["bound"]] == ["max_step"]
    assert Evaluation.objects.get(pk=change.evaluation_id).source == Evaluation.Source.EVENT
    segment.refresh_from_db()
    assert segment.bid == Decimal("0.9000")
