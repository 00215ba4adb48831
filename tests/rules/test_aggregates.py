"""The interval read: range sums and per-bucket moments equal what the raw facts give."""

from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import combinations

import numpy as np
import pytest
from django.db import transaction

from campaigns.metrics import get_metric
from campaigns.models import MetricDay, MetricFact, StaleMetricDay
from campaigns.rollups import metric_days_refresh
from rules.aggregates import BucketGrid, load_counters, split_span
from rules.engine import evaluate_rules, rule_preview
from tests.rules.facts import NOW, SYSTEM, WINDOW_END, active_rule, fresh_campaign, segments, trigger

pytestmark = pytest.mark.django_db

GRID = BucketGrid(WINDOW_END, 60, 12)
OFFSETS = {0, 1, 4, 5, 9, 12}  # buckets before the end, as triggers' windows and baselines give them
CPC, ROAS, SPEND_PACE = get_metric("cpc"), get_metric("roas"), get_metric("spend_pace")


def _load(segment_list, budgets, offsets=OFFSETS):
    return load_counters(
        workspace_id=segment_list[0].campaign.workspace_id, campaign_ids={s.campaign_id for s in segment_list},
        segment_ids=[s.pk for s in segment_list], daily_budgets=budgets, counters=["clicks", "spend"],
        moments=[CPC, SPEND_PACE], grid=GRID, offsets=offsets,
    )


def _write(segment, bucket: int, creative: int, clicks: int, spend: int) -> None:
    MetricFact.objects.create(
        workspace_id=segment.campaign.workspace_id, campaign_id=segment.campaign_id, segment=segment,
        creative_key=creative, bucket_start=GRID.bucket_start(bucket), ingested_at=NOW, impressions=clicks,
        clicks=clicks, spend=Decimal(spend),
    )


@pytest.fixture
def raw(workspace):
    """Three segments with missing buckets and up to three creatives per bucket; the dense totals."""
    rng = np.random.default_rng(7)
    segment_list = segments(fresh_campaign(workspace), 3)
    clicks, spend = np.zeros((3, GRID.n_buckets)), np.zeros((3, GRID.n_buckets))
    for row, segment in enumerate(segment_list):
        for bucket in range(GRID.n_buckets):
            for creative in range(rng.integers(0, 4)):  # 0 creatives: a missing bucket
                c, s = int(rng.integers(0, 5)), int(rng.integers(1, 20))
                _write(segment, bucket, creative, c, s)
                clicks[row, bucket] += c
                spend[row, bucket] += s
    # Outside the grid: never read.
    _write(segment_list[0], -1, 0, 100, 100)
    _write(segment_list[0], GRID.n_buckets, 0, 100, 100)
    return segment_list, clicks, spend


def _ranges():
    n = GRID.n_buckets
    return [slice(n - oldest, n - newest) for newest, oldest in combinations(sorted(OFFSETS), 2)]


def _moments(values: np.ndarray):
    kept = [row[~np.isnan(row)] for row in values]
    return ([r.mean() if len(r) else np.nan for r in kept], [r.var(ddof=1) if len(r) > 1 else np.nan for r in kept],
            [len(r) for r in kept])


def test_range_sums__equal_the_sums_of_the_raw_facts_for_every_range_of_boundaries(raw):
    segment_list, clicks, spend = raw
    series = _load(segment_list, [0, 0, 0]).series(CPC)
    for window in _ranges():
        numerator, denominator = series.sums(window)
        np.testing.assert_allclose(numerator, spend[:, window].sum(axis=1))
        np.testing.assert_allclose(denominator, clicks[:, window].sum(axis=1))


def test_bucket_moments__are_those_of_per_bucket_values_summed_over_creatives_first(raw):
    segment_list, clicks, spend = raw
    series = _load(segment_list, [0, 0, 0]).series(CPC)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_bucket = np.where(clicks > 0, spend / clicks, np.nan)  # no clicks (or no facts): no value
    for window in _ranges():
        _assert_moments_of(series, window, per_bucket)


def test_virtual_budget_denominator__is_the_daily_budget_pro_rated_over_every_bucket_with_or_without_facts(raw):
    segment_list, _, spend = raw
    budgets = [240.0, 48.0, 0.0]  # 10 and 2 per hourly bucket; no budget, no pace
    series = _load(segment_list, budgets).series(SPEND_PACE)
    per_bucket = np.array(budgets)[:, None] / 24
    with np.errstate(divide="ignore", invalid="ignore"):
        pace = np.where(per_bucket > 0, spend / per_bucket, np.nan)
    for window in _ranges():
        buckets = window.stop - window.start
        numerator, denominator = series.sums(window)
        np.testing.assert_allclose(denominator, per_bucket[:, 0] * buckets)
        np.testing.assert_allclose(numerator, spend[:, window].sum(axis=1))
        _assert_moments_of(series, window, pace)



def _assert_moments_of(series, window: slice, per_bucket: np.ndarray) -> None:
    """The series' per-bucket moments over `window` are those of the values computed by hand."""
    mean, variance, count = series.bucket_moments(window)
    expected_mean, expected_variance, expected_count = _moments(per_bucket[:, window])
    np.testing.assert_allclose(mean, expected_mean)
    np.testing.assert_allclose(variance, expected_variance)
    np.testing.assert_array_equal(count, expected_count)

def test_equal_per_bucket_values__keep_a_variance_of_exactly_zero(workspace):
    [segment] = segments(fresh_campaign(workspace), 1)
    for bucket in range(GRID.n_buckets):
        _write(segment, bucket, 0, 3, 1)  # 1/3 each bucket: sums of squares do not cancel exactly
    mean, variance, count = _load([segment], [0]).series(CPC).bucket_moments(slice(0, GRID.n_buckets))
    assert (mean[0], variance[0], count[0]) == (pytest.approx(1 / 3), 0.0, 12)


def test_a_range_not_between_loaded_boundaries__is_refused(raw):
    segment_list, _, _ = raw
    with pytest.raises(ValueError, match="not a range of loaded boundaries"):
        _load(segment_list, [0, 0, 0]).series(CPC).sums(slice(GRID.n_buckets - 3, GRID.n_buckets))


def test_segments_outside_the_requested_ones__are_dropped(raw):
    segment_list, clicks, _ = raw
    counters = _load(segment_list[1:], [0, 0])
    _, denominator = counters.series(CPC).sums(slice(0, GRID.n_buckets))
    np.testing.assert_allclose(denominator, clicks[1:].sum(axis=1))


# --- over several days: complete days read from their rollups once refreshed ---------------------------

DAYS_GRID = BucketGrid(WINDOW_END, 60, 24 * 4 + 12)  # four whole UTC days, then the current day's first 12 hours
METRICS = [CPC, ROAS, SPEND_PACE]


@pytest.fixture
def days(workspace):
    """Two segments over the grid and around it, with gaps and up to three creatives per bucket."""
    rng = np.random.default_rng(11)
    segment_list = segments(fresh_campaign(workspace), 2)
    for segment in segment_list:
        for bucket in range(-30, DAYS_GRID.n_buckets + 5):
            for creative in range(rng.choice(4, p=[0.2, 0.5, 0.2, 0.1])):
                _write_fact(segment, bucket, creative, rng)
    return segment_list


def _write_fact(segment, bucket: int, creative: int, rng) -> None:
    clicks = int(rng.integers(0, 6))
    MetricFact.objects.create(
        workspace_id=segment.campaign.workspace_id, campaign_id=segment.campaign_id, segment=segment,
        creative_key=creative, bucket_start=DAYS_GRID.bucket_start(bucket), ingested_at=NOW,
        impressions=clicks * 10, clicks=clicks, conversions=int(rng.integers(0, 2)),
        spend=Decimal(int(rng.integers(0, 2000))) / 100, revenue=Decimal(int(rng.integers(0, 5000))) / 100,
    )


def _load_days(segment_list, offsets, *, segment_ids=None):
    segment_ids = segment_ids or [s.pk for s in segment_list]
    return load_counters(
        workspace_id=segment_list[0].campaign.workspace_id, campaign_ids={s.campaign_id for s in segment_list},
        segment_ids=segment_ids, daily_budgets=[240.0] * len(segment_ids),
        counters=["clicks", "conversions", "revenue", "spend"], moments=METRICS, grid=DAYS_GRID, offsets=offsets,
    )


def _refresh_days(workspace):
    return metric_days_refresh(workspace_ids=[workspace.pk], before=NOW)


def _boundary_sets(count: int) -> list[set[int]]:
    """Random offsets, some at midnights (every 24 buckets from 12), as triggers' windows and baselines give them."""
    rng = np.random.default_rng(5)
    sets = [set(), {12, 36, 60, 84}]
    for _ in range(count):
        sets.append({int(o) for o in rng.integers(1, DAYS_GRID.n_buckets, size=rng.integers(1, 8))})
    return sets


def _assert_same_reads(read, expected) -> None:
    """Equal range sums and per-bucket moments over every range between the loaded boundaries."""
    n = DAYS_GRID.n_buckets
    for newest, oldest in combinations(expected.intervals.offsets.tolist(), 2):
        window = slice(n - oldest, n - newest)
        for metric in METRICS:
            got, want = read.series(metric), expected.series(metric)
            for a, b in zip((*got.sums(window), *got.bucket_moments(window)),
                            (*want.sums(window), *want.bucket_moments(window)), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)


def test_split_span__reads_each_complete_day_from_its_longest_parts_no_boundary_cuts():
    def at(day, hour):
        return datetime(2026, 3, day, hour, tzinfo=UTC)

    # Hourly buckets from March 4th 05:00 to March 6th 00:00; boundaries at March 5th 09:00 and 11:00.
    grid = BucketGrid(end=at(6, 0), bucket_minutes=60, n_buckets=43)
    split = split_span(grid, [13, 15])

    march_4, march_5 = date(2026, 3, 4), date(2026, 3, 5)
    assert split.rollups == [(march_4, 6, 6), (march_4, 12, 6), (march_4, 18, 6),  # the day starts before the grid
                             (march_5, 0, 6), (march_5, 6, 2), (march_5, 12, 6), (march_5, 18, 6)]
    assert split.fact_ranges == [(at(4, 5), at(4, 6)), (at(5, 8), at(5, 12))]


def test_reads_from_rollups__equal_the_reads_from_the_facts_for_any_boundaries(workspace, days):
    boundary_sets = _boundary_sets(12)
    from_facts = [_load_days(days, offsets) for offsets in boundary_sets]

    assert _refresh_days(workspace).days == 6  # the days before the grid too, not the current day
    assert MetricDay.objects.filter(day__gte=DAYS_GRID.start.date(), hours=24).count() == 2 * 4

    for offsets, expected in zip(boundary_sets, from_facts, strict=True):
        _assert_same_reads(_load_days(days, offsets), expected)


def test_reads_from_rollups__equal_the_raw_facts_summed_by_hand(workspace, days):
    _refresh_days(workspace)
    spend, clicks = np.zeros((2, DAYS_GRID.n_buckets)), np.zeros((2, DAYS_GRID.n_buckets))
    for fact in MetricFact.objects.filter(bucket_start__gte=DAYS_GRID.start, bucket_start__lt=DAYS_GRID.end):
        at = ([s.pk for s in days].index(fact.segment_id),
              int((fact.bucket_start - DAYS_GRID.start).total_seconds()) // 3600)
        spend[at] += float(fact.spend)
        clicks[at] += fact.clicks

    series = _load_days(days, {12, 36, 40}).series(CPC)  # one midnight, one interval of 3 whole days

    for window in (slice(0, 68), slice(68, 72), slice(72, 96), slice(96, 108), slice(0, 108)):
        numerator, denominator = series.sums(window)
        np.testing.assert_allclose(numerator, spend[:, window].sum(axis=1), rtol=1e-12)
        np.testing.assert_array_equal(denominator, clicks[:, window].sum(axis=1))


def test_a_stale_day__is_read_from_the_facts_until_refreshed_again(workspace, days):
    _refresh_days(workspace)
    [first, second] = days
    _write_fact(first, 30, 9, np.random.default_rng(1))  # back-dated, into a rolled-up day
    fact = MetricFact.objects.filter(segment=second, bucket_start__gte=DAYS_GRID.bucket_start(48)).first()
    MetricFact.objects.filter(pk=fact.pk).update(clicks=3, spend=7)
    assert StaleMetricDay.objects.count() == 3  # those two days, and the current one
    expected = {}
    with _every_day_stale(workspace):
        for offsets in _boundary_sets(4):
            expected[frozenset(offsets)] = _load_days(days, offsets)

    for offsets, counters in expected.items():
        _assert_same_reads(_load_days(days, offsets), counters)
    _refresh_days(workspace)
    for offsets, counters in expected.items():
        _assert_same_reads(_load_days(days, offsets), counters)


@contextmanager
def _every_day_stale(workspace):
    """Reads meanwhile come from the facts alone, as before any refresh; the marks are restored after."""
    with transaction.atomic():
        StaleMetricDay.objects.bulk_create(
            [StaleMetricDay(workspace=workspace, day=DAYS_GRID.start.date() + timedelta(days=n)) for n in range(5)],
            ignore_conflicts=True)
        yield
        transaction.set_rollback(True)


def test_a_deleted_segment__reads_nothing_and_leaves_the_others_as_they_were(workspace, days):
    _refresh_days(workspace)
    [first, second] = days
    ids = [first.pk, second.pk]
    before = _load_days([second], {12, 60})

    first.delete()

    _assert_same_reads(_load_days([second], {12, 60}), before)
    gone = _load_days([second], {12, 60}, segment_ids=ids).intervals.counters
    assert not any(array[0].any() for array in gone.values())


def test_evaluations_and_previews__leave_rolling_up_to_the_periodic_task(workspace, days):
    """A back-dated write must never hold up an evaluation by a day's refresh (seconds at scale):
    rules.tasks.refresh_metric_days rolls days up, and until then they are read from the facts."""
    rule = active_rule(workspace, triggers=[trigger(metric="cpc", kind="relative_change", direction="above",
                                                    threshold=10, baseline_minutes=60 * 72)])
    stale = list(StaleMetricDay.objects.values_list("day", "version"))

    rule_preview(actor=SYSTEM, rule=rule, now=NOW)
    evaluate_rules(rule_ids=[rule.pk], now=NOW, source="schedule", actor=SYSTEM)

    assert (MetricDay.objects.count(), list(StaleMetricDay.objects.values_list("day", "version"))) == (0, stale)
