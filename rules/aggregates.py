"""Counters of segments, per metric bucket, as dense numpy arrays.

One SQL query per (workspace, span) sums the metric facts grouped by (segment, bucket) for
every segment an evaluation needs, over the longest span its rules need (their current
windows, earlier windows and baselines together); each rule scope then takes its rows and
its last buckets from those arrays (`ScopeCounters.select`), so overlapping scopes never
read the same facts twice. Everything after that is array arithmetic over all segments at once.

The query returns plain numbers: the bucket as integer epoch seconds and every sum as a
float, so no row is turned into a datetime or a Decimal in Python.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain

import numpy as np
import pandas as pd
from django.db import connections
from django.db.models import BigIntegerField, FloatField, Func, Sum
from django.db.models.functions import Cast

from campaigns.metrics import VIRTUAL_DENOMINATORS, DerivedMetric
from campaigns.models import MetricFact

MINUTES_PER_DAY = 1440
CHUNK_ROWS = 50_000


def floor_to_bucket(moment: datetime, bucket_minutes: int) -> datetime:
    """The start of the bucket holding `moment`; buckets are aligned on UTC epoch minutes (see ingestion)."""
    seconds = bucket_minutes * 60
    return datetime.fromtimestamp(int(moment.timestamp()) // seconds * seconds, tz=UTC)


@dataclass(frozen=True)
class BucketGrid:
    """`n_buckets` whole buckets ending (exclusive) at `end`."""

    end: datetime
    bucket_minutes: int
    n_buckets: int

    @property
    def start(self) -> datetime:
        return self.end - timedelta(minutes=self.bucket_minutes * self.n_buckets)

    def bucket_start(self, index: int) -> datetime:
        return self.start + timedelta(minutes=self.bucket_minutes * index)


@dataclass(frozen=True)
class MetricSeries:
    """Numerator and denominator of one metric, shape (segments, buckets)."""

    metric: DerivedMetric
    numerator: np.ndarray
    denominator: np.ndarray


@dataclass(frozen=True)
class ScopeCounters:
    """The summed counters of some segments over a grid of buckets."""

    segment_ids: np.ndarray
    grid: BucketGrid
    counters: dict[str, np.ndarray]
    daily_budgets: np.ndarray

    def series(self, metric: DerivedMetric) -> MetricSeries:
        return MetricSeries(metric, self._counter(metric.numerator), self._counter(metric.denominator))

    def select(self, segment_ids: list[int], n_buckets: int, counters: Iterable[str]) -> "ScopeCounters":
        """These counters of these segments (all loaded here) over the last `n_buckets` of the grid."""
        rows = pd.Index(self.segment_ids).get_indexer(np.asarray(segment_ids, dtype=np.int64))
        first = self.grid.n_buckets - n_buckets
        return ScopeCounters(
            self.segment_ids[rows], BucketGrid(self.grid.end, self.grid.bucket_minutes, n_buckets),
            {name: self.counters[name][rows, first:] for name in counters}, self.daily_budgets[rows],
        )

    def _counter(self, name: str) -> np.ndarray:
        if name == "budget":
            # The daily budget pro-rated over each bucket: what spend pace is measured against.
            per_bucket = self.daily_budgets * self.grid.bucket_minutes / MINUTES_PER_DAY
            return np.broadcast_to(per_bucket[:, None], (len(self.segment_ids), self.grid.n_buckets))
        return self.counters[name]


def counters_needed(metrics: Iterable[DerivedMetric]) -> list[str]:
    names = {name for m in metrics for name in (m.numerator, m.denominator)}
    return sorted(names - VIRTUAL_DENOMINATORS)


class EpochSeconds(Func):
    """Integer seconds since the UNIX epoch of a (UTC) datetime column, on PostgreSQL and SQLite."""

    output_field = BigIntegerField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template="CAST(EXTRACT(EPOCH FROM %(expressions)s) AS BIGINT)",
                           **extra_context)

    def as_sqlite(self, compiler, connection, **extra_context):
        # SQLite keeps datetimes as UTC text; unixepoch() needs SQLite 3.38.
        return self.as_sql(compiler, connection, template="unixepoch(%(expressions)s)", **extra_context)


def load_counters(*, campaign_ids: Iterable[int], segment_ids: list[int], daily_budgets: list[float],
                  counters: list[str], grid: BucketGrid) -> ScopeCounters:
    """Sum the facts of `segment_ids` over `grid`, in one query.

    The query is bounded by the segments' campaigns (an index, and far fewer values than the
    segments); facts of other segments of those campaigns are dropped here.
    """
    ids = np.asarray(segment_ids, dtype=np.int64)
    shape = (len(ids), grid.n_buckets)
    arrays = {name: np.zeros(shape) for name in counters}
    if not len(ids) or not grid.n_buckets:
        return ScopeCounters(ids, grid, arrays, np.asarray(daily_budgets, dtype=float))
    query = (
        MetricFact.objects.filter(
            campaign_id__in=sorted(set(campaign_ids)), bucket_start__gte=grid.start, bucket_start__lt=grid.end
        )
        .order_by()
        .annotate(epoch=EpochSeconds("bucket_start"))
        .values("segment_id", "epoch")
        .annotate(**{f"total_{name}": Cast(Sum(name), FloatField()) for name in counters})
        .values_list("segment_id", "epoch", *(f"total_{name}" for name in counters))
    )
    # Straight from the cursor: every column is already a plain number, so the ORM's per-row
    # converters would only cost time (hundreds of thousands of rows).
    sql, params = query.query.get_compiler(using=query.db).as_sql()
    width = 2 + len(counters)
    chunks = []
    with connections[query.db].cursor() as cursor:
        cursor.execute(sql, params)
        # In chunks: millions of rows as Python tuples at once would take gigabytes.
        while rows := cursor.fetchmany(CHUNK_ROWS):
            chunks.append(np.fromiter(chain.from_iterable(rows), dtype=float, count=len(rows) * width))
    if chunks:
        table = np.concatenate(chunks).reshape(-1, width)
        row = pd.Index(ids).get_indexer(table[:, 0].astype(np.int64))
        start = int(grid.start.timestamp())
        col = (table[:, 1].astype(np.int64) - start) // (grid.bucket_minutes * 60)
        keep = row >= 0  # another segment of the same campaigns, or one that left the scope meanwhile
        for k, name in enumerate(counters):
            # (segment, bucket) pairs are unique in the result: plain assignment, no accumulation.
            arrays[name][row[keep], col[keep]] = table[keep, 2 + k]
    return ScopeCounters(ids, grid, arrays, np.asarray(daily_budgets, dtype=float))
