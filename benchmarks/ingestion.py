"""(b) Rows per second through the ingestion service, against a raw bulk insert of the same rows.

The rows are new facts (hours before the loaded history) of every segment of the market. The
raw insert (COPY on PostgreSQL, `bulk_create` elsewhere) writes them into the same table, with
the same indexes, in one committed transaction, and they are deleted again; `metrics_ingest` then takes
them in batches of `ingest_batch_rows`, as API requests would bring them: validation, upsert,
freshness, audit and the evaluation enqueued after commit, all included.
"""

import math
import time
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from campaigns.ingestion import metrics_ingest
from campaigns.models import MetricFact
from campaigns.simulator import Simulator, rows_for_ingestion

from .dataset import SEED, Market
from .facts import insert_facts
from .progress import Progress
from .rules_mix import BENCH_ACTOR


def bench_ingestion(market: Market, *, rows: int, batch_rows: int, days: int, progress: Progress) -> dict:
    frame = _new_facts(market, rows=rows, days=days)
    raw_seconds = _raw_insert_seconds(market, frame)
    payload = rows_for_ingestion(frame)  # what a client sends; building it is not the service's work
    batches = [payload[start:start + batch_rows] for start in range(0, len(payload), batch_rows)]
    progress.start("ingesting", total=len(payload), unit="rows")
    service_seconds, created = 0.0, 0
    for batch in batches:
        started = time.perf_counter()
        result = metrics_ingest(actor=BENCH_ACTOR, workspace=market.workspace, rows=batch)
        service_seconds += time.perf_counter() - started
        created += result.rows_created
        progress.advance(len(batch))
    progress.finish()
    raw_rate, service_rate = len(frame) / raw_seconds, len(frame) / service_seconds
    return {
        "rows": len(frame), "batches": len(batches), "batch_rows": batch_rows, "rows_created": created,
        "raw_method": "COPY" if connection.vendor == "postgresql" else "bulk_create", "raw_s": raw_seconds,
        "service_s": service_seconds, "raw_rows_per_s": raw_rate, "service_rows_per_s": service_rate,
        "ratio": service_rate / raw_rate,
    }


def _new_facts(market: Market, *, rows: int, days: int):
    """`rows` facts of the market's segments, in the hours just before its loaded history."""
    hours = math.ceil(rows / len(market.profiles))
    first_loaded = market.data_end - timedelta(days=days)
    buckets = [first_loaded - timedelta(hours=h) for h in range(hours, 0, -1)]
    simulator = Simulator(seed=SEED + 1, time_zone=market.workspace.time_zone,
                          bucket_minutes=market.workspace.metric_bucket_minutes)
    return simulator.simulate_buckets(market.profiles, buckets).head(rows)


def _raw_insert_seconds(market: Market, frame) -> float:
    started = time.perf_counter()
    with transaction.atomic():
        insert_facts(frame, workspace_id=market.workspace.pk, ingested_at=timezone.now())
    elapsed = time.perf_counter() - started
    MetricFact.objects.filter(workspace=market.workspace, bucket_start__lte=frame["bucket_start"].max()).delete()
    return elapsed
