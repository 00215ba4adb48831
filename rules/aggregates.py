"""Counters of segments summed over the intervals between the boundaries their triggers need.

A trigger only ever asks for sums over ranges of whole buckets whose ends come from its
settings (window k ends k windows before the end, its baseline starts `baseline` before the
window; see `rules.triggers.window_offsets`). So one read per workspace and call sums the facts
per (segment, interval between two consecutive boundaries) over the longest span any rule
needs: a few dozen intervals instead of every bucket, which keeps the result small (segments x
intervals). A range is then the sum of the intervals it covers, for all segments at once.

Ratio metrics judged on their per-bucket values (Welch, X-bar chart) also get, per interval,
the moments of those values: how many buckets had a denominator, the sum of the values and of
their squares; mean and sample variance over any range follow exactly. A bucket's value is the
ratio of the bucket's totals (creative- and variant-level rows add up first).

Most of a span is past days that no longer change: their daily rollups (`campaigns.rollups`,
per whole UTC day, per quarter and per 2-hour block of it) stand for their facts wherever no
boundary cuts them and their day is not stale (written to since its rollup was built). The read is one
statement, so one snapshot (SQLite: one transaction), of two parts: the rollups, summed per
(segment, interval) by the database; and the facts of the rest of the span and of the stale
days, sent row by row (grouping them into hundreds of thousands of small intervals cost the
database more than sending them) and summed here, per bucket first. Either way the sums are
those of the facts: a day not rolled up yet, or written to since, is read from its facts.
On PostgreSQL the rows come as one bytea of float8 values per part, never as Python tuples.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
from django.db import connections, router, transaction

from campaigns.metrics import VIRTUAL_DENOMINATORS, DerivedMetric
from campaigns.models import MetricDay, MetricFact, StaleMetricDay, moment_columns
from campaigns.rollups import day_start, part_hours

MINUTES_PER_DAY = 1440
# Summing the rollups keeps one hash entry per (segment, interval); JIT compilation costs more
# than it saves on a query this short.
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

    def take(self, rows: np.ndarray, counters: Iterable[str], moments: Iterable[str]) -> "Intervals":
        """These rows of these counters and metrics' moments (copied: a scope's rules need only a few;
        `np.take` copies rows several times faster than indexing with an array)."""
        return Intervals(self.offsets, {k: np.take(self.counters[k], rows, axis=0) for k in counters},
                         {k: np.take(self.moments[k], rows, axis=1) for k in moments})


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
        if name in VIRTUAL_DENOMINATORS:
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

    def select(self, rows: np.ndarray, n_buckets: int, metrics: Iterable[DerivedMetric]) -> "ScopeCounters":
        """The segments at these positions of `segment_ids`, on the grid's last `n_buckets`, with
        what the series of these metrics need."""
        metrics = list(metrics)
        intervals = self.intervals.take(rows, counters_needed(metrics),
                                        [m.name for m in metrics if m.name in self.intervals.moments])
        return ScopeCounters(self.segment_ids[rows], BucketGrid(self.grid.end, self.grid.bucket_minutes, n_buckets),
                             intervals, self.daily_budgets[rows])


def counters_needed(metrics: Iterable[DerivedMetric]) -> list[str]:
    names = {name for m in metrics for name in (m.numerator, m.denominator)}
    return sorted(names - VIRTUAL_DENOMINATORS)


def load_counters(*, workspace_id: int, campaign_ids: Iterable[int], segment_ids: list[int],
                  daily_budgets: list[float], counters: list[str], moments: list[DerivedMetric],
                  grid: BucketGrid, offsets: Iterable[int]) -> ScopeCounters:
    """Sum the facts of `segment_ids` per interval between `offsets` (buckets before the grid's
    end) over the grid, with the per-bucket moments of the `moments` ratio metrics, in one read.

    The query is bounded by the workspace and the segments' campaigns (far fewer values than
    the segments); facts of other segments of those campaigns are dropped here.
    """
    ids = np.asarray(segment_ids, dtype=np.int64)
    budgets = np.asarray(daily_budgets, dtype=float)
    bounds = np.asarray(sorted({o for o in offsets if 0 < o < grid.n_buckets} | {0, grid.n_buckets}), dtype=np.int64)
    shape = (len(ids), len(bounds) - 1)
    intervals = Intervals(bounds, {name: np.zeros(shape) for name in counters},
                          {m.name: np.zeros((3, *shape)) for m in moments})
    if len(ids) and grid.n_buckets:
        read = _IntervalRead(grid, bounds, counters, moments)
        facts, rollups = read.run(router.db_for_read(MetricFact), workspace_id, sorted(set(campaign_ids)))
        segments = pd.Index(ids)
        read.add_facts(intervals, segments, *facts)
        read.add_rollups(intervals, segments, *rollups)
    return ScopeCounters(ids, grid, intervals, budgets)


@dataclass(frozen=True)
class SpanSplit:
    """Where the read takes each part of a grid from: the parts of UTC days (MetricDay rows) that
    lie wholly inside one interval from their rollups while their day is not stale, the rest of
    the span from the facts."""

    rollups: list[tuple[date, int, int]]  # (day, first hour, hours)
    fact_ranges: list[tuple[datetime, datetime]]  # [start, end), ascending


def split_span(grid: BucketGrid, offsets: Iterable[int]) -> SpanSplit:
    """Split the grid's span at `offsets` (the ends of its intervals, in buckets before its end) into
    rollups and fact ranges: the longest parts of each complete day (`day_parts`: the day, else its
    quarters, else their 2-hour blocks) that no interval end cuts and that start in the grid."""
    interior = sorted(grid.end - timedelta(minutes=grid.bucket_minutes * int(o)) for o in offsets
                      if 0 < o < grid.n_buckets)
    lengths = part_hours(grid.bucket_minutes)
    rollups, covered = [], []

    def cover(day: date, hour: int, level: int) -> None:
        hours = lengths[level]
        start, end = _span(day, hour, hours)
        if start >= grid.start and not any(start < moment < end for moment in interior):
            rollups.append((day, hour, hours))
            covered.append((start, end))
        elif level + 1 < len(lengths) and end > grid.start:
            for part in range(hour, hour + hours, lengths[level + 1]):
                cover(day, part, level + 1)

    day = grid.start.astimezone(UTC).date()
    while lengths and day_start(day + timedelta(days=1)) <= grid.end:
        cover(day, 0, 0)
        day += timedelta(days=1)
    ranges, at = [], grid.start
    for start, end in [*covered, (grid.end, grid.end)]:  # ascending: parts are covered in order
        if at < start:
            ranges.append((at, start))
        at = end
    return SpanSplit(rollups, ranges)


class _IntervalRead:
    """The interval read: its SQL, and the arrays filled from its rows.

    The facts come as rows (one per fact, not grouped: grouping hundreds of thousands of small
    intervals cost the database more than sending the rows) and are summed here, per bucket
    first, since a ratio's per-bucket value is the ratio of the bucket's totals (creative- and
    variant-level rows add up). The rollups come summed per (segment, interval) by the database.
    """

    def __init__(self, grid: BucketGrid, bounds: np.ndarray, counters: list[str], moments: list[DerivedMetric]):
        self.grid, self.bounds, self.counters, self.moments = grid, bounds, counters, moments
        self.boundaries = [grid.end - timedelta(minutes=grid.bucket_minutes * int(o)) for o in bounds]  # latest first
        self.split = split_span(grid, bounds)
        self.stored = sorted({*counters, *(name for m in moments for name in (m.numerator, m.denominator))}
                             - VIRTUAL_DENOMINATORS)
        n = grid.n_buckets  # bucket b (from the grid's start) ends n - b - 1 buckets before the end
        self.bucket_columns = np.searchsorted(bounds, n - 1 - np.arange(n), side="right") - 1
        self.n_intervals = len(bounds) - 1

    def run(self, using: str, workspace_id: int, campaign_ids: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The fact rows, and the rollups' sums per (segment, interval): each as integer keys and
        a table of floats (counters; for rollups, then 3 moments per metric)."""
        connection = connections[using]
        sql = _ReadSql(connection, self, workspace_id, campaign_ids)
        parts = [(*sql.fact_rows(), 1 + len(self.stored))]
        rollups_width = 1 + len(self.counters) + 3 * len(self.moments)
        if self.split.rollups:
            parts.append((*sql.rollup_sums(), rollups_width))
        with transaction.atomic(using=using), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                for setting in POSTGRES_SETTINGS:
                    cursor.execute(setting)
                cursor.execute(*_as_binary(parts))
                read = _from_binary(cursor.fetchone(), [width for _, _, width in parts])
            else:  # one transaction: SQLite reads both statements from the same snapshot
                read = [_from_rows(cursor, *part) for part in parts]
        return read if len(read) == 2 else [*read, _no_rows(rollups_width)]

    def add_facts(self, intervals: Intervals, segments: pd.Index, keys: np.ndarray, values: np.ndarray) -> None:
        keys, rows_of = np.unique(keys, return_inverse=True)  # a (segment, bucket) may hold several rows
        totals = {name: np.bincount(rows_of, weights=values[:, k], minlength=len(keys))
                  for k, name in enumerate(self.stored)}
        segment, bucket = np.divmod(keys, self.grid.n_buckets)
        add = self._adder(segments, segment, self.bucket_columns[bucket])
        for name in self.counters:
            add(intervals.counters[name], totals[name])
        for m in self.moments:
            count, total, squares = intervals.moments[m.name]
            numerator = totals[m.numerator]
            if m.denominator in VIRTUAL_DENOMINATORS:  # only the numerator's squares are needed
                add(squares, numerator * numerator)
                continue
            denominator = totals[m.denominator]
            valued = denominator != 0
            value = np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=valued)
            add(count, valued.astype(float))
            add(total, value)
            add(squares, value * value)

    def add_rollups(self, intervals: Intervals, segments: pd.Index, keys: np.ndarray, values: np.ndarray) -> None:
        segment, interval = np.divmod(keys, self.n_intervals)
        add = self._adder(segments, segment, self.n_intervals - 1 - interval)  # columns run from the latest back
        for k, name in enumerate(self.counters):
            add(intervals.counters[name], values[:, k])
        first = len(self.counters)
        for k, m in enumerate(self.moments):
            for j, array in enumerate(intervals.moments[m.name]):
                add(array, values[:, first + 3 * k + j])

    def _adder(self, segments: pd.Index, segment: np.ndarray, column: np.ndarray):
        """add(array, values): add each value into its (segment, interval column) cell of the array."""
        row = segments.get_indexer(segment)
        keep = row >= 0  # another segment of the same campaigns, or one that left the scope meanwhile
        cells = row[keep] * self.n_intervals + column[keep]
        size = len(segments) * self.n_intervals

        def add(array: np.ndarray, values: np.ndarray) -> None:
            array += np.bincount(cells, weights=values[keep], minlength=size).reshape(array.shape)

        return add


class _ReadSql:
    """The statements of an `_IntervalRead`, with their parameters, for one database vendor."""

    def __init__(self, connection, read: _IntervalRead, workspace_id: int, campaign_ids: list[int]):
        self.connection, self.read, self.workspace_id = connection, read, workspace_id
        self.postgres = connection.vendor == "postgresql"
        if self.postgres:  # one array parameter: the campaigns are repeated in every branch
            self.scope = ("{t}.workspace_id = %s AND {t}.campaign_id = ANY(%s)", [workspace_id, list(campaign_ids)])
        else:
            self.scope = (f"{{t}}.workspace_id = %s AND {{t}}.campaign_id IN ({', '.join(['%s'] * len(campaign_ids))})",
                          [workspace_id, *campaign_ids])

    def fact_rows(self) -> tuple[str, list]:
        """Per fact of the fact ranges, and of the rollup parts of days that are stale: the key of its
        (segment, bucket), and its stored counters."""
        select = ", ".join([self._bucket_key(), *(f"CAST(f.{name} AS DOUBLE PRECISION)" for name in self.read.stored)])
        branches = []
        if self.read.split.fact_ranges:
            branches.append(self._facts_between(select, self.read.split.fact_ranges))
        by_day: dict[date, list[tuple[datetime, datetime]]] = {}
        for day, hour, hours in self.read.split.rollups:
            by_day.setdefault(day, []).append(_span(day, hour, hours))
        for day, spans in by_day.items():
            # A branch per day, read only if the day is stale: the condition holds for the whole
            # branch, so the database checks it once and skips the scan otherwise.
            sql, params = self._facts_between(select, spans)
            branches.append((f"{sql} AND EXISTS (SELECT 1 FROM {StaleMetricDay._meta.db_table} AS s "
                             "WHERE s.workspace_id = %s AND s.day = %s)",
                             params + [self.workspace_id, self.connection.ops.adapt_datefield_value(day)]))
        return " UNION ALL ".join(sql for sql, _ in branches), [p for _, params in branches for p in params]

    def rollup_sums(self) -> tuple[str, list]:
        """Per (segment, interval numbered from the oldest): the sums of the rollup parts of days
        that are not stale."""
        table, stale = MetricDay._meta.db_table, StaleMetricDay._meta.db_table
        select = [f"SUM(r.{name})" for name in self.read.counters]
        for m in self.read.moments:
            names = moment_columns(m)
            select += ["0", "0"] if names.buckets is None else [f"SUM(r.{names.buckets})", f"SUM(r.{names.total})"]
            select.append(f"SUM(r.{names.squares})")
        start = ("(CAST(r.day AS timestamp) + r.hour * INTERVAL '1 hour') AT TIME ZONE 'UTC'" if self.postgres
                 else "datetime(r.day, '+' || r.hour || ' hours')")
        interval, interval_params = self._interval(start)
        scope, scope_params = self.scope[0].format(t="r"), self.scope[1]
        rollups = self.read.split.rollups
        parts = " OR ".join(["(r.day = %s AND r.hour = %s AND r.hours = %s)"] * len(rollups))
        part_params = [v for day, hour, hours in rollups
                       for v in (self.connection.ops.adapt_datefield_value(day), hour, hours)]
        return (
            f"SELECT CAST(r.segment_id AS BIGINT) * {self.read.n_intervals} + {interval}, {', '.join(select)} "
            f"FROM {table} AS r WHERE {scope} AND ({parts}) "
            f"AND r.day NOT IN (SELECT s.day FROM {stale} AS s WHERE s.workspace_id = %s) GROUP BY 1",
            interval_params + scope_params + part_params + [self.workspace_id],
        )

    def _facts_between(self, select: str, spans: list[tuple[datetime, datetime]]) -> tuple[str, list]:
        adapt = self.connection.ops.adapt_datetimefield_value
        between = " OR ".join(["(f.bucket_start >= %s AND f.bucket_start < %s)"] * len(spans))
        return (f"SELECT {select} FROM {MetricFact._meta.db_table} AS f WHERE {self.scope[0].format(t='f')} "
                f"AND ({between})", self.scope[1] + [adapt(moment) for span in spans for moment in span])

    def _interval(self, moment: str) -> tuple[str, list]:
        """The number of the interval holding `moment`, from the oldest (0)."""
        interior = self.read.boundaries[-2:0:-1]  # oldest first
        if self.postgres and interior:
            return f"width_bucket({moment}, %s::timestamptz[])", [interior]
        # The same numbering portably: how many interior boundaries are <= the moment.
        adapt = self.connection.ops.adapt_datetimefield_value
        return " + ".join(f"({moment} >= %s)" for _ in interior) or "0", [adapt(v) for v in interior]

    def _bucket_key(self) -> str:
        """One integer per (segment, bucket of the grid)."""
        start, seconds = int(self.read.grid.start.timestamp()), 60 * self.read.grid.bucket_minutes
        epoch = ("date_part('epoch', f.bucket_start)" if self.postgres
                 else "CAST(strftime('%%s', f.bucket_start) AS INTEGER)")
        return (f"CAST(f.segment_id AS BIGINT) * {self.read.grid.n_buckets} "
                f"+ CAST(({epoch} - {start}) / {seconds} AS BIGINT)")


def _span(day: date, hour: int, hours: int) -> tuple[datetime, datetime]:
    start = day_start(day) + timedelta(hours=hour)
    return start, start + timedelta(hours=hours)


def _as_binary(parts: list[tuple[str, list, int]]) -> tuple[str, list]:
    """PostgreSQL: one statement (one snapshot) returning each part's rows as one bytea of big-endian
    float8 values, row after row, instead of a Python tuple per row: turning 500,000 rows into
    floats cost more than the query. Keys stay exact as floats (below 2**53)."""
    selects = []
    for index, (sql, _, width) in enumerate(parts):
        names = [f"c{i}" for i in range(width)]
        row = " || ".join(f"float8send(CAST({c} AS DOUBLE PRECISION))" for c in names)
        selects.append(f"(SELECT string_agg({row}, '') FROM ({sql}) AS t ({', '.join(names)})) AS p{index}")
    return f"SELECT * FROM {', '.join(selects)}", [p for _, params, _ in parts for p in params]


def _from_binary(row: tuple, widths: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    parts = []
    for rows, width in zip(row, widths, strict=True):
        table = np.frombuffer(rows, dtype=">f8").reshape(-1, width).astype(float) if rows else np.zeros((0, width))
        parts.append((table[:, 0].astype(np.int64), table[:, 1:]))
    return parts


def _no_rows(width: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=np.int64), np.zeros((0, width - 1))


def _from_rows(cursor, sql: str, params: list, width: int) -> tuple[np.ndarray, np.ndarray]:
    cursor.execute(sql, params)
    rows = cursor.fetchall()
    # NULL sums (no row had a value) count as 0, like a bucket without facts.
    table = np.nan_to_num(np.array(rows, dtype=float).reshape(-1, width)) if rows else np.zeros((0, width))
    return table[:, 0].astype(np.int64), table[:, 1:]
