"""The one freshness rule: a flag wins, then no data, then age (to the newest bucket's end) above the limit."""

from datetime import UTC, datetime, timedelta

import pytest

from campaigns.freshness import FLAGGED, FRESH, NO_DATA, STALE, metrics_freshness
from tests.factories import WorkspaceFactory

pytestmark = pytest.mark.django_db
NOW = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def workspace():
    return WorkspaceFactory(metric_bucket_minutes=15, freshness_limit_minutes=60)


def _freshness(workspace, *, received_ago=None, bucket_ago=None, flag=""):
    return metrics_freshness(
        received_at=None if received_ago is None else NOW - received_ago,
        latest_bucket=None if bucket_ago is None else NOW - bucket_ago,
        quality_flag=flag, workspace=workspace, now=NOW,
    )


@pytest.mark.parametrize(("bucket_ago", "state", "age"), [
    (timedelta(minutes=75), FRESH, 60),  # the bucket ended 60 minutes ago: at the limit, still fresh
    (timedelta(minutes=75, seconds=30), STALE, 60),  # 30 seconds past the limit is stale
])
def test_metrics_freshness__age_is_to_the_newest_buckets_end(workspace, bucket_ago, state, age):
    found = _freshness(workspace, received_ago=timedelta(minutes=1), bucket_ago=bucket_ago)

    assert (found.state, found.age_minutes, found.limit_minutes) == (state, age, 60)


def test_metrics_freshness__never_fed__is_no_data(workspace):
    assert _freshness(workspace).state == NO_DATA


def test_metrics_freshness__a_flag__wins_over_fresh_data_and_over_no_data(workspace):
    flagged = _freshness(workspace, received_ago=timedelta(minutes=1), bucket_ago=timedelta(minutes=15),
                         flag="spend spike")

    assert (flagged.state, flagged.flag, flagged.age_minutes) == (FLAGGED, "spend spike", 1)
    assert _freshness(workspace, flag="spend spike").state == FLAGGED
