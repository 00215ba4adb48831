"""A workspace with two channels, hourly metrics, a rule that fired and a change it applied a day ago.

Shared by the dashboard and "today" tests and the browser tests. Times are relative to the real
now, since the pages read `timezone.now()`.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from audit.actors import Actor
from campaigns.models import Campaign, Channel, Segment
from rules.aggregates import floor_to_bucket
from rules.changes import change_apply, change_propose
from rules.models import Change, Evaluation, Rule
from rules.services import evaluation_record
from tests.factories import CampaignFactory, SegmentFactory
from tests.rules.facts import active_rule, add_buckets, trigger

SYSTEM = Actor.system("ui tests")
HOURS = 72
CHANGE_AGE = timedelta(hours=24)


@dataclass
class DashboardData:
    now: datetime
    search: Campaign
    social: Campaign
    mobile: Segment
    desktop: Segment
    prospects: Segment
    rule: Rule
    change: Change


def hourly(count: int, **counters) -> list[dict]:
    return [dict(counters) for _ in range(count)]


def build_dashboard_data(workspace) -> DashboardData:
    now = timezone.now()
    end = floor_to_bucket(now, workspace.metric_bucket_minutes)
    applied_at = end - CHANGE_AGE
    search = CampaignFactory(workspace=workspace, name="Search brand", channel=Channel.SEARCH,
                             metrics_received_at=now, metrics_latest_bucket=end - timedelta(hours=1))
    # Fed ten hours ago: past the default 180-minute freshness limit.
    social = CampaignFactory(workspace=workspace, name="Social prospecting", channel=Channel.SOCIAL,
                             metrics_received_at=now - timedelta(hours=10),
                             metrics_latest_bucket=end - timedelta(hours=11))
    mobile = SegmentFactory(campaign=search, name="Mobile", criteria={"device": "mobile"})
    desktop = SegmentFactory(campaign=search, name="Desktop", criteria={"device": "desktop"})
    prospects = SegmentFactory(campaign=social, name="Prospects", criteria={"device": "mobile"})
    # Mobile: CPA 10 before the change (10 spent per conversion), 5 after it (2 conversions an hour).
    before_hours = HOURS - int(CHANGE_AGE.total_seconds() // 3600)
    add_buckets(mobile, hourly(before_hours, impressions=1000, clicks=50, conversions=1, spend=10, revenue=30)
                + hourly(24, impressions=1000, clicks=50, conversions=2, spend=10, revenue=30), end=end)
    add_buckets(desktop, hourly(HOURS, impressions=800, clicks=20, conversions=1, spend=8, revenue=40), end=end)
    add_buckets(prospects, hourly(HOURS - 11, impressions=5000, clicks=40, conversions=1, spend=20, revenue=10),
                end=end - timedelta(hours=11))
    rule = active_rule(workspace, name="Mobile CPA guard", segment_filter={"device": "mobile"},
                       triggers=[trigger(metric="cpa", kind="threshold", direction="above", threshold="8")])
    evaluation = evaluation_record(actor=SYSTEM, rule=rule, window_end=applied_at, evaluated_at=applied_at,
                                   source=Evaluation.Source.SCHEDULE, outcome=Evaluation.Outcome.FIRED,
                                   summary="Fired for 1 of 2 segments (Mobile).", inputs={"segments": []})
    change = applied_bid_change(rule, evaluation, mobile, applied_at=applied_at)
    return DashboardData(now, search, social, mobile, desktop, prospects, rule, change)


def applied_bid_change(rule, evaluation, segment, *, applied_at) -> Change:
    """A rule's bid change 1.0000 → 0.9000 on `segment`, applied at `applied_at` (through the services)."""
    change, _ = change_propose(
        actor=SYSTEM, target=segment, field=Change.Field.BID, old_value="1.0000", requested_value="0.9000",
        capped_value="0.9000", cap_report=[], idempotency_key=f"ui-test-{segment.pk}-{applied_at.isoformat()}",
        rule=rule, rule_version=rule.version, evaluation=evaluation, reason="CPA above 8",
    )
    return change_apply(actor=SYSTEM, change=change, now=applied_at)

