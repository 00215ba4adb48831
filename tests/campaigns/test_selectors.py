"""metric_timeseries against values worked out by hand."""

from datetime import timedelta
from decimal import Decimal

import pytest

from campaigns.ingestion import metrics_ingest
from campaigns.selectors import metric_timeseries
from tests.campaigns.builders import BUCKET, HOUR, fact_row
from tests.factories import CampaignFactory, CreativeFactory, SegmentFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def facts(workspace, system_actor):
    """Two search segments (budgets 100 and 240, campaign budget 1000) and one social (campaign budget 480).

    bucket      segment  creative  impressions clicks spend
    10:00       a        -         1000        30     5
    10:00       a        A1        500         20     2     <- a second row for `a` in the same bucket
    10:00       b        -         2000        10     8
    11:00       a        -         400         4      1
    10:00       s        -         300         9     3
    """
    search = CampaignFactory(workspace=workspace, channel="search", daily_budget=Decimal("1000"))
    social = CampaignFactory(workspace=workspace, channel="social", daily_budget=Decimal("480"))
    a = SegmentFactory(campaign=search, daily_budget=Decimal("100"))
    b = SegmentFactory(campaign=search, daily_budget=Decimal("240"), budget_ceiling=Decimal("500"))
    s = SegmentFactory(campaign=social, daily_budget=Decimal("100"))
    a1 = CreativeFactory(campaign=search)
    rows = [
        fact_row(a, impressions=1000, clicks=30, spend="5"),
        fact_row(a, creative=a1.pk, impressions=500, clicks=20, spend="2"),
        fact_row(b, impressions=2000, clicks=10, spend="8"),
        fact_row(a, bucket=BUCKET + HOUR, impressions=400, clicks=4, spend="1"),
        fact_row(s, impressions=300, clicks=9, spend="3"),
    ]
    metrics_ingest(actor=system_actor, workspace=workspace, rows=rows)
    return {"search": search, "social": social, "a": a, "b": b, "s": s}


def _series(workspace, **kwargs):
    params = {"workspace_ids": [workspace.pk], "start": BUCKET, "end": BUCKET + 2 * HOUR, **kwargs}
    return [(p["group"], p["bucket_start"], p["numerator"], p["denominator"], p["value"])
            for p in metric_timeseries(**params)]


def _assert_points(actual, expected):
    assert [p[:2] for p in actual] == [p[:2] for p in expected]
    assert [p[2:] for p in actual] == [pytest.approx(p[2:]) for p in expected]


def test_metric_timeseries__ctr_by_segment__sums_the_rows_of_each_bucket(workspace, facts):
    a, b, s = facts["a"].pk, facts["b"].pk, facts["s"].pk
    assert _series(workspace, metric="ctr", group_by="segment") == sorted([
        (a, BUCKET, 50, 1500, 50 / 1500),
        (a, BUCKET + HOUR, 4, 400, 0.01),
        (b, BUCKET, 10, 2000, 0.005),
        (s, BUCKET, 9, 300, 0.03),
    ])


def test_metric_timeseries__by_campaign_and_by_channel(workspace, facts):
    search, social = facts["search"].pk, facts["social"].pk
    assert _series(workspace, metric="cpm", group_by="campaign") == [
        (search, BUCKET, 15, 3500, 1000 * 15 / 3500),
        (search, BUCKET + HOUR, 1, 400, 2.5),
        (social, BUCKET, 3, 300, 10.0),
    ]
    by_channel = _series(workspace, metric="ctr", group_by="channel")
    assert by_channel == [("search", BUCKET, 60, 3500, 60 / 3500), ("search", BUCKET + HOUR, 4, 400, 0.01),
                          ("social", BUCKET, 9, 300, 0.03)]


def test_metric_timeseries__spend_pace__divides_by_the_budget_prorated_to_the_bucket(workspace, facts):
    a, b = facts["a"].pk, facts["b"].pk
    by_segment = _series(workspace, metric="spend_pace", group_by="segment", segment_ids=[a, b])
    # a: 100/day over a 60-minute bucket = 100/24; its two rows in 10:00 count its budget once.
    _assert_points(by_segment, [
        (a, BUCKET, 7, 100 / 24, 7 / (100 / 24)),
        (a, BUCKET + HOUR, 1, 100 / 24, 1 / (100 / 24)),
        (b, BUCKET, 8, 10, 0.8),
    ])
    by_channel = _series(workspace, metric="spend_pace", group_by="channel")
    # search at 10:00: one campaign (1000/day) reported, whatever its segments' own budgets.
    _assert_points(by_channel, [
        ("search", BUCKET, 15, 1000 / 24, 15 / (1000 / 24)),
        ("search", BUCKET + HOUR, 1, 1000 / 24, 1 / (1000 / 24)),
        ("social", BUCKET, 3, 20, 0.15),
    ])


def test_metric_timeseries__filters_and_window_and_workspaces(workspace, other_workspace, facts):
    a = facts["a"].pk
    assert [p[0:2] for p in _series(workspace, metric="ctr", group_by="segment", campaign_ids=[facts["social"].pk])] \
        == [(facts["s"].pk, BUCKET)]
    window = {"start": BUCKET + HOUR, "end": BUCKET + HOUR + timedelta(minutes=1)}
    assert [p[0:2] for p in _series(workspace, metric="ctr", group_by="segment", **window)] == [(a, BUCKET + HOUR)]
    assert _series(other_workspace, metric="ctr", group_by="segment") == []


def test_metric_timeseries__zero_denominator__has_no_value(workspace, segment, system_actor):
    metrics_ingest(actor=system_actor, workspace=workspace, rows=[fact_row(segment, conversions=0)])
    [point] = metric_timeseries(workspace_ids=[workspace.pk], metric="cpa", group_by="segment",
                                start=BUCKET, end=BUCKET + HOUR)
    assert (point["numerator"], point["denominator"], point["value"]) == (12.5, 0, None)


def test_metric_timeseries__unknown_metric_or_grouping__is_refused(workspace):
    with pytest.raises(KeyError, match="Unknown metric"):
        metric_timeseries(workspace_ids=[workspace.pk], metric="ctrr", group_by="segment", start=BUCKET, end=BUCKET)
    with pytest.raises(ValueError, match="group_by"):
        metric_timeseries(workspace_ids=[workspace.pk], metric="ctr", group_by="device", start=BUCKET, end=BUCKET)
