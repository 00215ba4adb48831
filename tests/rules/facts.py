"""Building metric facts and rules for engine tests: counters per bucket, written with bulk_create."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from audit.actors import Actor
from campaigns.models import MetricFact
from rules.services import rule_activate, rule_create
from tests.factories import CampaignFactory, SegmentFactory, UserFactory

# 12:07 UTC: with 60-minute buckets the current window ends at 12:00 (the 12:00 bucket is still filling).
NOW = datetime(2026, 3, 10, 12, 7, tzinfo=UTC)
WINDOW_END = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SYSTEM = Actor.system("tests")


def fresh_campaign(workspace, **fields):
    """A campaign whose metrics arrived just now, up to the last complete bucket."""
    fields.setdefault("metrics_received_at", NOW)
    fields.setdefault("metrics_latest_bucket", WINDOW_END - timedelta(minutes=workspace.metric_bucket_minutes))
    return CampaignFactory(workspace=workspace, **fields)


def segments(campaign, count: int, **fields):
    return [SegmentFactory(campaign=campaign, **fields) for _ in range(count)]


def add_buckets(segment, counters: list[dict], *, end: datetime = WINDOW_END, bucket_minutes: int = 60):
    """Facts for consecutive buckets ending at `end`: counters[-1] is the bucket just before `end`."""
    start = end - timedelta(minutes=bucket_minutes * len(counters))
    MetricFact.objects.bulk_create(
        MetricFact(
            workspace_id=segment.campaign.workspace_id, campaign_id=segment.campaign_id, segment=segment,
            bucket_start=start + timedelta(minutes=bucket_minutes * i), ingested_at=NOW,
            **{k: (Decimal(str(v)) if k in ("spend", "revenue") else v) for k, v in row.items()},
        )
        for i, row in enumerate(counters)
        if row
    )


def active_rule(workspace, *, triggers: list[dict], owner=None, **fields):
    fields.setdefault("name", "Rule under test")
    fields.setdefault("action", "bid_pct")
    if fields["action"] in ("bid_pct", "budget_pct"):
        fields.setdefault("action_value", Decimal("-10"))
    rule = rule_create(actor=SYSTEM, workspace=workspace, owner=owner or UserFactory(), triggers=triggers, **fields)
    return rule_activate(actor=SYSTEM, rule=rule)


def trigger(**fields) -> dict:
    """A trigger on the current 60-minute window with a 3-hour baseline and no sample guard."""
    return {"window_minutes": 60, "baseline_minutes": 180, "min_sample": 0, **fields}


# A rule on click-through rate below 4%, and buckets on either side of it.
CTR_BELOW_4_PCT = trigger(metric="ctr", kind="threshold", direction="below", threshold=Decimal("0.04"))
GOOD, BAD = {"impressions": 1000, "clicks": 50}, {"impressions": 1000, "clicks": 30}
