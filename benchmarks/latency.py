"""(c) Metrics in -> change applied, through a real Celery worker on Redis.

A separate small workspace holds one campaign per sample, each with a few segments and one
active rule (CTR below 2% over the last hour -> bid -10%). A sample ingests the campaign's
latest buckets with one segment's CTR at 1%, then polls until the rule's change is applied:
ingestion commits, its receiver enqueues `evaluate_after_ingestion`, the worker evaluates the
rules the batch touched and the pipeline caps and applies the change. The clock runs from just
before `metrics_ingest` to the poll that sees the change applied.

The worker is a subprocess (`celery -A rulesplatform worker`, thread pool, as `make run` starts
it) on the benchmark's database and broker; `worker_thread` runs one in-process instead (the
smoke tests use it, as a subprocess cannot see an in-memory test database).
"""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
from django.db import OperationalError, close_old_connections, connection
from django.utils import timezone

from accounts.models import Workspace
from campaigns.ingestion import metrics_ingest
from campaigns.models import Campaign, Channel, Segment
from rules.aggregates import floor_to_bucket
from rules.models import Change, Rule
from rules.services import rule_activate, rule_create

from .progress import Progress
from .rules_mix import BENCH_ACTOR

SEGMENTS_PER_CAMPAIGN = 5
POLL_SECONDS = 0.01
SAMPLE_TIMEOUT_SECONDS = 60
WORKER_START_TIMEOUT_SECONDS = 60
_PROJECT_DIR = Path(__file__).resolve().parent.parent
_GIVEN_UP = (Change.Status.BLOCKED, Change.Status.FAILED, Change.Status.CONFLICTED)

WorkerFactory = Callable[[], AbstractContextManager]


def bench_latency(*, owner, samples: int, worker: WorkerFactory, progress: Progress) -> dict:
    rules = _latency_rules(owner, samples)
    seconds, ingest_seconds = [], []
    with worker():
        progress.start("metrics in -> change applied", total=samples, unit="samples")
        for rule in rules:
            total, ingest = _sample(rule)
            seconds.append(total)
            ingest_seconds.append(ingest)
            progress.advance()
        progress.finish()
    return {
        "samples": samples, "p50_s": float(np.percentile(seconds, 50)), "p95_s": float(np.percentile(seconds, 95)),
        "max_s": max(seconds), "ingest_p50_s": float(np.percentile(ingest_seconds, 50)), "seconds": seconds,
    }


def _latency_rules(owner, count: int) -> list[Rule]:
    workspace = Workspace.objects.create(name="Bench latency", time_zone="Europe/Paris", metric_bucket_minutes=60)
    rules = []
    for i in range(count):
        campaign = Campaign.objects.create(workspace=workspace, name=f"Latency {i:02d}", channel=Channel.SEARCH,
                                           daily_budget=Decimal("1000"), start_date=date(2026, 1, 1))
        Segment.objects.bulk_create(
            Segment(campaign=campaign, name=f"Segment {k}", criteria={"device": "mobile"}, bid=Decimal("1.00"),
                    bid_floor=Decimal("0.10"), bid_ceiling=Decimal("5.00"), daily_budget=Decimal("100"),
                    budget_floor=Decimal("10"), budget_ceiling=Decimal("500"))
            for k in range(SEGMENTS_PER_CAMPAIGN)
        )
        rule = rule_create(
            actor=BENCH_ACTOR, workspace=workspace, owner=owner, name=f"Latency rule {i:02d}", campaigns=[campaign],
            action=Rule.Action.BID_PCT, action_value=Decimal("-10"),
            triggers=[{"metric": "ctr", "kind": "threshold", "direction": "below", "threshold": Decimal("0.02"),
                       "window_minutes": 60, "baseline_minutes": 60, "min_sample": 100}],
        )
        rules.append(rule_activate(actor=BENCH_ACTOR, rule=rule))
    return rules


def _sample(rule: Rule) -> tuple[float, float]:
    """(metrics in -> change applied, of which the ingestion call) in seconds."""
    campaign = rule.campaigns.get()
    rows = _rows_with_one_ctr_drop(list(campaign.segments.order_by("pk")), rule.workspace)
    started = time.perf_counter()
    metrics_ingest(actor=BENCH_ACTOR, workspace=rule.workspace, rows=rows)
    ingested = time.perf_counter()
    deadline = started + SAMPLE_TIMEOUT_SECONDS
    while time.perf_counter() < deadline:
        statuses = _change_statuses(rule)
        if Change.Status.APPLIED in statuses:
            return time.perf_counter() - started, ingested - started
        if statuses & set(_GIVEN_UP):
            raise RuntimeError(f"The change of {rule} was not applied: {sorted(statuses)}.")
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"No change of {rule} was applied within {SAMPLE_TIMEOUT_SECONDS} s: is the worker running?")


def _change_statuses(rule: Rule) -> set[str]:
    try:
        return set(Change.objects.filter(rule=rule).values_list("status", flat=True))
    except OperationalError:  # SQLite: the worker holds the write lock for a moment
        return set()


def _rows_with_one_ctr_drop(segments: list[Segment], workspace: Workspace) -> list[dict]:
    # The bucket still filling and the two before it: whichever hour the worker judges (the
    # hour may turn meanwhile), the first segment's CTR is 1% and the others' 5%.
    current = floor_to_bucket(timezone.now(), workspace.metric_bucket_minutes)
    buckets = [current - timedelta(hours=h) for h in (2, 1, 0)]
    return [
        {"segment": segment.pk, "bucket_start": bucket.isoformat(), "impressions": 1000,
         "clicks": 10 if index == 0 else 50, "sessions": 8 if index == 0 else 40, "spend": "5", "revenue": "12"}
        for index, segment in enumerate(segments)
        for bucket in buckets
    ]


# --- workers -------------------------------------------------------------------------------------

@contextmanager
def worker_process() -> Iterator[None]:
    """A `celery worker` subprocess on this process's settings (database and broker from the environment)."""
    from rulesplatform.celery import app

    name = f"bench-{os.getpid()}@localhost"
    app.control.purge()  # tasks enqueued by the other benchmarks, or left by an interrupted run
    command = [sys.executable, "-m", "celery", "-A", "rulesplatform", "--quiet", "worker", "--pool=threads",
               "--concurrency=2", "--loglevel=WARNING", "--without-gossip", "--without-mingle", "-n", name]
    process = subprocess.Popen(command, cwd=_PROJECT_DIR, env=os.environ.copy())
    try:
        _wait_until_ready(app, name, process)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(app, name: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"The Celery worker exited with code {process.returncode}.")
        if app.control.ping(destination=[name], timeout=0.5):
            return
    raise RuntimeError(f"The Celery worker did not answer within {WORKER_START_TIMEOUT_SECONDS} s.")


@contextmanager
def worker_thread(broker_url: str) -> Iterator[None]:
    """A worker in a thread of this process, on its own Celery app bound to `broker_url`."""
    from celery.contrib.testing.app import TestApp, setup_default_app
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun

    app = TestApp(set_as_current=True, config={
        "broker_url": broker_url, "result_backend": None, "task_serializer": "json",
        "accept_content": ["json"], "broker_connection_retry_on_startup": True,
    })
    with setup_default_app(app):
        app.set_current()
        app.set_default()
        app.finalize()
        app.control.purge()
        task_postrun.connect(_close_worker_connection, weak=False)
        try:
            with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=30):
                yield
        finally:
            task_postrun.disconnect(_close_worker_connection)


def _close_worker_connection(**kwargs) -> None:
    # The worker thread's own database connection must not outlive the run (a test database
    # could not be dropped while it is open).
    close_old_connections()
    connection.close()
