"""Metric rows for ingestion tests: a fixed past bucket, aligned to the default 60-minute bucket."""

from datetime import UTC, datetime, timedelta

BUCKET = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def fact_row(segment, *, bucket: datetime = BUCKET, **values) -> dict:
    """One row as an integrator sends it: ids and an ISO-8601 bucket with its offset."""
    row = {"segment": segment.pk, "bucket_start": bucket.isoformat(), "impressions": 1000, "clicks": 30,
           "conversions": 3, "spend": "12.50", "revenue": "40.00"}
    row.update(values)
    return row
