"""Daily rollups of the metric facts: which days are stale, and rebuilding them.

The engine sums weeks of facts per segment at every cycle, yet past days rarely change.
`MetricDay` keeps the sums of each (segment, UTC day), of each quarter of it and of each
2-hour block (`PART_HOURS`), with the
moments of the ratio metrics' per-bucket values; `StaleMetricDay` names the days whose facts
changed since their rollups were built (database triggers mark them on every insert, update and
delete of a fact: see migration 0004). `metric_days_refresh` rebuilds the stale days that are
over, run by a beat task every 15 minutes (`rules.tasks.refresh_metric_days`), never by an
evaluation: a back-dated write (late conversions) would otherwise hold up the next cycle by a
day's refresh, seconds at scale. The engine (`rules.aggregates`) reads a day from its rollups
only while it is not stale, from the facts otherwise, so its read is exact whether a refresh
ran or not.

Refreshing is housekeeping, not anyone's action: it changes no figure a user sees (the engine
reads the same sums either way), so it records no audit event.
"""

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction

from accounts.models import Workspace

from .metrics import VIRTUAL_DENOMINATORS
from .models import COUNTER_FIELDS, MONEY_FIELDS, ROLLUP_RATIOS, MetricDay, MetricFact, StaleMetricDay, moment_columns

logger = logging.getLogger(__name__)

# A day's facts are summed per bucket in one hash table (240,000 buckets at 10,000 segments):
# the 4 MB default spills it to disk; JIT compilation costs more than it saves here. A refresh
# lost in a crash leaves its day stale, to be rebuilt again: it need not wait for its commit to
# reach the disk.
POSTGRES_SETTINGS = ("SET LOCAL work_mem = '256MB'", "SET LOCAL jit = off", "SET LOCAL synchronous_commit = off")

# The lengths of the parts of a day that are rolled up, each dividing the one before: a rule's
# boundaries cut few days, and mostly in a few hours before the evaluation's hour, so a cut day is
# read from the largest parts no boundary cuts (2-hour blocks read 3x fewer fact rows than quarters).
PART_HOURS = (24, 6, 2)
ROLLUP_COUNTERS = (*COUNTER_FIELDS, *MONEY_FIELDS)


@dataclass(frozen=True)
class RollupsRefreshed:
    days: int  # (workspace, day) rebuilt
    rows: int  # MetricDay rows written


def part_hours(bucket_minutes: int) -> tuple[int, ...]:
    """The lengths (hours, longest first) of the parts of a day that MetricDay rows sum: those of
    `PART_HOURS` that whole buckets tile; none when buckets do not tile a day (a bucket across
    midnight would belong to two days: such workspaces keep no rollups)."""
    return tuple(hours for hours in PART_HOURS if (hours * 60) % bucket_minutes == 0)


def day_parts(bucket_minutes: int) -> list[tuple[int, int]]:
    """The parts of a day that MetricDay rows sum, as (first hour, hours), longest first."""
    return [(hour, hours) for hours in part_hours(bucket_minutes) for hour in range(0, 24, hours)]


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def metric_days_refresh(*, workspace_ids: Iterable[int], before: datetime,
                        since: datetime | None = None) -> RollupsRefreshed:
    """Rebuild the rollups of the stale days of these workspaces that were over by `before`
    (and, given `since`, ended after it), each day in its own transaction."""
    started = time.perf_counter()
    days = rows = 0
    for workspace_id, day, lengths in _stale_days(workspace_ids, before=before, since=since):
        written = _refresh_day(workspace_id, day, lengths)
        if written is not None:
            days, rows = days + 1, rows + written
    if days:
        logger.info("Rolled up %s stale day(s) of metric facts into %s rows in %.1f s", days, rows,
                    time.perf_counter() - started)
    return RollupsRefreshed(days, rows)


def _stale_days(workspace_ids: Iterable[int], *, before: datetime,
                since: datetime | None) -> list[tuple[int, date, tuple[int, ...]]]:
    """(workspace, day, lengths of its parts) of the stale days to rebuild."""
    lengths = {pk: part_hours(minutes) for pk, minutes in Workspace.objects
               .filter(pk__in=list(workspace_ids)).values_list("pk", "metric_bucket_minutes") if part_hours(minutes)}
    stale = StaleMetricDay.objects.filter(workspace_id__in=list(lengths),
                                          day__lte=(before - timedelta(days=1)).astimezone(UTC).date())
    if since is not None:
        stale = stale.filter(day__gte=since.astimezone(UTC).date())
    days = stale.order_by("workspace_id", "day").values_list("workspace_id", "day")
    return [(pk, day, lengths[pk]) for pk, day in days]


def _refresh_day(workspace_id: int, day: date, lengths: tuple[int, ...]) -> int | None:
    """The rows written, or None when the day was not stale any more or is busy."""
    with transaction.atomic():
        # A locked mark is being refreshed by another worker, or raised by a write not committed
        # yet: skip it rather than wait; the day stays stale, and is read from the facts meanwhile.
        version = (StaleMetricDay.objects.select_for_update(skip_locked=True)
                   .filter(workspace_id=workspace_id, day=day).values_list("version", flat=True).first())
        if version is None:
            return None
        MetricDay.objects.filter(workspace_id=workspace_id, day=day).delete()
        ops = connection.ops
        span = [ops.adapt_datetimefield_value(day_start(day + timedelta(days=n))) for n in (0, 1)]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                for setting in POSTGRES_SETTINGS:
                    cursor.execute(setting)
            cursor.execute(_rollup_statement(connection.vendor, lengths),
                           [workspace_id, *span, *[workspace_id, ops.adapt_datefield_value(day)] * len(lengths)])
            written = cursor.rowcount
        # Only the version read: the lock keeps writers of the day waiting until this commits (their
        # mark comes back then), and a mark that changed anyway keeps the day stale.
        StaleMetricDay.objects.filter(workspace_id=workspace_id, day=day, version=version).delete()
    return written


def _rollup_statement(vendor: str, lengths: tuple[int, ...]) -> str:
    """INSERT ... SELECT of one day's MetricDay rows, for parts of these lengths (hours, longest
    first; parameters: workspace, day start, next day start, then workspace and day per length).

    Facts are summed per bucket first (a bucket's value is a ratio of the bucket's totals:
    creative- and variant-level rows add up), then per part of the shortest length, and the
    longer parts sum those.
    """
    facts, days = MetricFact._meta, MetricDay._meta
    stored = [facts.get_field(name).column for name in ROLLUP_COUNTERS]
    per_bucket = ", ".join(f"SUM(CAST({column} AS DOUBLE PRECISION)) AS {column}" for column in stored)
    columns, per_block = [*stored], [f"SUM({column}) AS {column}" for column in stored]
    for metric in ROLLUP_RATIOS:
        names, num = moment_columns(metric), facts.get_field(metric.numerator).column
        if metric.denominator in VIRTUAL_DENOMINATORS:
            columns.append(names.squares)
            per_block.append(f"SUM({num} * {num}) AS {names.squares}")
            continue
        ratio = f"{num} / NULLIF({facts.get_field(metric.denominator).column}, 0)"
        columns += [names.buckets, names.total, names.squares]
        per_block += [f"COUNT({ratio}) AS {names.buckets}", f"COALESCE(SUM({ratio}), 0) AS {names.total}",
                      f"COALESCE(SUM({ratio} * {ratio}), 0) AS {names.squares}"]
    hour = ("CAST(date_part('hour', bucket_start AT TIME ZONE 'UTC') AS integer)" if vendor == "postgresql"
            else "CAST(strftime('%%H', bucket_start) AS integer)")
    shortest, listed = lengths[-1], ", ".join(columns)
    parts = [f"SELECT %s, %s, hour / {hours} * {hours}, {hours}, campaign_id, segment_id, "
             f"{', '.join(f'SUM({c})' for c in columns)} FROM block GROUP BY campaign_id, segment_id, hour / {hours}"
             for hours in lengths[:-1]]
    parts.append(f"SELECT %s, %s, hour, {shortest}, campaign_id, segment_id, {listed} FROM block")
    # INSERT first: Python's sqlite3 counts the rows of no statement that starts with WITH. Rows in
    # (hour, hours) order: a part of the day, read on its own, is then on few pages.
    return (
        f"INSERT INTO {days.db_table} (workspace_id, day, hour, hours, campaign_id, segment_id, {listed}) "
        f"WITH bucket AS (SELECT campaign_id, segment_id, {hour} / {shortest} * {shortest} AS hour, {per_bucket} "
        f"FROM {facts.db_table} WHERE workspace_id = %s AND bucket_start >= %s AND bucket_start < %s "
        "GROUP BY campaign_id, segment_id, bucket_start), "
        f"block AS (SELECT campaign_id, segment_id, hour, {', '.join(per_block)} FROM bucket "
        "GROUP BY campaign_id, segment_id, hour) "
        + " UNION ALL ".join(parts) + " ORDER BY 3, 4"
    )
