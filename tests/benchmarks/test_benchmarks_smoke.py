"""The benchmarks at a tiny scale (seconds): they keep running, and report sane figures.

Timings are not asserted — a test machine's speed says nothing — only the structure of the
results and what the runs must have done (facts loaded, rules evaluated, rows ingested,
changes applied by a real worker).
"""

import os
from pathlib import Path

import pytest
import redis

from benchmarks.database import benchmark_database_url
from benchmarks.latency import worker_thread
from benchmarks.progress import Progress
from benchmarks.report import table
from benchmarks.runner import run_benchmarks
from benchmarks.scale import Scale
from campaigns.models import MetricFact
from rules.models import Evaluation

REDIS_URL = os.environ.get("BENCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/10")
TINY = Scale(segments=30, days=2, rules=12, ingest_rows=90, ingest_batch_rows=40, latency_samples=2,
             segments_per_campaign=6)
VAR = Path("/srv/var")


def _redis_reachable() -> bool:
    try:
        return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False


@pytest.fixture
def quiet():
    return Progress(enabled=False)


@pytest.mark.django_db
def test_run_benchmarks__tiny_scale_without_worker__reports_evaluation_and_ingestion(quiet):
    results = run_benchmarks(TINY, worker=None, latency_skipped="no worker in this test", progress=quiet)

    assert results["market"] == {"campaigns": 5, "segments": 30, "facts": 30 * 2 * 24,
                                 "load_s": results["market"]["load_s"]}
    evaluation = results["evaluation"]
    assert evaluation["rules"] == evaluation["rules_evaluated"] == 12
    assert Evaluation.objects.filter(rule__workspace__name="Benchmark").count() == 12
    assert evaluation["baseline_groups"] == 30  # one row per segment
    assert evaluation["facts_in_span"] == 30 * evaluation["span_hours"]
    assert evaluation["counter_reads"] == 1 and evaluation["counter_read_s"] > 0  # one workspace: one read
    assert evaluation["rollup_days"] >= 1  # the days over before the cycle, rolled up untimed
    assert 0 < evaluation["fact_rows_read"] <= evaluation["facts_in_span"]  # the current day, at least
    assert evaluation["queries"] > 0
    assert evaluation["ratio"] == pytest.approx(evaluation["cycle_s"] / evaluation["baseline_s"])
    ingestion = results["ingestion"]
    assert (ingestion["rows"], ingestion["batches"], ingestion["rows_created"]) == (90, 3, 90)
    assert ingestion["ratio"] > 0
    assert MetricFact.objects.count() == 30 * 2 * 24 + 90  # the raw baseline's rows were removed again
    assert results["latency_skipped"] == "no worker in this test"
    assert results["verdicts"]["latency"] == "SKIPPED"
    assert {results["verdicts"][name] for name in ("evaluation", "ingestion")} <= {"PASS", "MISS"}
    assert "(a) evaluation cycle, 12 rules" in table(results)


@pytest.mark.integration
@pytest.mark.skipif(not _redis_reachable(), reason=f"Redis is not reachable at {REDIS_URL} (BENCH_TEST_REDIS_URL)")
@pytest.mark.django_db(transaction=True)
def test_run_benchmarks__with_a_worker_on_redis__measures_each_latency_sample(quiet):
    results = run_benchmarks(TINY, worker=lambda: worker_thread(REDIS_URL), progress=quiet)

    latency = results["latency"]
    assert latency["samples"] == len(latency["seconds"]) == 2
    assert 0 < latency["p50_s"] <= latency["p95_s"] <= latency["max_s"]
    assert results["verdicts"]["latency"] in {"PASS", "MISS"}


def test_benchmark_database_url__never_the_configured_database_unless_named_for_benchmarks():
    assert benchmark_database_url(None, var_dir=VAR) == "sqlite:////srv/var/bench.sqlite3"
    assert benchmark_database_url("sqlite:////srv/var/db.sqlite3", var_dir=VAR) == "sqlite:////srv/var/db_bench.sqlite3"
    assert benchmark_database_url("postgres://u@h:5432/rp", var_dir=VAR) == "postgres://u@h:5432/rp_bench"
    assert benchmark_database_url("postgres://u@h:5432/rp_bench", var_dir=VAR) == "postgres://u@h:5432/rp_bench"
