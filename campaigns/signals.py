"""Signals other apps subscribe to (campaigns never imports them: the dependency points the other way)."""

from django.dispatch import Signal

# Sent after an ingestion transaction commits (never inside it), with keyword arguments:
#   workspace_id: int, campaign_ids: list[int], segment_ids: list[int],
#   bucket_min: datetime, bucket_max: datetime
metrics_ingested = Signal()
