"""Tests for campaigns.simulator: reproducibility, invariants, bid/budget response, incidents, buckets."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.models import COUNTER_FIELDS, DeliveryStatus
from campaigns.simulator import (
    Incident,
    SegmentProfile,
    Simulator,
    bucket_floor,
    bucket_range,
    named_incident,
    profiles_from_queryset,
    rows_for_ingestion,
)
from tests.factories import CampaignFactory, SegmentFactory

PARIS = "Europe/Paris"
MONDAY = datetime(2026, 5, 4, tzinfo=ZoneInfo(PARIS))
CHANNELS = ("search", "social", "display", "video")


def _profiles(count: int = 40, *, bid_scale: float = 1.0, budget: float = 500.0) -> list[SegmentProfile]:
    return [
        SegmentProfile(
            segment_id=i + 1,
            campaign_id=i % 4 + 1,
            channel=CHANNELS[i % 4],
            criteria={"device": ("mobile", "desktop")[i % 2], "intent": ("high", "medium", "low")[i % 3], "geo": "FR"},
            bid=(1.0, 0.8, 2.5, 7.0)[i % 4] * bid_scale,
            daily_budget=budget,
        )
        for i in range(count)
    ]


def _day(start: datetime = MONDAY, *, days: int = 1, bucket_minutes: int = 60) -> list[datetime]:
    return bucket_range(start, start + timedelta(days=days), bucket_minutes=bucket_minutes)


def _simulator(seed: int = 7, bucket_minutes: int = 60) -> Simulator:
    return Simulator(seed=seed, time_zone=PARIS, bucket_minutes=bucket_minutes)


def _ctr(df: pd.DataFrame) -> float:
    return df["clicks"].sum() / df["impressions"].sum()


def _local_hours(df: pd.DataFrame) -> pd.Series:
    return df["bucket_start"].dt.tz_convert(PARIS).dt.hour


# --- reproducibility ---------------------------------------------------------------------------


def test_simulate_buckets__same_seed__gives_identical_frames():
    first = _simulator(seed=3).simulate_buckets(_profiles(), _day())
    second = _simulator(seed=3).simulate_buckets(_profiles(), _day())
    pd.testing.assert_frame_equal(first, second)


def test_simulate_buckets__other_seed__gives_other_draws():
    first = _simulator(seed=3).simulate_buckets(_profiles(), _day())
    second = _simulator(seed=4).simulate_buckets(_profiles(), _day())
    assert not first["impressions"].equals(second["impressions"])


def test_simulate_buckets__one_bucket_alone__matches_it_within_a_range():
    # A stream re-sends single buckets: they must equal what a backfill produced for them.
    buckets = _day()
    whole = _simulator().simulate_buckets(_profiles(), buckets)
    alone = _simulator().simulate_buckets(_profiles(), [buckets[13]])
    expected = whole[whole["bucket_start"] == pd.Timestamp(buckets[13])].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, expected)


# --- invariants ----------------------------------------------------------------------------------


def _assert_invariants(df: pd.DataFrame, profiles: list[SegmentProfile], *, share_of_day: pd.Series):
    assert (df[list(COUNTER_FIELDS) + ["spend", "revenue"]] >= 0).all().all()
    assert (df["clicks"] <= df["impressions"]).all()
    assert (df["sessions"] <= df["clicks"]).all()
    assert (df["bounces"] + df["conversions"] <= df["sessions"]).all()
    assert (df["video_completions"] <= df["video_starts"]).all()
    budgets = df["segment"].map({p.segment_id: p.daily_budget for p in profiles})
    assert (df["spend"] <= budgets * share_of_day + 1e-9).all()


def test_simulate_buckets__a_week__keeps_every_invariant():
    profiles = _profiles(budget=150.0)  # budget-bound: the hard stop is exercised
    df = _simulator().simulate_buckets(profiles, _day(days=7))
    _assert_invariants(df, profiles, share_of_day=pd.Series(60 / 1440, index=df.index))
    assert df["spend"].sum() > 0.8 * sum(p.daily_budget for p in profiles) * 7


@settings(max_examples=40, deadline=None)
@given(
    bid=st.floats(0.0, 50.0),
    budget=st.floats(0.0, 20_000.0),
    channel=st.sampled_from(CHANNELS + ("shopping", "unknown")),
    device=st.sampled_from(("mobile", "desktop", "tablet", "fridge")),
    seed=st.integers(0, 2**32 - 1),
)
def test_simulate_buckets__any_bid_and_budget__keeps_every_invariant(bid, budget, channel, device, seed):
    profiles = [SegmentProfile(1, 1, channel, {"device": device}, bid=bid, daily_budget=budget)]
    df = Simulator(seed=seed, time_zone=PARIS, bucket_minutes=15).simulate_buckets(profiles, _day()[18:20])
    _assert_invariants(df, profiles, share_of_day=pd.Series(15 / 1440, index=df.index))


def test_simulate_buckets__bucket_still_filling__spends_within_its_elapsed_share():
    profiles = _profiles(budget=150.0)
    bucket = _day()[19]
    quarter_past = bucket + timedelta(minutes=15)
    partial = _simulator().simulate_buckets(profiles, [bucket], as_of=quarter_past)
    full = _simulator().simulate_buckets(profiles, [bucket])
    _assert_invariants(partial, profiles, share_of_day=pd.Series(15 / 1440, index=partial.index))
    assert 0.15 < partial["impressions"].sum() / full["impressions"].sum() < 0.35


def test_simulate_buckets__bucket_not_started__is_refused():
    bucket = _day()[19]
    with pytest.raises(ValueError, match="has not started"):
        _simulator().simulate_buckets(_profiles(), [bucket], as_of=bucket - timedelta(minutes=1))


def test_simulate_buckets__paused_segment__delivers_nothing():
    profiles = _profiles(4)
    profiles[0] = SegmentProfile(1, 1, "search", {}, bid=1.0, daily_budget=100, delivering=False)
    df = _simulator().simulate_buckets(profiles, _day()[:2])
    assert 1 not in set(df["segment"])
    assert len(df) == 3 * 2


# --- response to bid and budget ------------------------------------------------------------------


def test_simulate_buckets__doubled_bid__gives_more_but_less_than_double_conversions():
    ample_budget = 1_000_000.0  # reach-bound, so only the bid response is measured
    base = _simulator().simulate_buckets(_profiles(bid_scale=1.0, budget=ample_budget), _day(days=7))
    doubled = _simulator().simulate_buckets(_profiles(bid_scale=2.0, budget=ample_budget), _day(days=7))
    ratio = doubled["conversions"].sum() / base["conversions"].sum()
    assert 1.05 < ratio < 1.9
    assert doubled["spend"].sum() / base["spend"].sum() > ratio  # each extra conversion costs more


def test_simulate_buckets__doubled_budget_when_budget_bound__spends_about_double():
    low = _simulator().simulate_buckets(_profiles(budget=100.0), _day(days=2))
    high = _simulator().simulate_buckets(_profiles(budget=200.0), _day(days=2))
    assert 1.8 < high["spend"].sum() / low["spend"].sum() < 2.2


# --- seasonality and segment attributes ----------------------------------------------------------


def test_simulate_buckets__evening__brings_more_traffic_than_night():
    df = _simulator().simulate_buckets(_profiles(budget=1_000_000.0), _day(days=7))
    by_hour = df.groupby(_local_hours(df))["impressions"].sum()
    assert by_hour[20] > 3 * by_hour[4]


def test_simulate_buckets__high_intent__converts_better_than_low_intent():
    profiles = [
        SegmentProfile(i, 1, "search", {"intent": intent}, bid=1.0, daily_budget=1_000_000.0)
        for i, intent in enumerate(("high", "low"), start=1)
    ]
    df = _simulator().simulate_buckets(profiles, _day(days=3)).groupby("segment")[["conversions", "clicks"]].sum()
    cvr = df["conversions"] / df["clicks"]
    assert cvr[1] > 2 * cvr[2]


# --- incidents -----------------------------------------------------------------------------------


def test_mobile_peak_drop__lowers_mobile_ctr_at_peak_hours_only():
    profiles = _profiles(budget=1_000_000.0)
    incident = named_incident("mobile_peak_drop")
    clean = _simulator().simulate_buckets(profiles, _day(days=3))
    hit = _simulator().simulate_buckets(profiles, _day(days=3), incidents=[incident])
    mobile = {p.segment_id for p in profiles if p.criteria["device"] == "mobile"}

    def ctr_of(df, *, is_mobile: bool, peak: bool) -> float:
        in_peak = _local_hours(df).between(18, 21)
        return _ctr(df[(df["segment"].isin(mobile) == is_mobile) & (in_peak == peak)])

    assert ctr_of(hit, is_mobile=True, peak=True) == pytest.approx(0.4 * ctr_of(clean, is_mobile=True, peak=True),
                                                                   rel=0.1)
    assert ctr_of(hit, is_mobile=True, peak=False) == ctr_of(clean, is_mobile=True, peak=False)
    # Same rates for desktop; the draws differ a little because the segments share one stream.
    assert ctr_of(hit, is_mobile=False, peak=True) == pytest.approx(ctr_of(clean, is_mobile=False, peak=True),
                                                                    rel=0.05)


def test_incident__outside_its_time_range__changes_nothing():
    profiles = _profiles()
    buckets = _day()
    incident = Incident("later", {"device": "mobile"}, {"ctr": 0.1}, starts_at=buckets[-1] + timedelta(hours=1))
    clean = _simulator().simulate_buckets(profiles, buckets)
    pd.testing.assert_frame_equal(clean, _simulator().simulate_buckets(profiles, buckets, incidents=[incident]))


def test_incident__starting_mid_bucket__weighs_in_pro_rata():
    profiles = _profiles(budget=1_000_000.0)
    buckets = _day()[10:20]
    halfway = [Incident("blank", {}, {"ctr": 0.0}, starts_at=b + timedelta(minutes=30)) for b in buckets]
    clean = _simulator().simulate_buckets(profiles, buckets)
    for bucket, incident in zip(buckets, halfway, strict=True):
        hit = _simulator().simulate_buckets(profiles, [bucket], incidents=[incident])
        same_bucket = clean[clean["bucket_start"] == pd.Timestamp(bucket)]
        assert _ctr(hit) == pytest.approx(0.5 * _ctr(same_bucket), rel=0.1)


def test_incident__matching_a_list_of_channels__hits_only_those():
    profiles = _profiles(8, budget=1_000_000.0)
    incident = Incident("blackout", {"channel": ["display", "video"]}, {"reach": 0.0})
    df = _simulator().simulate_buckets(profiles, _day()[18:20], incidents=[incident])
    by_channel = df.groupby(df["segment"].map({p.segment_id: p.channel for p in profiles}))["impressions"].sum()
    assert by_channel["display"] == by_channel["video"] == 0
    assert by_channel["search"] > 0 and by_channel["social"] > 0


def test_incident__unknown_effect__is_refused():
    with pytest.raises(ValueError, match="Unknown incident effect"):
        Incident("typo", {"device": "mobile"}, {"click_rate": 0.5})


# --- buckets and rows ------------------------------------------------------------------------------


def test_bucket_floor__aligns_on_utc_epoch_minutes_whatever_the_offset():
    moment = datetime(2026, 3, 29, 3, 7, 30, tzinfo=ZoneInfo(PARIS))  # the morning Paris moves to summer time
    assert bucket_floor(moment, bucket_minutes=15) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_bucket_range__a_day_of_quarter_hours__has_96_buckets_15_minutes_apart():
    buckets = _day(bucket_minutes=15)
    assert len(buckets) == 96
    assert {b - a for a, b in zip(buckets, buckets[1:], strict=False)} == {timedelta(minutes=15)}


def test_rows_for_ingestion__carries_ids_iso_buckets_counters_and_money():
    df = _simulator().simulate_buckets(_profiles(2), _day()[19:20])
    rows = rows_for_ingestion(df)
    assert len(rows) == 2
    row = rows[0]
    assert row["segment"] == 1
    assert datetime.fromisoformat(row["bucket_start"]) == _day()[19]
    assert set(COUNTER_FIELDS) <= set(row) and all(isinstance(row[name], int) for name in COUNTER_FIELDS)
    assert str(row["spend"]) == f"{df['spend'].iloc[0]:.2f}"


def test_simulator_of_10000_segments__simulates_one_bucket_vectorised():
    profiles = _profiles(10_000)
    df = _simulator().simulate_buckets(profiles, _day()[19:20])
    assert len(df) == 10_000
    assert np.issubdtype(df["impressions"].dtype, np.integer)


@pytest.mark.django_db
def test_profiles_from_queryset__reads_channel_criteria_and_delivery():
    campaign = CampaignFactory(channel="video")
    live = SegmentFactory(campaign=campaign, criteria={"device": "desktop"})
    SegmentFactory(campaign=campaign, status=DeliveryStatus.PAUSED)
    profiles = profiles_from_queryset(campaign.segments.all())
    assert [p.delivering for p in profiles] == [True, False]
    assert profiles[0] == SegmentProfile(live.pk, campaign.pk, "video", {"device": "desktop"}, bid=1.0,
                                         daily_budget=100.0)
