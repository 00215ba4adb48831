"""Running totals of segments (PostgreSQL): whatever writes the facts, each row equals the sums recomputed
from scratch, and interval sums read from them equal those of summing the facts."""

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from django.db import connection

from campaigns.ingestion import metrics_ingest
from campaigns.metrics import DERIVED_METRICS, MetricKind, get_metric
from campaigns.models import COUNTER_FIELDS, MONEY_FIELDS, MetricFact, SegmentRunningTotal
from campaigns.running_totals import moment_columns
from rules import aggregates
from rules.aggregates import BucketGrid, load_counters
from tests.campaigns.builders import BUCKET, HOUR, fact_row
from tests.factories import SegmentFactory

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="running totals are kept by PostgreSQL triggers"),
    pytest.mark.django_db,
]

COUNTERS = [*COUNTER_FIELDS, *MONEY_FIELDS]
RATIOS = [m for m in DERIVED_METRICS.values() if m.kind == MetricKind.RATIO]


def _write(segment, hour: int, *, creative: int = 0, **values) -> MetricFact:
    values = {"impressions": 100, "clicks": 7, "conversions": 1, "sessions": 5, "engaged_seconds": 90,
              "spend": Decimal("3.1"), "revenue": Decimal("9.7"), **values}
    return MetricFact.objects.create(
        workspace_id=segment.campaign.workspace_id, campaign_id=segment.campaign_id, segment=segment,
        creative_key=creative, bucket_start=BUCKET + hour * HOUR, ingested_at=BUCKET, **values,
    )


def _contributions(buckets: pd.DataFrame) -> pd.DataFrame:
    """What each bucket's totals add to every running column."""
    columns = {name: buckets[name] for name in COUNTERS}
    for metric in RATIOS:
        count, total, squares = moment_columns(metric)
        numerator = buckets[metric.numerator]
        if count is None:
            columns[squares] = numerator**2
            continue
        has = buckets[metric.denominator] > 0
        ratio = (numerator / buckets[metric.denominator].where(has)).fillna(0.0)
        columns |= {count: has.astype(float), total: ratio, squares: ratio**2}
    return pd.DataFrame(columns, index=buckets.index)


def _assert_exact(segments) -> None:
    """Every running row holds the sums of its segment's facts up to its bucket, and every bucket with
    facts has a row."""
    ids = [s.pk for s in segments]
    facts = pd.DataFrame(list(MetricFact.objects.filter(segment__in=ids).values("segment_id", "bucket_start",
                                                                                 *COUNTERS)))
    running = pd.DataFrame(list(SegmentRunningTotal.objects.filter(segment__in=ids).values()))
    columns = [f.name for f in SegmentRunningTotal._meta.concrete_fields if f.get_internal_type() == "FloatField"]
    assert not facts.empty and not running.empty
    buckets = facts.astype({c: float for c in COUNTERS}).groupby(["segment_id", "bucket_start"])[COUNTERS].sum()
    contributions = _contributions(buckets)
    assert sorted(contributions.columns) == sorted(columns)
    keys = set(running[["segment_id", "bucket_start"]].itertuples(index=False, name=None))
    assert set(buckets.index) <= keys
    for _, row in running.iterrows():
        mine = contributions.loc[row.segment_id] if row.segment_id in buckets.index.get_level_values(0) else None
        expected = (mine[mine.index <= row.bucket_start].sum() if mine is not None
                    else pd.Series(0.0, index=columns))
        np.testing.assert_allclose(row[columns].astype(float), expected[columns], rtol=1e-12, atol=1e-9,
                                   err_msg=f"segment {row.segment_id} at {row.bucket_start}")


@pytest.fixture
def pair(campaign):
    return [SegmentFactory(campaign=campaign), SegmentFactory(campaign=campaign)]


def test_inserted_facts__with_gaps_and_several_creatives__give_the_recomputed_totals(pair):
    first, second = pair
    for hour in (0, 1, 4, 9):
        _write(first, hour)
    _write(first, 4, creative=2, clicks=0, spend=Decimal("1.25"))
    _write(second, 2, clicks=0, conversions=0)

    _assert_exact(pair)
    assert SegmentRunningTotal.objects.filter(segment=first).count() == 4


def test_back_dated_facts__are_added_to_every_later_row(pair):
    first, second = pair
    for hour in (3, 5, 8):
        _write(first, hour)
    _write(first, 1, clicks=50)  # late: before the first row
    _write(first, 6, creative=3)  # late: between rows
    _write(first, 5, creative=4, spend=Decimal("0"))  # joins an existing bucket: its ratio changes
    _write(second, 0)

    _assert_exact(pair)


def test_updates_and_deletes__keep_the_totals_exact(pair):
    first, second = pair
    facts = [_write(first, hour, creative=c) for hour in range(6) for c in (0, 1)] + [_write(second, 3)]
    facts[2].clicks, facts[2].spend = 0, Decimal("44.4")
    facts[2].save()
    MetricFact.objects.filter(segment=first, bucket_start=BUCKET + 4 * HOUR).update(conversions=9)
    MetricFact.objects.filter(segment=first, bucket_start=BUCKET + 5 * HOUR, creative_key=1).update(
        bucket_start=BUCKET + 8 * HOUR)  # moved to a bucket without a row yet
    facts[6].delete()
    MetricFact.objects.filter(segment=first, bucket_start=BUCKET + HOUR).delete()  # a whole bucket

    _assert_exact(pair)


def test_deleting_a_segment__deletes_its_running_totals_and_leaves_the_others(pair):
    first, second = pair
    for hour in range(3):
        _write(first, hour)
        _write(second, hour)

    first.delete()

    assert not SegmentRunningTotal.objects.filter(segment_id=first.pk).exists()
    _assert_exact([second])


def test_ingestion_upserts__keep_the_totals_exact(workspace, pair, marketer_actor):
    first, second = pair
    rows = [fact_row(first, bucket=BUCKET + h * HOUR) for h in range(5)] + [fact_row(second, bucket=BUCKET)]
    metrics_ingest(actor=marketer_actor, workspace=workspace, rows=rows)
    resent = [fact_row(first, bucket=BUCKET + 3 * HOUR, clicks=12, spend="99.99"),  # replaces a bucket
              fact_row(first, bucket=BUCKET - 2 * HOUR),  # back-dated
              fact_row(second, bucket=BUCKET + 6 * HOUR, impressions=0, clicks=0)]
    metrics_ingest(actor=marketer_actor, workspace=workspace, rows=resent)

    _assert_exact(pair)


def test_interval_sums_from_running_totals__equal_those_of_summing_the_facts(monkeypatch, campaign):
    rng = np.random.default_rng(11)
    segments = [SegmentFactory(campaign=campaign) for _ in range(4)]
    for segment in segments:
        for hour in rng.choice(40, size=25, replace=False):  # gaps
            for creative in range(rng.integers(1, 3)):
                _write(segment, int(hour), creative=creative, clicks=int(rng.integers(0, 9)),
                       spend=Decimal(int(rng.integers(0, 900))) / 100, conversions=int(rng.integers(0, 3)))
    grid = BucketGrid(BUCKET + 36 * HOUR, 60, 30)  # facts before and after the grid too
    metrics = [get_metric(name) for name in ("cpc", "cpa", "roas", "spend_pace")]

    def load(offsets):
        return load_counters(
            workspace_id=campaign.workspace_id, campaign_ids=[campaign.pk], segment_ids=[s.pk for s in segments],
            daily_budgets=[24.0] * 4, counters=["clicks", "conversions", "revenue", "spend"], moments=metrics,
            grid=grid, offsets=offsets,
        ).intervals

    for _ in range(5):
        offsets = set(rng.choice(np.arange(1, 30), size=rng.integers(1, 8), replace=False).tolist())
        running = load(offsets)
        with monkeypatch.context() as patched:
            patched.setattr(aggregates, "reads_running_totals", lambda using: False)
            summed = load(offsets)
        np.testing.assert_array_equal(running.offsets, summed.offsets)
        for name, values in summed.counters.items():
            np.testing.assert_allclose(running.counters[name], values, err_msg=name)
        for name, values in summed.moments.items():
            np.testing.assert_allclose(running.moments[name], values, rtol=1e-9, atol=1e-9, err_msg=name)
