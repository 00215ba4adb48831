"""`rulesplatform.id_arrays`: a filter on a list of ids (one array on PostgreSQL, an IN list elsewhere)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.models import Segment
from rulesplatform.id_arrays import id_in
from tests.factories import CampaignFactory, SegmentFactory

pytestmark = pytest.mark.django_db


def test_id_in__keeps_exactly_the_rows_listed():
    campaign, other = CampaignFactory(), CampaignFactory()
    listed = [SegmentFactory(campaign=campaign), SegmentFactory(campaign=other)]
    SegmentFactory(campaign=campaign)

    assert set(Segment.objects.filter(id_in("pk", (s.pk for s in listed)))) == set(listed)
    assert list(Segment.objects.filter(id_in("campaign", [other.pk]))) == [listed[1]]
    assert not Segment.objects.filter(id_in("pk", [])).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the array binding is PostgreSQL's")
def test_id_in__binds_thousands_of_ids_as_one_array_on_postgresql():
    with CaptureQueriesContext(connection) as queries:
        list(Segment.objects.filter(id_in("pk", range(1, 5001))))

    [query] = queries.captured_queries
    assert "= ANY(" in query["sql"] and " IN (" not in query["sql"]
