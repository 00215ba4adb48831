"""(a) One evaluation cycle of every rule, against one plain SQL aggregate over the same facts.

The cycle is `rules.engine.evaluate_rules` over all the rules at once, as a worker would run
them: it reads each workspace's counters once, summed per interval between its rules' window and
baseline boundaries, decides, records an Evaluation per rule and applies the capped changes.
The baseline is the least any evaluation must do: one
`SELECT segment_id, SUM(...) ... GROUP BY segment_id` over every segment and the whole time
range the rules look back over, measured in the same run on the same (warm) database.

The cycle timed is the steady state: the days that are over are rolled up first
(`campaigns.rollups`), as the beat task `refresh_metric_days` (every 15 minutes) would have done
in production, so the cycle reads those days from their rollups and
only the rest from the facts. That refresh is not in the cycle's time: it is reported apart
(`rollup_refresh_s`, `rollup_days`), with how many fact rows and rollup rows the cycle read.
"""

import cProfile
import io
import pstats
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import reduce
from operator import or_

from django.db import connection
from django.db.models import Count, Q

from campaigns.metrics import get_metric
from campaigns.models import MetricDay, MetricFact
from campaigns.rollups import metric_days_refresh
from rules import engine
from rules.aggregates import counters_needed, floor_to_bucket, split_span
from rules.engine import evaluate_rules
from rules.models import Change, Evaluation, Rule
from rules.selectors import scope_key
from rules.triggers import lookback_buckets

from .dataset import Market
from .rules_mix import BENCH_ACTOR

BASELINE_RUNS = 3
PROFILE_LINES = 30


@dataclass
class QueryLog:
    """Counts and times every SQL statement run through Django (`connection.execute_wrapper`)."""

    count: int = 0
    seconds: float = 0.0

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.count += 1
            self.seconds += time.perf_counter() - started


@dataclass
class CounterReads:
    """Times the engine's reads of counters (`rules.aggregates.load_counters`, wrapped where the
    engine calls it): the query and turning its rows into arrays, which the query log alone misses."""

    count: int = 0
    seconds: float = 0.0
    reads: list[dict] = field(default_factory=list)  # the arguments of each read

    @contextmanager
    def watching(self):
        original = engine.load_counters

        def timed(**kwargs):
            self.reads.append(kwargs)
            started = time.perf_counter()
            try:
                return original(**kwargs)
            finally:
                self.count += 1
                self.seconds += time.perf_counter() - started

        engine.load_counters = timed
        try:
            yield self
        finally:
            engine.load_counters = original


def bench_evaluation(market: Market, *, profile: bool = False) -> dict:
    rules = list(Rule.objects.filter(workspace=market.workspace, status=Rule.Status.ACTIVE)
                 .prefetch_related("triggers", "campaigns"))
    now = market.evaluation_now
    span_buckets, counters = _needs(rules, market.workspace.metric_bucket_minutes)
    window_end = floor_to_bucket(now, market.workspace.metric_bucket_minutes)
    window_start = window_end - timedelta(minutes=market.workspace.metric_bucket_minutes * span_buckets)

    def baseline() -> tuple[float, int, int]:
        return plain_aggregate(market.workspace.pk, counters, window_start, window_end)

    started = time.perf_counter()
    refreshed = metric_days_refresh(workspace_ids=[market.workspace.pk], before=now)
    refresh_seconds = time.perf_counter() - started
    baselines = [baseline()]  # also warms the cache for the cycle, as the cycle warms it for the others
    log, reads = QueryLog(), CounterReads()
    profiler = cProfile.Profile() if profile else None
    with connection.execute_wrapper(log), reads.watching():
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        results = evaluate_rules(rule_ids=[r.pk for r in rules], now=now, source=Evaluation.Source.SCHEDULE,
                                 actor=BENCH_ACTOR)
        if profiler:
            profiler.disable()
        cycle = time.perf_counter() - started
    baselines += [baseline() for _ in range(BASELINE_RUNS - 1)]
    baseline_seconds = statistics.median(seconds for seconds, _, _ in baselines)
    _, groups, facts = baselines[0]
    return {
        "rules": len(rules), "rules_evaluated": len(results), "segments": len(market.profiles),
        "scopes": len({scope_key(r) for r in rules}), "span_hours": span_buckets, "facts_in_span": facts,
        "baseline_groups": groups, "cycle_s": cycle, "baseline_s": baseline_seconds,
        "baseline_runs_s": [seconds for seconds, _, _ in baselines],
        "ratio": cycle / baseline_seconds, "per_rule_ms": 1000 * cycle / max(len(rules), 1),
        "queries": log.count, "query_s": log.seconds, "counter_reads": reads.count,
        "counter_read_s": reads.seconds, "rollup_refresh_s": refresh_seconds, "rollup_days": refreshed.days,
        **_rows_read(reads.reads), "outcomes": _outcomes(market), "changes": _changes(market),
        "profile": _top_functions(profiler) if profiler else None,
    }


def plain_aggregate(workspace_id: int, counters: list[str], start, end) -> tuple[float, int, int]:
    """Seconds, groups and facts of one `GROUP BY segment_id` over the span (the baseline)."""
    sums = ", ".join(f"SUM({MetricFact._meta.get_field(name).column})" for name in counters)
    table = MetricFact._meta.db_table
    query = (f"SELECT segment_id, COUNT(*), {sums} FROM {table} "
             "WHERE workspace_id = %s AND bucket_start >= %s AND bucket_start < %s GROUP BY segment_id")
    # Adapted as the ORM would: SQLite compares datetimes as text, in its own format.
    bounds = [connection.ops.adapt_datetimefield_value(moment) for moment in (start, end)]
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(query, [workspace_id, *bounds])
        rows = cursor.fetchall()
    return time.perf_counter() - started, len(rows), sum(row[1] for row in rows)


def _rows_read(reads: list[dict]) -> dict[str, int]:
    """How many fact rows and rollup rows the counter reads covered (as if no day had gone stale
    meanwhile: nothing writes during the cycle here)."""
    facts = rollups = 0
    for read in reads:
        split = split_span(read["grid"], read["offsets"])
        scope = {"workspace_id": read["workspace_id"], "campaign_id__in": list(read["campaign_ids"])}
        if split.fact_ranges:
            facts += MetricFact.objects.filter(reduce(or_, (Q(bucket_start__gte=start, bucket_start__lt=end)
                                                            for start, end in split.fact_ranges)), **scope).count()
        if split.rollups:
            rollups += MetricDay.objects.filter(reduce(or_, (Q(day=day, hour=hour, hours=hours)
                                                             for day, hour, hours in split.rollups)), **scope).count()
    return {"fact_rows_read": facts, "rollup_rows_read": rollups}


def _needs(rules: list[Rule], bucket_minutes: int) -> tuple[int, list[str]]:
    """The longest lookback (in buckets) and the counters the rules' triggers read."""
    triggers = [t for rule in rules for t in rule.triggers.all()]
    span = max(lookback_buckets(t, bucket_minutes) for t in triggers)
    return span, counters_needed([get_metric(t.metric) for t in triggers])


def _outcomes(market: Market) -> dict[str, int]:
    rows = Evaluation.objects.filter(workspace=market.workspace).values_list("outcome").annotate(n=Count("pk"))
    return dict(rows.order_by())


def _changes(market: Market) -> dict[str, int]:
    rows = Change.objects.filter(workspace=market.workspace).values_list("status").annotate(n=Count("pk"))
    return dict(rows.order_by())


def _top_functions(profiler: cProfile.Profile) -> str:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(PROFILE_LINES)
    return out.getvalue()
