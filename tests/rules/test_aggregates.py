"""The interval read: range sums and per-bucket moments equal what the raw facts give."""

from decimal import Decimal
from itertools import combinations

import numpy as np
import pytest

from campaigns.metrics import get_metric
from campaigns.models import MetricFact
from rules.aggregates import BucketGrid, load_counters
from tests.rules.facts import NOW, WINDOW_END, fresh_campaign, segments

pytestmark = pytest.mark.django_db

GRID = BucketGrid(WINDOW_END, 60, 12)
OFFSETS = {0, 1, 4, 5, 9, 12}  # buckets before the end, as triggers' windows and baselines give them
CPC, SPEND_PACE = get_metric("cpc"), get_metric("spend_pace")


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
