"""The invariants the database itself guards (services also check them, with full_clean)."""

from datetime import date
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from campaigns.models import Campaign, IngestionBatch, MetricFact, Segment
from tests.campaigns.builders import BUCKET
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


def _refused(update_queryset, **values):
    with pytest.raises(IntegrityError), transaction.atomic():
        update_queryset.update(**values)


@pytest.mark.parametrize("values", [
    {"bid": Decimal("0.05")},  # below the floor of 0.10
    {"bid": Decimal("5.01")},  # above the ceiling of 5.00
    {"daily_budget": Decimal("9")},  # below the floor of 10
    {"daily_budget": Decimal("501")},  # above the ceiling of 500
], ids=["bid<floor", "bid>ceiling", "budget<floor", "budget>ceiling"])
def test_segment__bid_or_budget_outside_its_bounds__is_refused_by_the_database(segment, values):
    _refused(Segment.objects.filter(pk=segment.pk), **values)


def test_campaign__negative_budget_or_end_before_start__is_refused_by_the_database(campaign):
    _refused(Campaign.objects.filter(pk=campaign.pk), daily_budget=Decimal("-1"))
    _refused(Campaign.objects.filter(pk=campaign.pk), end_date=date(2025, 12, 31))


def test_campaign__same_name_twice_in_a_workspace__is_refused(campaign):
    with pytest.raises(IntegrityError), transaction.atomic():
        CampaignFactory(workspace=campaign.workspace, name=campaign.name)


def test_campaign__same_name_in_another_workspace__is_allowed(campaign, other_workspace):
    assert CampaignFactory(workspace=other_workspace, name=campaign.name).pk


def _fact(segment, **values) -> MetricFact:
    return MetricFact(workspace=segment.campaign.workspace, campaign=segment.campaign, segment=segment,
                      bucket_start=BUCKET, ingested_at=BUCKET, **values)


def test_metric_fact__clicks_above_impressions_or_negative_counter__is_refused(segment):
    for values in ({"impressions": 1, "clicks": 2}, {"conversions": -1}, {"spend": Decimal("-0.01")}):
        with pytest.raises(IntegrityError), transaction.atomic():
            _fact(segment, **values).save()


def test_metric_fact__one_row_per_segment_creative_variant_and_bucket(segment):
    _fact(segment).save()
    _fact(segment, variant="B").save()
    with pytest.raises(IntegrityError), transaction.atomic():
        _fact(segment).save()


def test_ingestion_batch__a_key_is_unique_in_its_workspace_but_blank_keys_repeat(workspace, other_workspace):
    def batch(ws, key):
        return IngestionBatch.objects.create(
            workspace=ws, idempotency_key=key, fingerprint="f", source="rows", actor_label="t",
            rows_received=1, rows_created=1, rows_updated=0, bucket_min=BUCKET, bucket_max=BUCKET,
        )

    batch(workspace, ""), batch(workspace, ""), batch(workspace, "k1"), batch(other_workspace, "k1")
    with pytest.raises(IntegrityError), transaction.atomic():
        batch(workspace, "k1")

