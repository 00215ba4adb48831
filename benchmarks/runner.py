"""Runs the three benchmarks in order on the current database and returns their figures."""

import dataclasses
from datetime import datetime

from django.db import connection
from django.utils import timezone

from .dataset import build_market
from .evaluation import bench_evaluation
from .ingestion import bench_ingestion
from .latency import WorkerFactory, bench_latency
from .progress import Progress
from .report import verdicts
from .rules_mix import create_rules
from .scale import Scale


def run_benchmarks(scale: Scale, *, worker: WorkerFactory | None, progress: Progress, profile: bool = False,
                   latency_skipped: str = "", now: datetime | None = None) -> dict:
    """(a), (b), then (c) when a worker is given (`latency_skipped` says why not, otherwise)."""
    now = now or timezone.now()
    market = build_market(scale, name="Benchmark", now=now, progress=progress)
    create_rules(market, scale.rules, days=scale.days, progress=progress)
    results = {
        "started_at": now.isoformat(timespec="seconds"), "database": connection.vendor,
        "scale": dataclasses.asdict(scale),
        "market": {"campaigns": len(market.campaigns), "segments": len(market.profiles),
                   "facts": market.facts_loaded, "load_s": market.load_seconds},
    }
    progress.note("(a) evaluation cycle...")
    results["evaluation"] = bench_evaluation(market, profile=profile)
    progress.note("(b) ingestion...")
    results["ingestion"] = bench_ingestion(market, rows=scale.ingest_rows, batch_rows=scale.ingest_batch_rows,
                                           days=scale.days, progress=progress)
    if worker is not None and scale.latency_samples:
        progress.note("(c) latency, with a worker...")
        results["latency"] = bench_latency(owner=market.owner, samples=scale.latency_samples, worker=worker,
                                           progress=progress)
    else:
        results["latency_skipped"] = latency_skipped or "no worker"
    results["verdicts"] = verdicts(results)
    return results
