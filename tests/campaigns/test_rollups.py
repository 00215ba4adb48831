"""Daily rollups of metric facts: database triggers mark the days written to, a refresh rebuilds them."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection, transaction

from campaigns.ingestion import metrics_ingest
from campaigns.metrics import get_metric
from campaigns.models import MetricDay, MetricFact, StaleMetricDay, moment_columns
from campaigns.rollups import RollupsRefreshed, metric_days_refresh
from tests.campaigns.builders import fact_row, write_fact
from tests.factories import SegmentFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db

DAY = date(2026, 3, 2)
MIDNIGHT = datetime(2026, 3, 2, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY_OVER = MIDNIGHT + timedelta(days=1)  # the first moment DAY is complete
CPC, ROAS, SPEND_PACE = get_metric("cpc"), get_metric("roas"), get_metric("spend_pace")


def stale_days(workspace) -> list[date]:
    return list(StaleMetricDay.objects.filter(workspace=workspace).order_by("day").values_list("day", flat=True))


def stale_version(workspace, day: date = DAY) -> int | None:
    return StaleMetricDay.objects.filter(workspace=workspace, day=day).values_list("version", flat=True).first()


def refresh(*workspaces, before: datetime = DAY_OVER, **kwargs) -> RollupsRefreshed:
    return metric_days_refresh(workspace_ids=[w.pk for w in workspaces], before=before, **kwargs)


# --- the triggers mark the days facts are written to --------------------------------------------------


def test_writing_a_fact__marks_its_utc_day_stale_and_each_write_raises_the_version(workspace, segment):
    write_fact(segment, MIDNIGHT + 23 * HOUR)
    write_fact(segment, MIDNIGHT + 23 * HOUR, creative_key=7)
    write_fact(segment, MIDNIGHT + 24 * HOUR)

    assert stale_days(workspace) == [DAY, DAY + timedelta(days=1)]
    assert stale_version(workspace) == 2


def test_an_ingested_batch__marks_the_days_of_its_rows(workspace, segment, marketer_actor):
    rows = [fact_row(segment, bucket=MIDNIGHT + h * HOUR) for h in (-1, 5, 30)]

    metrics_ingest(actor=marketer_actor, workspace=workspace, rows=rows)

    assert stale_days(workspace) == [DAY - timedelta(days=1), DAY, DAY + timedelta(days=1)]


def test_moving_a_fact_to_another_day__marks_its_old_and_its_new_day(workspace, segment):
    fact = write_fact(segment, MIDNIGHT + 2 * HOUR)
    StaleMetricDay.objects.all().delete()

    MetricFact.objects.filter(pk=fact.pk).update(bucket_start=MIDNIGHT + 50 * HOUR)

    assert stale_days(workspace) == [DAY, DAY + timedelta(days=2)]


def test_deleting_a_segment__marks_the_days_of_its_facts_and_drops_its_rollups(workspace, segment):
    write_fact(segment, MIDNIGHT + 2 * HOUR)
    refresh(workspace)
    assert MetricDay.objects.exists() and stale_days(workspace) == []

    segment.delete()

    assert stale_days(workspace) == [DAY]
    assert not MetricDay.objects.exists()


def test_deleting_a_workspace__deletes_its_facts_rollups_and_marks(workspace, segment):
    write_fact(segment, MIDNIGHT + 2 * HOUR)
    write_fact(segment, MIDNIGHT + 26 * HOUR)
    refresh(workspace, before=DAY_OVER + timedelta(days=1))
    write_fact(segment, MIDNIGHT + 3 * HOUR)

    with transaction.atomic():  # the foreign keys are checked at commit: no mark may outlive its workspace
        workspace.delete()
        connection.check_constraints()

    assert (MetricFact.objects.count(), MetricDay.objects.count(), StaleMetricDay.objects.count()) == (0, 0, 0)


# --- the refresh rebuilds the days that are over ----------------------------------------------------


def test_refresh__sums_each_segment_and_day_and_keeps_the_moments_of_its_per_bucket_values(workspace, segment):
    other = SegmentFactory(campaign=segment.campaign)
    # Bucket 1 has two creatives: its value is a ratio of the bucket's totals, (2 + 4) / (10 + 20).
    write_fact(segment, MIDNIGHT + HOUR, creative_key=1, clicks=10, spend="2", revenue="8")
    write_fact(segment, MIDNIGHT + HOUR, creative_key=2, clicks=20, spend="4", revenue="1")
    write_fact(segment, MIDNIGHT + 5 * HOUR, clicks=0, spend="3", revenue="6")  # no clicks: no cost per click
    write_fact(segment, MIDNIGHT + 9 * HOUR, clicks=4, spend="0", revenue="0")  # no spend: no return on it
    write_fact(other, MIDNIGHT + 9 * HOUR, clicks=5, spend="1.25")
    write_fact(segment, MIDNIGHT + 24 * HOUR, clicks=99, spend="99")  # the next day

    assert refresh(workspace) == RollupsRefreshed(days=1, rows=9)  # whole days, quarters and 2-hour blocks with facts

    row = MetricDay.objects.get(segment=segment, day=DAY, hours=24)
    assert (row.workspace_id, row.campaign_id) == (workspace.pk, segment.campaign_id)
    assert (row.clicks, row.impressions, row.spend, row.revenue) == (34, 340, 9, 15)
    cpc, roas, pace = moment_columns(CPC), moment_columns(ROAS), moment_columns(SPEND_PACE)
    assert (getattr(row, cpc.buckets), getattr(row, cpc.total), getattr(row, cpc.squares)) == (
        2, pytest.approx(6 / 30 + 0 / 4), pytest.approx((6 / 30) ** 2))
    assert (getattr(row, roas.buckets), getattr(row, roas.total), getattr(row, roas.squares)) == (
        2, pytest.approx(9 / 6 + 6 / 3), pytest.approx((9 / 6) ** 2 + (6 / 3) ** 2))
    assert getattr(row, pace.squares) == pytest.approx(6**2 + 3**2)  # the per-bucket spends
    quarters = MetricDay.objects.filter(segment=segment, hours=6).order_by("hour")
    assert [(q.hour, q.clicks, getattr(q, cpc.buckets)) for q in quarters] == [(0, 30, 1), (6, 4, 1)]
    blocks = MetricDay.objects.filter(segment=segment, hours=2).order_by("hour")
    assert [(b.hour, b.clicks, b.spend, getattr(b, roas.buckets)) for b in blocks] == [(0, 30, 6, 1), (4, 0, 3, 1),
                                                                                      (8, 4, 0, 0)]
    assert MetricDay.objects.get(segment=other, hours=24).spend == 1.25
    assert stale_days(workspace) == [DAY + timedelta(days=1)]


def test_refresh__leaves_a_day_not_over_yet_stale(workspace, segment):
    write_fact(segment, MIDNIGHT + 2 * HOUR)

    assert refresh(workspace, before=DAY_OVER - timedelta(minutes=1)) == RollupsRefreshed(days=0, rows=0)

    assert stale_days(workspace) == [DAY] and not MetricDay.objects.exists()


def test_refresh__clears_the_day_and_the_next_refresh_finds_nothing_to_do(workspace, segment):
    write_fact(segment, MIDNIGHT + 2 * HOUR)

    assert refresh(workspace).days == 1
    assert refresh(workspace).days == 0
    assert stale_days(workspace) == []


def test_a_write_after_a_refresh__marks_the_day_again_and_the_next_refresh_rebuilds_it(workspace, segment):
    fact = write_fact(segment, MIDNIGHT + 2 * HOUR, clicks=10)
    refresh(workspace)

    write_fact(segment, MIDNIGHT + 3 * HOUR, clicks=5)  # back-dated: the day was over
    MetricFact.objects.filter(pk=fact.pk).update(clicks=20)
    assert stale_days(workspace) == [DAY]
    refresh(workspace)

    assert MetricDay.objects.get(segment=segment, hours=24).clicks == 25
    assert stale_days(workspace) == []


def test_deleting_every_fact_of_a_day__leaves_it_without_rollups(workspace, segment):
    write_fact(segment, MIDNIGHT + 2 * HOUR)
    refresh(workspace)

    MetricFact.objects.all().delete()
    assert refresh(workspace) == RollupsRefreshed(days=1, rows=0)

    assert not MetricDay.objects.exists()


def test_refresh__only_of_the_given_workspaces_and_of_the_days_since_the_given_moment(workspace, segment):
    other = SegmentFactory(campaign__workspace=WorkspaceFactory())
    for s in (segment, other):
        write_fact(s, MIDNIGHT + 2 * HOUR)
        write_fact(s, MIDNIGHT + 26 * HOUR)

    refresh(workspace, since=DAY_OVER + HOUR, before=DAY_OVER + timedelta(days=1))

    assert stale_days(workspace) == [DAY]
    assert stale_days(other.campaign.workspace) == [DAY, DAY + timedelta(days=1)]


def test_a_workspace_whose_bucket_does_not_divide_a_quarter_day__gets_whole_days_only(workspace, segment):
    type(workspace).objects.filter(pk=workspace.pk).update(metric_bucket_minutes=480)
    write_fact(segment, MIDNIGHT + 16 * HOUR)

    refresh(workspace)

    assert list(MetricDay.objects.values_list("hour", "hours")) == [(0, 24)]


def test_a_workspace_whose_bucket_does_not_divide_a_2_hour_block__gets_whole_days_and_quarters(workspace, segment):
    type(workspace).objects.filter(pk=workspace.pk).update(metric_bucket_minutes=180)
    write_fact(segment, MIDNIGHT + 15 * HOUR)

    refresh(workspace)

    assert list(MetricDay.objects.order_by("hour", "-hours").values_list("hour", "hours")) == [(0, 24), (12, 6)]


def test_a_workspace_whose_bucket_does_not_divide_a_day__gets_no_rollups(workspace, segment):
    type(workspace).objects.filter(pk=workspace.pk).update(metric_bucket_minutes=7)
    write_fact(segment, MIDNIGHT + 2 * HOUR)

    assert refresh(workspace).days == 0

    assert stale_days(workspace) == [DAY]
