"""Metric rows for ingestion tests (a fixed past bucket, aligned to the default 60-minute bucket),
and facts written directly, as any writer of the table may."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from campaigns.models import MetricFact

BUCKET = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def fact_row(segment, *, bucket: datetime = BUCKET, **values) -> dict:
    """One row as an integrator sends it: ids and an ISO-8601 bucket with its offset."""
    row = {"segment": segment.pk, "bucket_start": bucket.isoformat(), "impressions": 1000, "clicks": 30,
           "conversions": 3, "spend": "12.50", "revenue": "40.00"}
    row.update(values)
    return row


def write_fact(segment, bucket: datetime, *, creative_key: int = 0, clicks: int = 10, spend: str = "5",
               revenue: str = "0") -> MetricFact:
    """One fact, saved through the ORM (not the ingestion service): ten impressions per click."""
    return MetricFact.objects.create(
        workspace_id=segment.campaign.workspace_id, campaign_id=segment.campaign_id, segment=segment,
        creative_key=creative_key, bucket_start=bucket, ingested_at=bucket, impressions=clicks * 10, clicks=clicks,
        spend=Decimal(spend), revenue=Decimal(revenue),
    )
