"""The demo rules react to the simulator's "mobile engagement drop" within a few buckets."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from audit.actors import Actor
from campaigns.models import Channel, Segment
from campaigns.simulator import bucket_range, named_incident, simulate_and_ingest
from rules.demo import load_demo_rules
from rules.engine import evaluate_rules
from rules.models import Rule
from tests.factories import CampaignFactory, SegmentFactory, UserFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db

DEMO = Actor.system("demo")
NOW = datetime(2026, 3, 10, 18, 5, tzinfo=UTC)  # 19:05 in Paris, the evening peak
INCIDENT_START = NOW - timedelta(hours=1, minutes=5)


@pytest.fixture
def demo_workspace():
    workspace = WorkspaceFactory(time_zone="Europe/Paris", metric_bucket_minutes=15, freshness_limit_minutes=60)
    # Like the demo's search campaign (load_demo): its budgets and bid give the simulator its volumes.
    campaign = CampaignFactory(workspace=workspace, channel=Channel.SEARCH, daily_budget=Decimal("7800"))
    for device, budget in (("mobile", Decimal("2500")), ("desktop", Decimal("1400"))):
        for geo in ("FR", "DE"):
            SegmentFactory(campaign=campaign, criteria={"device": device, "geo": geo, "intent": "high",
                                                        "source": "google"},
                           bid=Decimal("1.20"), daily_budget=budget, budget_ceiling=budget * 3)
    return workspace


def _simulate(workspace, start, end, incidents=()):
    buckets = bucket_range(start, end, bucket_minutes=workspace.metric_bucket_minutes)
    simulate_and_ingest(workspace=workspace, bucket_starts=buckets, seed=7, incidents=incidents)


def test_load_demo_rules__creates_active_rules_once(demo_workspace):
    owner = UserFactory()
    rules = load_demo_rules(actor=DEMO, workspace=demo_workspace, owner=owner)
    assert rules and all(rule.status == Rule.Status.ACTIVE for rule in rules)
    again = load_demo_rules(actor=DEMO, workspace=demo_workspace, owner=owner)
    assert [r.pk for r in again] == [r.pk for r in rules]


def test_demo_rules__fire_on_mobile_segments_during_the_incident(demo_workspace):
    _simulate(demo_workspace, NOW - timedelta(days=1), INCIDENT_START)
    incident = named_incident("mobile_engagement_drop", starts_at=INCIDENT_START)
    _simulate(demo_workspace, INCIDENT_START, NOW - timedelta(minutes=5), [incident])
    rules = load_demo_rules(actor=DEMO, workspace=demo_workspace, owner=UserFactory())

    results = evaluate_rules(rule_ids=[r.pk for r in rules], now=NOW, source="manual", actor=DEMO, dry_run=True)

    outcomes = {r.rule.name: r.outcome for r in results}
    assert outcomes == {rule.name: "fired" for rule in rules}, {r.rule.name: r.summary for r in results}
    mobile = set(Segment.objects.filter(criteria__device="mobile").values_list("pk", flat=True))
    for result in results:
        assert {d["segment_id"] for d in result.decisions if d["decision"] == "fired"} == mobile
