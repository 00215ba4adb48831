"""Counters of segments summed over the intervals between the boundaries their triggers need.

A trigger only ever asks for sums over ranges of whole buckets whose ends come from its
settings (window k ends k windows before the end, its baseline starts `baseline` before the
window; see `rules.triggers.window_offsets`). So one SQL query per workspace and call sums the
facts per (segment, interval between two consecutive boundaries) over the longest span any
rule needs: a few dozen intervals instead of every bucket, which keeps the result small
(segments x intervals rows) and the work in the database's hash aggregate. A range is then the
sum of the intervals it covers, for all segments at once.

Ratio metrics judged on their per-bucket values (Welch, X-bar chart) also get, per interval,
the moments of those values: how many buckets had a denominator, the sum of the values and of
their squares; mean and sample variance over any range follow exactly. A bucket's value needs
the bucket's total, so the query sums per row only when a (segment, bucket) has one fact row;
segments with creative- or variant-level rows (several rows per bucket) are read again, summed
per bucket first, in a second query that only they pay for.

The query returns plain numbers (float8 sums), so no row becomes a Decimal in Python.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from django.db import connections, router, transaction

from campaigns.metrics import VIRTUAL_DENOMINATORS, DerivedMetric
from campaigns.models import MetricFact

MINUTES_PER_DAY = 1440
# The aggregate keeps one hash entry per (segment, interval): ~100 MB at 10,000 segments x 30
# intervals. The 4 MB default spills it to a disk sort (a third slower); JIT compilation costs
# more than it saves on a query this short.
POSTGRES_SETTINGS = ("SET LOCAL work_mem = '256MB'", "SET LOCAL jit = off")
# Below this share of the mean square, a variance is rounding noise of sum-of-squares arithmetic:
# equal per-bucket values must keep a variance of exactly 0 (no test on them), as they had before.
RELATIVE_VARIANCE_FLOOR = 1e-12


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
class Intervals:
    """Interval sums of some segments: interval j covers the buckets from `offsets[j+1]` to
    `offsets[j]` buckets before the grid's end (offsets ascending from 0, so intervals run from
    the latest back)."""

    offsets: np.ndarray
    counters: dict[str, np.ndarray]  # name -> (segments, intervals)
    moments: dict[str, np.ndarray]  # metric name -> (3, segments, intervals): count, sum, sum of squares

    def columns(self, newest: int, oldest: int) -> slice:
        """The intervals of the range from `oldest` to `newest` buckets before the end."""
        lo, hi = np.searchsorted(self.offsets, [newest, oldest])
        if hi >= len(self.offsets) or self.offsets[lo] != newest or self.offsets[hi] != oldest:
            raise ValueError(f"[{oldest}, {newest}) buckets before the end is not a range of loaded boundaries")
        return slice(lo, hi)

    def take(self, rows: np.ndarray) -> "Intervals":
        return Intervals(self.offsets, {k: v[rows] for k, v in self.counters.items()},
                         {k: v[:, rows] for k, v in self.moments.items()})


@dataclass(frozen=True)
class MetricSeries:
    """One metric of a scope's segments: numerator and denominator sums, and per-bucket moments,
    over any range of buckets of the grid whose ends are loaded boundaries."""

    metric: DerivedMetric
    grid: BucketGrid
    intervals: Intervals
    daily_budgets: np.ndarray

    @property
    def n_buckets(self) -> int:
        return self.grid.n_buckets

    def sums(self, window: slice) -> tuple[np.ndarray, np.ndarray]:
        """Numerator and denominator summed over buckets [window.start, window.stop) of the grid."""
        columns = self._columns(window)
        return self._sum(self.metric.numerator, columns, window), self._sum(self.metric.denominator, columns, window)

    def bucket_moments(self, window: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, sample variance (ddof=1) and count of the per-bucket values `scale * num / den`
        in the window; a bucket without a denominator carries no value."""
        columns, scale = self._columns(window), self.metric.scale
        if self.metric.denominator in VIRTUAL_DENOMINATORS:
            # Every bucket has the pro-rated budget as denominator, with or without facts.
            per_bucket = self._budget_per_bucket()
            buckets = np.where(per_bucket > 0, window.stop - window.start, 0).astype(float)
            with np.errstate(divide="ignore", invalid="ignore"):
                total = scale * self._sum(self.metric.numerator, columns, window) / per_bucket
                squares = scale**2 * self.intervals.moments[self.metric.name][2][:, columns].sum(axis=1) / per_bucket**2
        else:
            count, total, squares = self.intervals.moments[self.metric.name][:, :, columns].sum(axis=2)
            buckets, total, squares = count, scale * total, scale**2 * squares
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(buckets > 0, total / buckets, np.nan)
            spread = squares - buckets * mean**2
            spread = np.where(spread > RELATIVE_VARIANCE_FLOOR * squares, spread, 0.0)
            variance = np.where(buckets > 1, spread / (buckets - 1), np.nan)
        return mean, variance, buckets

    def _columns(self, window: slice) -> slice:
        n = self.grid.n_buckets
        return self.intervals.columns(n - window.stop, n - window.start)

    def _sum(self, name: str, columns: slice, window: slice) -> np.ndarray:
        if name == "budget":
            # The daily budget pro-rated over the window's buckets: what spend pace is measured against.
            return self._budget_per_bucket() * (window.stop - window.start)
        return self.intervals.counters[name][:, columns].sum(axis=1)

    def _budget_per_bucket(self) -> np.ndarray:
        return self.daily_budgets * self.grid.bucket_minutes / MINUTES_PER_DAY


@dataclass(frozen=True)
class ScopeCounters:
    """The interval sums of some segments, on a grid ending at the current window's end."""

    segment_ids: np.ndarray
    grid: BucketGrid
    intervals: Intervals
    daily_budgets: np.ndarray

    def series(self, metric: DerivedMetric) -> MetricSeries:
        return MetricSeries(metric, self.grid, self.intervals, self.daily_budgets)

    def select(self, segment_ids: list[int], n_buckets: int) -> "ScopeCounters":
        """These segments (all loaded here), on the grid's last `n_buckets`."""
        rows = pd.Index(self.segment_ids).get_indexer(np.asarray(segment_ids, dtype=np.int64))
        return ScopeCounters(self.segment_ids[rows], BucketGrid(self.grid.end, self.grid.bucket_minutes, n_buckets),
                             self.intervals.take(rows), self.daily_budgets[rows])


def counters_needed(metrics: Iterable[DerivedMetric]) -> list[str]:
    names = {name for m in metrics for name in (m.numerator, m.denominator)}
    return sorted(names - VIRTUAL_DENOMINATORS)


def load_counters(*, workspace_id: int, campaign_ids: Iterable[int], segment_ids: list[int],
                  daily_budgets: list[float], counters: list[str], moments: list[DerivedMetric],
                  grid: BucketGrid, offsets: Iterable[int]) -> ScopeCounters:
    """Sum the facts of `segment_ids` per interval between `offsets` (buckets before the grid's
    end) over the grid, with the per-bucket moments of the `moments` ratio metrics, in one query.

    The query is bounded by the workspace and the segments' campaigns (far fewer values than
    the segments); facts of other segments of those campaigns are dropped here.
    """
    ids = np.asarray(segment_ids, dtype=np.int64)
    budgets = np.asarray(daily_budgets, dtype=float)
    bounds = np.asarray(sorted({o for o in offsets if 0 < o < grid.n_buckets} | {0, grid.n_buckets}), dtype=np.int64)
    query = _IntervalQuery(grid, bounds, counters, moments)
    shape = (len(ids), len(bounds) - 1)
    intervals = Intervals(bounds, {name: np.zeros(shape) for name in counters},
                          {m.name: np.zeros((3, *shape)) for m in moments})
    if len(ids) and grid.n_buckets:
        using = router.db_for_read(MetricFact)
        where = (workspace_id, sorted(set(campaign_ids)))
        table = query.run(using, *where)
        several = query.fill(intervals, ids, table)
        if len(several):
            # Per-bucket values need each bucket's total: these segments had several rows in a bucket.
            query.fill(intervals, ids, query.run(using, *where, per_bucket_of=several.tolist()))
    return ScopeCounters(ids, grid, intervals, budgets)


class _IntervalQuery:
    """The SQL of the interval read, and the filling of the arrays from its rows."""

    def __init__(self, grid: BucketGrid, bounds: np.ndarray, counters: list[str], moments: list[DerivedMetric]):
        self.grid, self.bounds, self.counters, self.moments = grid, bounds, counters, moments

    def run(self, using: str, workspace_id: int, campaign_ids: list[int], *,
            per_bucket_of: list[int] | None = None) -> np.ndarray:
        connection = connections[using]
        fields = {f.name: f.column for f in MetricFact._meta.concrete_fields}
        stored = sorted({*self.counters, *(name for m in self.moments for name in (m.numerator, m.denominator))}
                        - VIRTUAL_DENOMINATORS)
        values = [self.grid.end - timedelta(minutes=self.grid.bucket_minutes * int(o)) for o in self.bounds]
        start, end, interior = values[-1], values[0], values[-2:0:-1]  # interior boundaries, oldest first
        adapt = connection.ops.adapt_datetimefield_value
        where = ("workspace_id = %s AND campaign_id IN ({}) AND bucket_start >= %s AND bucket_start < %s"
                 .format(", ".join(["%s"] * len(campaign_ids))))
        params = [workspace_id, *campaign_ids, adapt(start), adapt(end)]
        table = MetricFact._meta.db_table
        if per_bucket_of is None:
            source = f"{table} WHERE {where}"
            columns = {name: fields[name] for name in stored}
            several = "SUM(CASE WHEN creative_key <> 0 OR variant <> '' THEN 1 ELSE 0 END)" if self.moments else "0"
        else:
            sums = ", ".join(f"SUM({fields[name]}) AS {name}" for name in stored)
            source = (f"(SELECT segment_id, bucket_start, {sums} FROM {table} WHERE {where} AND segment_id IN "
                      f"({', '.join(['%s'] * len(per_bucket_of))}) GROUP BY segment_id, bucket_start) AS f")
            params += per_bucket_of
            columns, several = {name: name for name in stored}, "0"
        if connection.vendor == "postgresql" and interior:
            interval = "width_bucket(bucket_start, %s::timestamptz[])"
            interval_params = [list(interior)]
        else:  # the same numbering portably: how many interior boundaries are <= bucket_start
            interval = " + ".join("(bucket_start >= %s)" for _ in interior) or "0"
            interval_params = [adapt(v) for v in interior]
        select = [f"SUM(CAST({columns[name]} AS DOUBLE PRECISION))" for name in self.counters]
        for m in self.moments:
            num, den = (f"CAST({columns[m.numerator]} AS DOUBLE PRECISION)",
                        f"CAST({columns[m.denominator]} AS DOUBLE PRECISION)" if m.denominator in columns else None)
            if den is None:  # a virtual denominator: only the numerator's squares are needed
                select += ["0", "0", f"SUM({num} * {num})"]
            else:
                ratio = f"{num} / NULLIF({den}, 0)"
                select += [f"COUNT(NULLIF({columns[m.denominator]}, 0))", f"SUM({ratio})", f"SUM({ratio} * {ratio})"]
        # One integer key per (segment, interval): hashing one column is cheaper than two.
        key = f"CAST(segment_id AS BIGINT) * {len(self.bounds) - 1} + {interval}"
        sql = f"SELECT {key}, {several}, {', '.join(select)} FROM {source} GROUP BY 1"
        width = 2 + len(select)
        with transaction.atomic(using=using), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                for setting in POSTGRES_SETTINGS:
                    cursor.execute(setting)
            cursor.execute(sql, [*interval_params, *params])
            rows = cursor.fetchall()
        # NULL sums (no row had a value) count as 0, like a bucket without facts.
        return np.array(rows, dtype=float).reshape(-1, width) if rows else np.zeros((0, width))

    def fill(self, intervals: Intervals, ids: np.ndarray, table: np.ndarray) -> np.ndarray:
        """Write the rows into the arrays (interval columns run from the latest back); the ids of
        segments that had several rows in a bucket."""
        table = np.nan_to_num(table)
        segment, interval = np.divmod(table[:, 0].astype(np.int64), len(self.bounds) - 1)
        row = pd.Index(ids).get_indexer(segment)
        keep = row >= 0  # another segment of the same campaigns, or one that left the scope meanwhile
        row, interval, table = row[keep], interval[keep], table[keep]
        col = len(self.bounds) - 2 - interval  # the query numbers intervals from the oldest
        for k, name in enumerate(self.counters):
            intervals.counters[name][row, col] = table[:, 2 + k]
        first = 2 + len(self.counters)
        for k, m in enumerate(self.moments):
            intervals.moments[m.name][:, row, col] = table[:, first + 3 * k:first + 3 * k + 3].T
        return np.unique(ids[row[table[:, 1] > 0]])
