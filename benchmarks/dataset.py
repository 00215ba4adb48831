"""The benchmark's market: one workspace of campaigns and segments, with days of hourly facts.

Campaigns and segments are written with `bulk_create`, as fixtures (the test factories do the
same): ten thousand segments through a service would time the service, not the benchmark.
Facts come from the market simulator, one simulated day at a time, and are bulk-loaded
(`benchmarks.facts`); an incident in the last hours (mobile engagement drops) gives the rules
something to fire on.
"""

import itertools
import random
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import connection

from accounts.models import Workspace
from campaigns.models import Campaign, Channel, MetricFact, Segment
from campaigns.simulator import CHANNEL_MARKETS, SegmentProfile, Simulator, named_incident, profiles_from_queryset

from .facts import indexes_built_after, insert_facts
from .progress import Progress
from .scale import Scale

BUCKET_MINUTES = 60
INCIDENT_HOURS = 3
SEED = 20260310
CHANNELS = (Channel.SEARCH, Channel.SOCIAL, Channel.DISPLAY, Channel.VIDEO, Channel.SHOPPING)
SOURCES = {Channel.SEARCH: "google", Channel.SOCIAL: "meta", Channel.DISPLAY: "programmatic",
           Channel.VIDEO: "youtube", Channel.SHOPPING: "google"}
DEVICES = ("mobile", "desktop", "tablet")
GEOS = ("FR", "DE", "ES", "IT", "BE")
INTENTS = ("high", "medium", "low")
AUDIENCES = ("new", "returning", "lookalike")
_CRITERIA = list(itertools.product(DEVICES, GEOS, INTENTS, AUDIENCES))


@dataclass
class Market:
    workspace: Workspace
    owner: object  # the user who owns the benchmark's rules
    campaigns: list[Campaign]
    profiles: list[SegmentProfile]
    data_end: datetime  # exclusive end of the loaded facts: a bucket boundary
    facts_loaded: int = 0
    load_seconds: float = 0.0

    @property
    def evaluation_now(self) -> datetime:
        # A few minutes into the bucket after the data: the last complete bucket is judged.
        return self.data_end + timedelta(minutes=7)


def build_market(scale: Scale, *, name: str, now: datetime, progress: Progress) -> Market:
    data_end = now.replace(minute=0, second=0, microsecond=0)
    workspace = Workspace.objects.create(name=name, time_zone="Europe/Paris", metric_bucket_minutes=BUCKET_MINUTES)
    owner, _ = get_user_model().objects.get_or_create(username="bench-owner", defaults={"is_staff": True})
    campaigns = _create_campaigns(workspace, scale.campaigns)
    _create_segments(campaigns, scale.segments)
    profiles = profiles_from_queryset(Segment.objects.filter(campaign__workspace=workspace))
    market = Market(workspace, owner, campaigns, profiles, data_end)
    _load_facts(market, days=scale.days, now=now, progress=progress)
    return market


def _create_campaigns(workspace: Workspace, count: int) -> list[Campaign]:
    return Campaign.objects.bulk_create(
        Campaign(workspace=workspace, name=f"Campaign {i:04d}", channel=CHANNELS[i % len(CHANNELS)],
                 daily_budget=Decimal("20000"), start_date=date(2026, 1, 1))
        for i in range(count)
    )


def _create_segments(campaigns: list[Campaign], count: int) -> None:
    rng = random.Random(SEED)
    segments = []
    for i in range(count):
        campaign = campaigns[i % len(campaigns)]
        index_in_campaign = i // len(campaigns)
        device, geo, intent, audience = _CRITERIA[index_in_campaign % len(_CRITERIA)]
        reference_bid = CHANNEL_MARKETS[campaign.channel].reference_bid
        bid = Decimal(str(round(reference_bid * rng.uniform(0.6, 1.6), 2)))
        budget = Decimal(rng.randrange(50, 300))
        segments.append(Segment(
            campaign=campaign, name=f"Segment {index_in_campaign:04d} {device}/{geo}/{intent}/{audience}",
            criteria={"device": device, "geo": geo, "intent": intent, "audience": audience,
                      "source": SOURCES[campaign.channel]},
            bid=bid, bid_floor=bid / 4, bid_ceiling=bid * 4,
            daily_budget=budget, budget_floor=budget / 4, budget_ceiling=budget * 4,
        ))
    Segment.objects.bulk_create(segments, batch_size=2_000)


def _load_facts(market: Market, *, days: int, now: datetime, progress: Progress) -> None:
    workspace = market.workspace
    simulator = Simulator(seed=SEED, time_zone=workspace.time_zone, bucket_minutes=BUCKET_MINUTES)
    incident = named_incident("mobile_engagement_drop", starts_at=market.data_end - timedelta(hours=INCIDENT_HOURS))
    first = market.data_end - timedelta(days=days)
    started = time.perf_counter()
    progress.start("loading facts", total=len(market.profiles) * days * 24, unit="rows")
    with indexes_built_after():
        for day in range(days):
            day_start = first + timedelta(days=day)
            buckets = [day_start + timedelta(hours=h) for h in range(24)]
            frame = simulator.simulate_buckets(market.profiles, buckets, [incident])
            market.facts_loaded += insert_facts(frame, workspace_id=workspace.pk, ingested_at=now)
            progress.advance(len(frame))
        progress.finish()
        progress.note("building the indexes of the facts...")
    _mark_fresh(market, now=now)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Fresh statistics, as autovacuum would gather them in production after such a load.
            cursor.execute(f"ANALYZE {MetricFact._meta.db_table}")
    market.load_seconds = time.perf_counter() - started


def _mark_fresh(market: Market, *, now: datetime) -> None:
    """What ingestion would have stamped: the data arrived now, up to the last whole bucket."""
    Campaign.objects.filter(workspace=market.workspace).update(
        metrics_received_at=now, metrics_latest_bucket=market.data_end - timedelta(minutes=BUCKET_MINUTES)
    )

