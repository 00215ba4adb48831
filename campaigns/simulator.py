"""A market simulator: plausible metric facts for segments, for demos, tests and benchmarks.

The model, per segment and bucket (all vectorised over segments with numpy):

* **Opportunities** — a channel's daily impression pool, scaled by the segment's attributes
  (device, source, geo, intent) and by daypart seasonality: an hour-of-day curve and a
  weekday curve, both read in the workspace time zone.
* **Bid response** — the share of auctions won saturates in the bid
  (`1 - exp(-bid / reference_bid)`), and the price paid rises towards the bid as it does:
  doubling a bid never doubles volume (diminishing returns).
* **Budget** — delivery stops when the bucket's pro-rated daily budget is used up, so
  spend never exceeds `daily_budget * bucket_minutes / 1440` (times the elapsed share of a
  bucket still filling).
* **Funnel** — clicks, sessions, bounces, micro-conversions, conversions and video views
  are binomial draws on the previous stage, impressions and dwell time Poisson draws,
  order values gamma draws: counters are consistent by construction (clicks <= impressions,
  conversions <= sessions, ...), non-negative and integer.
* **Incidents** — injectable multipliers on a rate (CTR x 0.4 on mobile at peak hours...)
  for the segments whose criteria match, within a time range and daily hours.

Randomness comes from a numpy Generator seeded by `(seed, bucket_start)`: the same seed
gives the same numbers, and re-simulating one bucket (a stream re-sending the bucket still
filling) gives the same draws, so idempotent upserts do not jitter.
"""

from __future__ import annotations

import functools
import math
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
from django.db.models import Max, QuerySet

from audit.actors import Actor

from .ingestion import IngestResult, metrics_ingest
from .models import COUNTER_FIELDS, Campaign, Channel, DeliveryStatus, MetricFact, Segment

MINUTES_PER_DAY = 1440


# --- Segments ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentProfile:
    """What the simulator needs to know about one segment (a plain value, no database)."""

    segment_id: int
    campaign_id: int
    channel: str
    criteria: Mapping[str, str] = field(default_factory=dict)
    bid: float = 1.0
    daily_budget: float = 100.0
    delivering: bool = True  # False when the segment or its campaign is paused or archived

    def matches(self, match: Mapping[str, object]) -> bool:
        """True when every key of `match` holds: a value, or a list of accepted values."""
        for key, wanted in match.items():
            actual = self.channel if key == "channel" else self.criteria.get(key)
            accepted = wanted if isinstance(wanted, list | tuple | set | frozenset) else (wanted,)
            if actual not in accepted:
                return False
        return True


def profiles_from_queryset(segments: QuerySet) -> list[SegmentProfile]:
    rows = segments.values(
        "id", "campaign_id", "campaign__channel", "campaign__status", "criteria", "bid", "daily_budget", "status"
    )
    return [
        SegmentProfile(
            segment_id=row["id"],
            campaign_id=row["campaign_id"],
            channel=row["campaign__channel"],
            criteria=row["criteria"] or {},
            bid=float(row["bid"]),
            daily_budget=float(row["daily_budget"]),
            delivering=row["status"] == DeliveryStatus.ACTIVE and row["campaign__status"] == DeliveryStatus.ACTIVE,
        )
        for row in rows.order_by("id")
    ]


# --- Market parameters -------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelMarket:
    """Base rates of a channel; `billing` says whether the bid is a max CPC or a max CPM."""

    daily_impressions: float
    reference_bid: float  # the bid that wins ~63% of auctions
    billing: str  # "cpc" | "cpm"
    ctr: float
    landing_rate: float  # clicks that become sessions
    bounce_rate: float
    micro_conversion_rate: float  # per engaged (non-bounced) session
    conversion_rate: float  # per engaged session
    dwell_seconds: float  # per engaged session
    video_start_rate: float  # per impression
    video_completion_rate: float
    order_value: float


# Daily impression pools are those of a mid-size retailer's segment, large enough that a
# 15-minute bucket carries a few hundred impressions: enough for the rules' statistics.
CHANNEL_MARKETS: dict[str, ChannelMarket] = {
    Channel.SEARCH: ChannelMarket(60_000, 1.2, "cpc", 0.045, 0.93, 0.38, 0.30, 0.085, 95, 0.0, 0.0, 70),
    Channel.SHOPPING: ChannelMarket(70_000, 0.8, "cpc", 0.025, 0.94, 0.35, 0.32, 0.095, 85, 0.0, 0.0, 60),
    Channel.SOCIAL: ChannelMarket(300_000, 0.9, "cpc", 0.012, 0.85, 0.52, 0.22, 0.040, 60, 0.15, 0.30, 55),
    Channel.DISPLAY: ChannelMarket(800_000, 3.0, "cpm", 0.004, 0.80, 0.60, 0.15, 0.030, 45, 0.0, 0.0, 50),
    Channel.VIDEO: ChannelMarket(200_000, 9.0, "cpm", 0.006, 0.82, 0.55, 0.18, 0.025, 50, 0.65, 0.45, 60),
}
_DEFAULT_MARKET = CHANNEL_MARKETS[Channel.DISPLAY]


@dataclass(frozen=True)
class Effect:
    """Multipliers an attribute value applies to the channel's base rates (1 = no effect)."""

    reach: float = 1.0
    ctr: float = 1.0
    bounce_rate: float = 1.0
    conversion_rate: float = 1.0
    dwell_seconds: float = 1.0
    video_completion_rate: float = 1.0
    order_value: float = 1.0


ATTRIBUTE_EFFECTS: dict[tuple[str, str], Effect] = {
    ("device", "mobile"): Effect(reach=1.5, ctr=1.1, bounce_rate=1.2, conversion_rate=0.7, dwell_seconds=0.8,
                                 video_completion_rate=0.85, order_value=0.9),
    ("device", "desktop"): Effect(reach=0.8, bounce_rate=0.85, conversion_rate=1.25, dwell_seconds=1.25,
                                  order_value=1.1),
    ("device", "tablet"): Effect(reach=0.25, conversion_rate=1.05),
    ("intent", "high"): Effect(reach=0.4, ctr=1.6, bounce_rate=0.75, conversion_rate=2.0, order_value=1.15),
    ("intent", "medium"): Effect(),
    ("intent", "low"): Effect(reach=1.8, ctr=0.7, bounce_rate=1.15, conversion_rate=0.5, order_value=0.9),
    ("source", "google"): Effect(reach=1.2, ctr=1.05),
    ("source", "bing"): Effect(reach=0.3, conversion_rate=1.1),
    ("source", "meta"): Effect(reach=1.3, ctr=0.95),
    ("source", "tiktok"): Effect(reach=0.9, ctr=1.1, conversion_rate=0.75, order_value=0.85),
    ("source", "youtube"): Effect(reach=1.1, video_completion_rate=1.1),
    ("source", "programmatic"): Effect(reach=1.5, ctr=0.8, bounce_rate=1.2, conversion_rate=0.8),
    ("source", "retargeting"): Effect(reach=0.3, ctr=2.0, conversion_rate=2.5),
    ("geo", "FR"): Effect(),
    ("geo", "DE"): Effect(reach=1.2, conversion_rate=1.05, order_value=1.05),
    ("geo", "ES"): Effect(reach=0.6, conversion_rate=0.9, order_value=0.9),
    ("geo", "IT"): Effect(reach=0.7, conversion_rate=0.9),
    ("geo", "BE"): Effect(reach=0.25),
}

# Share of daily traffic by local hour (mean 1): a night trough, a lunch bump, an evening peak.
HOURLY_TRAFFIC = np.array([
    0.35, 0.22, 0.15, 0.12, 0.12, 0.18, 0.35, 0.65, 0.95, 1.10, 1.15, 1.20,
    1.35, 1.30, 1.15, 1.10, 1.15, 1.30, 1.55, 1.75, 1.85, 1.70, 1.25, 0.70,
])
HOURLY_TRAFFIC = HOURLY_TRAFFIC / HOURLY_TRAFFIC.mean()
# People browse at work and buy in the evening: conversion rate by local hour (mean ~1).
HOURLY_CONVERSION = 1.0 + 0.15 * np.sin((np.arange(24) - 13) / 24 * 2 * np.pi)
# Monday .. Sunday (mean 1): retail peaks at the weekend.
WEEKDAY_TRAFFIC = np.array([0.96, 0.97, 0.98, 0.99, 0.97, 1.05, 1.08])
WEEKDAY_TRAFFIC = WEEKDAY_TRAFFIC / WEEKDAY_TRAFFIC.mean()

# Delivery aims a little under the budget so that noise seldom meets the hard stop.
PACING_HEADROOM = 0.97
BOUNCE_ENGAGED_SECONDS = 4
ORDER_VALUE_SHAPE = 2.0  # gamma shape per order: a coefficient of variation of ~0.7


# --- Incidents ---------------------------------------------------------------------------

INCIDENT_EFFECTS = (
    "reach", "ctr", "cost", "bounce_rate", "micro_conversion_rate", "conversion_rate", "dwell_seconds",
    "video_completion_rate", "order_value",
)


@dataclass(frozen=True)
class Incident:
    """A disturbance of the market: each `effects` rate times its multiplier, for matching segments.

    `effects` maps names of `INCIDENT_EFFECTS` to multipliers, e.g. {"ctr": 0.4};
    `match` uses segment criteria keys and "channel" (a value or a list of values);
    `hours` are local [start, end) hours (end may wrap past midnight, None = all day);
    `starts_at` / `ends_at` bound it in time (None = open); a bucket they cut is hit pro rata.
    """

    name: str
    match: Mapping[str, object]
    effects: Mapping[str, float]
    hours: tuple[int, int] | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None

    def __post_init__(self):
        unknown = sorted(set(self.effects) - set(INCIDENT_EFFECTS))
        if unknown:
            raise ValueError(f"Unknown incident effect(s) {unknown}; use {', '.join(INCIDENT_EFFECTS)}.")
        if any(multiplier < 0 for multiplier in self.effects.values()):
            raise ValueError("An incident multiplier cannot be negative.")
        if self.hours is not None and not (0 <= self.hours[0] <= 23 and 0 <= self.hours[1] <= 24):
            raise ValueError("Incident hours are local hours: start 0-23, end 0-24.")

    def active_share(self, start: datetime, end: datetime, local_hour: int) -> float:
        """The share of [start, end) the incident covers; hours are judged on the local start hour."""
        if not self._in_hours(local_hour):
            return 0.0
        begin = max(start, self.starts_at or start)
        finish = min(end, self.ends_at or end)
        return max(0.0, (finish - begin) / (end - start))

    def _in_hours(self, local_hour: int) -> bool:
        if self.hours is None:
            return True
        start, end = self.hours
        return start <= local_hour < end if start < end else (local_hour >= start or local_hour < end)


# Mobile visitors stop engaging: fewer click, fewer take a micro-step, they leave sooner.
_MOBILE_ENGAGEMENT_DROP = {"ctr": 0.4, "micro_conversion_rate": 0.5, "dwell_seconds": 0.6}

# Named incidents for `manage.py simulate --incident NAME`; they start when the command does.
NAMED_INCIDENTS: dict[str, Incident] = {
    incident.name: incident
    for incident in (
        Incident("mobile_peak_drop", {"device": "mobile"}, _MOBILE_ENGAGEMENT_DROP, hours=(18, 22)),
        # The same drop at every hour: what the demo streams, so its rules fire whenever it runs.
        Incident("mobile_engagement_drop", {"device": "mobile"}, _MOBILE_ENGAGEMENT_DROP),
        Incident("desktop_conversion_drop", {"device": "desktop"}, {"conversion_rate": 0.5}),
        Incident("display_cost_spike", {"channel": "display"}, {"cost": 1.8}),
    )
}


def named_incident(name: str, *, starts_at: datetime | None = None, ends_at: datetime | None = None) -> Incident:
    try:
        incident = NAMED_INCIDENTS[name]
    except KeyError:
        raise KeyError(f"Unknown incident “{name}”. Known: {', '.join(sorted(NAMED_INCIDENTS))}.") from None
    return replace(incident, starts_at=starts_at, ends_at=ends_at)


# --- Buckets -----------------------------------------------------------------------------


def bucket_floor(moment: datetime, *, bucket_minutes: int) -> datetime:
    """The start of the bucket holding `moment`: buckets are aligned in UTC epoch minutes,
    as `campaigns.ingestion` requires (for bucket lengths that divide a day, on UTC midnight)."""
    step = timedelta(minutes=bucket_minutes)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (_as_utc(moment) - epoch) // step * step


def bucket_range(start: datetime, end: datetime, *, bucket_minutes: int) -> list[datetime]:
    """Starts of the buckets that overlap [start, end), oldest first."""
    first = bucket_floor(start, bucket_minutes=bucket_minutes)
    step = timedelta(minutes=bucket_minutes)
    count = max(0, math.ceil((end - first) / step))
    return [first + i * step for i in range(count)]


# --- The simulator -----------------------------------------------------------------------


@dataclass
class _SegmentArrays:
    """Per-segment parameters as aligned numpy vectors (computed once per call)."""

    profiles: list[SegmentProfile]
    segment_id: np.ndarray
    campaign_id: np.ndarray
    bid: np.ndarray
    daily_budget: np.ndarray
    cpc_billing: np.ndarray
    daily_impressions: np.ndarray
    reference_bid: np.ndarray
    ctr: np.ndarray
    landing_rate: np.ndarray
    bounce_rate: np.ndarray
    micro_conversion_rate: np.ndarray
    conversion_rate: np.ndarray
    dwell_seconds: np.ndarray
    video_start_rate: np.ndarray
    video_completion_rate: np.ndarray
    order_value: np.ndarray

    @classmethod
    def build(cls, profiles: list[SegmentProfile]) -> _SegmentArrays:
        markets = [CHANNEL_MARKETS.get(p.channel, _DEFAULT_MARKET) for p in profiles]
        effects = [_combined_effect(tuple(sorted((k, str(v)) for k, v in p.criteria.items()))) for p in profiles]

        def base(name: str) -> np.ndarray:
            return np.array([getattr(m, name) for m in markets], dtype=float)

        def effect(name: str) -> np.ndarray:
            return np.array([getattr(e, name) for e in effects], dtype=float)

        return cls(
            profiles=profiles,
            segment_id=np.array([p.segment_id for p in profiles], dtype=np.int64),
            campaign_id=np.array([p.campaign_id for p in profiles], dtype=np.int64),
            bid=np.array([p.bid for p in profiles], dtype=float),
            daily_budget=np.array([p.daily_budget for p in profiles], dtype=float),
            cpc_billing=np.array([m.billing == "cpc" for m in markets]),
            daily_impressions=base("daily_impressions") * effect("reach"),
            reference_bid=base("reference_bid"),
            ctr=base("ctr") * effect("ctr"),
            landing_rate=base("landing_rate"),
            bounce_rate=base("bounce_rate") * effect("bounce_rate"),
            micro_conversion_rate=base("micro_conversion_rate"),
            conversion_rate=base("conversion_rate") * effect("conversion_rate"),
            dwell_seconds=base("dwell_seconds") * effect("dwell_seconds"),
            video_start_rate=base("video_start_rate"),
            video_completion_rate=base("video_completion_rate") * effect("video_completion_rate"),
            order_value=base("order_value") * effect("order_value"),
        )


@functools.cache
def _combined_effect(criteria: tuple[tuple[str, str], ...]) -> Effect:
    """The product of the effects of a segment's attributes (cached: segments share attributes)."""
    combined = {f.name: 1.0 for f in fields(Effect)}
    for key, value in criteria:
        effect = ATTRIBUTE_EFFECTS.get((key, value))
        if effect is not None:
            for name in combined:
                combined[name] *= getattr(effect, name)
    return Effect(**combined)


OUTPUT_COLUMNS = ("segment", "campaign", "bucket_start", *COUNTER_FIELDS, "spend", "revenue")


class Simulator:
    """Simulates metric facts; see the module docstring for the model.

    `time_zone` and `bucket_minutes` are the workspace's: dayparting reads local hours and
    the budget is pro-rated per bucket.
    """

    def __init__(self, *, seed: int = 0, time_zone: str = "UTC", bucket_minutes: int = 60):
        if bucket_minutes <= 0 or MINUTES_PER_DAY % bucket_minutes:
            raise ValueError("bucket_minutes must divide a day (e.g. 15, 30, 60).")
        self.seed = seed
        self.zone = zoneinfo.ZoneInfo(time_zone)
        self.bucket_minutes = bucket_minutes

    @classmethod
    def for_workspace(cls, workspace, *, seed: int = 0) -> Simulator:
        return cls(seed=seed, time_zone=workspace.time_zone, bucket_minutes=workspace.metric_bucket_minutes)

    def simulate_buckets(
        self,
        segments: Sequence[SegmentProfile] | QuerySet,
        bucket_starts: Iterable[datetime],
        incidents: Iterable[Incident] = (),
        *,
        as_of: datetime | None = None,
    ) -> pd.DataFrame:
        """One row per delivering segment and bucket, with the columns of `OUTPUT_COLUMNS`.

        With `as_of`, a bucket still filling at that moment holds only its elapsed share
        (what an ad platform would report so far); buckets starting after it are refused.
        """
        profiles = profiles_from_queryset(segments) if isinstance(segments, QuerySet) else list(segments)
        profiles = [p for p in profiles if p.delivering]
        arrays = _SegmentArrays.build(profiles)
        # Which segments each incident hits, worked out once rather than per bucket.
        incidents = [(i, np.array([p.matches(i.match) for p in profiles], dtype=bool)) for i in incidents]
        frames = [
            self._simulate_bucket(arrays, start, incidents, self._elapsed_share(start, as_of))
            for start in sorted(_as_utc(b) for b in bucket_starts)
        ]
        if not frames or not profiles:
            return pd.DataFrame({name: pd.Series(dtype=_dtype(name)) for name in OUTPUT_COLUMNS})
        return pd.concat(frames, ignore_index=True)

    # -- one bucket ----------------------------------------------------------------------

    def _elapsed_share(self, start: datetime, as_of: datetime | None) -> float:
        if as_of is None:
            return 1.0
        elapsed = (_as_utc(as_of) - start) / timedelta(minutes=self.bucket_minutes)
        if elapsed <= 0:
            raise ValueError(f"Bucket {start.isoformat()} has not started by {as_of.isoformat()}.")
        return min(1.0, elapsed)

    def _rng(self, start: datetime) -> np.random.Generator:
        # One stream per (seed, bucket): re-simulating a bucket reproduces it exactly.
        return np.random.default_rng([self.seed, int(start.timestamp()) // 60])

    def _daypart(self, start: datetime) -> tuple[float, float, int]:
        """Traffic and conversion multipliers at the bucket's local midpoint, and its local hour."""
        local = (start + timedelta(minutes=self.bucket_minutes / 2)).astimezone(self.zone)
        hour = local.hour + local.minute / 60
        # Each curve value is its hour's average, so it sits at the half hour.
        traffic = np.interp(hour - 0.5, np.arange(24), HOURLY_TRAFFIC, period=24)
        conversion = HOURLY_CONVERSION[local.hour]
        local_start_hour = start.astimezone(self.zone).hour
        return float(traffic * WEEKDAY_TRAFFIC[local.weekday()]), float(conversion), local_start_hour

    @staticmethod
    def _incident_multipliers(arrays: _SegmentArrays, start: datetime, end: datetime, incidents,
                              local_hour: int) -> dict[str, np.ndarray]:
        multipliers = {name: np.ones(len(arrays.profiles)) for name in INCIDENT_EFFECTS}
        for incident, hit in incidents:
            share = incident.active_share(start, end, local_hour)
            if share > 0:
                for name, multiplier in incident.effects.items():
                    # An incident starting mid-bucket weighs in pro rata: the rate is a time average.
                    multipliers[name][hit] *= 1.0 + (multiplier - 1.0) * share
        return multipliers

    def _simulate_bucket(self, a: _SegmentArrays, start: datetime, incidents, share: float) -> pd.DataFrame:
        rng = self._rng(start)
        traffic, conversion_daypart, local_hour = self._daypart(start)
        observed_end = start + timedelta(minutes=self.bucket_minutes * share)
        m = self._incident_multipliers(a, start, observed_end, incidents, local_hour)
        bucket_share = self.bucket_minutes / MINUTES_PER_DAY * share
        impressions, clicks, spend = _deliver(rng, a, m, traffic=traffic, bucket_share=bucket_share)
        return pd.DataFrame({
            "segment": a.segment_id,
            "campaign": a.campaign_id,
            "bucket_start": pd.Timestamp(start),
            "impressions": impressions,
            "clicks": clicks,
            **_funnel(rng, a, m, impressions=impressions, clicks=clicks, conversion_daypart=conversion_daypart),
            "spend": _floor_cents(spend),
        }, columns=list(OUTPUT_COLUMNS))


def _deliver(rng, a: _SegmentArrays, m: dict, *, traffic: float, bucket_share: float):
    """Impressions, clicks and spend: auctions won at the bid, within the bucket's budget."""
    win_rate = 1.0 - np.exp(-a.bid / a.reference_bid)
    # Second-price-like: a low bid clears well under itself, a dominant one close to it.
    price = a.bid * (0.55 + 0.35 * win_rate) * m["cost"]
    # Winning more auctions also means better positions: a mild lift of CTR.
    ctr = np.clip(a.ctr * (0.8 + 0.4 * win_rate) * m["ctr"], 0.0, 0.95)
    cost_per_impression = np.where(a.cpc_billing, ctr * price, price / 1000.0)

    budget = a.daily_budget * bucket_share
    opportunities = a.daily_impressions * traffic * bucket_share * m["reach"]
    affordable = np.divide(PACING_HEADROOM * budget, cost_per_impression,
                           out=np.full_like(budget, np.inf), where=cost_per_impression > 1e-9)
    impressions = rng.poisson(np.minimum(opportunities * win_rate, affordable))
    clicks = rng.binomial(impressions, ctr)
    return _stop_at_budget(rng, impressions, clicks, a.cpc_billing, price, budget)


def _funnel(rng, a: _SegmentArrays, m: dict, *, impressions, clicks, conversion_daypart: float) -> dict:
    """What follows the ad: sessions, bounces, dwell, micro and macro conversions, video views, revenue."""
    sessions = rng.binomial(clicks, a.landing_rate)
    bounces = rng.binomial(sessions, _rate(a.bounce_rate * m["bounce_rate"]))
    engaged = sessions - bounces
    conversions = rng.binomial(engaged, _rate(a.conversion_rate * conversion_daypart * m["conversion_rate"]))
    video_starts = rng.binomial(impressions, a.video_start_rate)
    order_value = a.order_value * m["order_value"]
    revenue = rng.gamma(np.maximum(conversions * ORDER_VALUE_SHAPE, 1e-12), order_value / ORDER_VALUE_SHAPE)
    return {
        "conversions": conversions,
        "micro_conversions": rng.binomial(engaged, _rate(a.micro_conversion_rate * m["micro_conversion_rate"])),
        "sessions": sessions,
        "engaged_seconds": rng.poisson(engaged * a.dwell_seconds * m["dwell_seconds"])
        + bounces * BOUNCE_ENGAGED_SECONDS,
        "bounces": bounces,
        "video_starts": video_starts,
        "video_completions": rng.binomial(video_starts, _rate(a.video_completion_rate * m["video_completion_rate"])),
        "revenue": np.where(conversions > 0, np.round(revenue, 2), 0.0),
    }


def _rate(values: np.ndarray) -> np.ndarray:
    return np.clip(values, 0.0, 1.0)


def _stop_at_budget(rng, impressions, clicks, cpc_billing, price, budget):
    """Delivery stops when the budget is used up: thin the bucket's delivery to fit it."""
    spend = np.where(cpc_billing, clicks * price, impressions * price / 1000.0)
    keep = np.divide(budget, spend, out=np.ones_like(spend), where=spend > budget)
    kept_clicks = rng.binomial(clicks, keep)
    kept_impressions = kept_clicks + rng.binomial(impressions - clicks, keep)
    kept_spend = np.where(cpc_billing, kept_clicks * price, kept_impressions * price / 1000.0)
    # The thinning is random; the hard stop is not.
    return kept_impressions, kept_clicks, np.minimum(kept_spend, budget)


def _floor_cents(amounts: np.ndarray) -> np.ndarray:
    # Rounding down keeps spend within the budget after conversion to money.
    return np.floor(np.round(amounts * 100, 6)) / 100


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("Bucket starts must be time-zone aware.")
    return moment.astimezone(UTC)


def _dtype(column: str) -> str:
    if column == "bucket_start":
        return "datetime64[ns, UTC]"
    return "float64" if column in ("spend", "revenue") else "int64"


# --- Rows for the ingestion service ------------------------------------------------------


def rows_for_ingestion(df: pd.DataFrame) -> list[dict]:
    """The rows of `campaigns.ingestion.metrics_ingest`: ids, ISO bucket starts, counters, money."""
    counters = {name: df[name].to_numpy(dtype=np.int64).tolist() for name in COUNTER_FIELDS}
    segments = df["segment"].to_numpy(dtype=np.int64).tolist()
    starts = [ts.isoformat() for ts in df["bucket_start"]]
    spend = [Decimal(f"{v:.2f}") for v in df["spend"].to_numpy()]
    revenue = [Decimal(f"{v:.2f}") for v in df["revenue"].to_numpy()]
    return [
        {
            "segment": segments[i],
            "bucket_start": starts[i],
            **{name: values[i] for name, values in counters.items()},
            "spend": spend[i],
            "revenue": revenue[i],
        }
        for i in range(len(segments))
    ]


# --- Feeding the platform: always through the ingestion service -------------------------

SIMULATOR_ACTOR = Actor.system("simulator")


def newest_ingested_bucket(workspace) -> datetime | None:
    """The newest bucket any campaign of the workspace has received (kept up by ingestion)."""
    return Campaign.objects.filter(workspace=workspace).aggregate(newest=Max("metrics_latest_bucket"))["newest"]


def ingested_bucket_starts(workspace, *, since: datetime) -> set[datetime]:
    """Starts of the buckets from `since` on that hold metrics of the workspace."""
    starts = MetricFact.objects.filter(workspace=workspace, bucket_start__gte=since).values_list("bucket_start")
    return {start.astimezone(UTC) for (start,) in starts.distinct()}


def simulate_and_ingest(
    *,
    workspace,
    bucket_starts: Sequence[datetime],
    seed: int = 0,
    incidents: Iterable[Incident] = (),
    as_of: datetime | None = None,
    actor: Actor = SIMULATOR_ACTOR,
) -> IngestResult | None:
    """Simulate the workspace's segments (as they are now) over the buckets and ingest the rows.

    Returns None when nothing delivers (no active segment), as an empty batch is refused.
    """
    segments = Segment.objects.filter(campaign__workspace=workspace)
    frame = Simulator.for_workspace(workspace, seed=seed).simulate_buckets(
        segments, bucket_starts, incidents, as_of=as_of
    )
    rows = rows_for_ingestion(frame)
    if not rows:
        return None
    return metrics_ingest(actor=actor, workspace=workspace, rows=rows)
