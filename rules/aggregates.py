"""Counters of every segment of a scope, per metric bucket, as dense numpy arrays.

One SQL query sums the metric facts grouped by (segment, bucket) over the whole span the
rules of a scope need (their current windows, earlier windows and baselines together);
everything after that is array arithmetic over all segments at once.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from django.db.models import QuerySet, Sum

from campaigns.metrics import VIRTUAL_DENOMINATORS, DerivedMetric
from campaigns.models import MetricFact

MINUTES_PER_DAY = 1440


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
    """The summed counters of a scope's segments over a grid of buckets."""

    segment_ids: np.ndarray
    grid: BucketGrid
    counters: dict[str, np.ndarray]
    daily_budgets: np.ndarray

    def series(self, metric: DerivedMetric) -> MetricSeries:
        return MetricSeries(metric, self._counter(metric.numerator), self._counter(metric.denominator))

    def _counter(self, name: str) -> np.ndarray:
        if name == "budget":
            # The daily budget pro-rated over each bucket: what spend pace is measured against.
            per_bucket = self.daily_budgets * self.grid.bucket_minutes / MINUTES_PER_DAY
            return np.broadcast_to(per_bucket[:, None], (len(self.segment_ids), self.grid.n_buckets))
        return self.counters[name]


def counters_needed(metrics: list[DerivedMetric]) -> list[str]:
    names = {name for m in metrics for name in (m.numerator, m.denominator)}
    return sorted(names - VIRTUAL_DENOMINATORS)


def load_scope_counters(
    *, segments: QuerySet, segment_ids: list[int], daily_budgets: list[float], counters: list[str], grid: BucketGrid
) -> ScopeCounters:
    """Sum the facts of `segments` (a queryset, sent as a subquery) over `grid`, in one query."""
    rows = (
        MetricFact.objects.filter(
            segment__in=segments.values("pk"), bucket_start__gte=grid.start, bucket_start__lt=grid.end
        )
        .order_by()
        .values("segment_id", "bucket_start")
        .annotate(**{f"total_{name}": Sum(name) for name in counters})
        .values_list("segment_id", "bucket_start", *(f"total_{name}" for name in counters))
    )
    frame = pd.DataFrame.from_records(list(rows), columns=["segment_id", "bucket_start", *counters])
    ids = np.asarray(segment_ids, dtype=np.int64)
    shape = (len(ids), grid.n_buckets)
    arrays = {name: np.zeros(shape) for name in counters}
    if not frame.empty:
        row = pd.Index(ids).get_indexer(frame["segment_id"])
        offset = pd.to_datetime(frame["bucket_start"], utc=True) - pd.Timestamp(grid.start)
        col = (offset // pd.Timedelta(minutes=grid.bucket_minutes)).to_numpy(dtype=np.int64)
        keep = row >= 0  # a segment that left the scope between the two queries
        for name in counters:
            # Money arrives as Decimal: floats are exact enough for rates and tests on them.
            np.add.at(arrays[name], (row[keep], col[keep]), frame[name].astype(float).to_numpy()[keep])
    return ScopeCounters(ids, grid, arrays, np.asarray(daily_budgets, dtype=float))
