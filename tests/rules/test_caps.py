"""Caps as pure functions: each binding on its own with its report, and as properties over time."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.caps import (
    RULE,
    WORKSPACE,
    AppliedStep,
    CapInputs,
    ChannelBudget,
    Limit,
    Limits,
    WindowLimit,
    cap_actions_per_day,
    cap_bounds,
    cap_change,
    cap_channel_share,
    cap_cooldown,
    cap_max_step,
    cap_past_daily_limit,
    cap_rolling_window,
    move_toward,
    tighter,
)

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
D = Decimal


def limits(**overrides) -> Limits:
    values = {
        "max_step": Limit(D("10"), RULE),
        "windows": (WindowLimit("rule_window", Limit(D("10"), RULE), 60),),
        "cooldown_minutes": 0,
        "actions_per_day": Limit(100, RULE),
        "channel_share": Limit(D("100"), WORKSPACE),
    }
    return Limits(**{**values, **overrides})


def by_cap(report: list[dict]) -> dict[str, dict]:
    return {entry["cap"]: entry for entry in report}


# --- each cap on its own ---------------------------------------------------------------------

def test_tighter__the_workspace_guardrail_wins_over_a_wider_rule_setting():
    assert tighter(D("30"), D("20")) == Limit(D("20"), WORKSPACE)
    assert tighter(D("5"), D("20")) == Limit(D("5"), RULE)
    assert tighter(None, 24) == Limit(24, WORKSPACE)


def test_cap_max_step__a_larger_raise__is_cut_to_the_step_and_reported():
    value, entry = cap_max_step(D("2.0000"), D("3.0000"), pct=Limit(D("10"), RULE))
    assert value == D("2.2000")
    assert entry == {"cap": "max_step", "limit": "10%", "source": RULE, "bound": True,
                     "detail": "one change may move 2.0000 by at most 0.2000"}


def test_cap_max_step__a_change_within_the_step__does_not_bind():
    value, entry = cap_max_step(D("2.0000"), D("1.9000"), pct=Limit(D("10"), RULE))
    assert value == D("1.9000")
    assert entry["bound"] is False


def test_cap_bounds__a_cut_below_the_floor__stops_at_the_floor():
    value, entry = cap_bounds(D("1.0000"), D("0.0500"), floor=D("0.1000"), ceiling=D("5"), name="target_bounds",
                              source="target")
    assert value == D("0.1000")
    assert entry["bound"] is True and entry["limit"] == "[0.1000, 5]"


def test_cap_bounds__a_value_already_above_a_tightened_ceiling__may_come_down_but_not_go_up():
    assert cap_bounds(D("6"), D("7"), floor=None, ceiling=D("5"), name="b", source="rule")[0] == D("6")
    assert cap_bounds(D("6"), D("5.5"), floor=None, ceiling=D("5"), name="b", source="rule")[0] == D("5.5")


def test_cap_rolling_window__a_raise_after_a_raise_in_the_window__is_held_to_the_window_start():
    history = [AppliedStep(T0 - timedelta(minutes=30), D("100"), D("108"))]
    window = WindowLimit("rule_window", Limit(D("10"), RULE), 60)
    value, entry = cap_rolling_window(D("108"), D("115"), history=history, now=T0, window=window)
    assert value == D("110.0000")  # 10% above 100, the value at the window's start
    assert entry["bound"] is True and entry["limit"] == "10% per 60 min"


def test_cap_rolling_window__a_cut_then_a_raise__cannot_swing_further_than_the_cap_in_one_window():
    # 100 -> 90 twenty minutes ago. Relative to the window start (100) a raise to 110 would be
    # fine, but a window starting after the cut would see 90 -> 110 (+22%): at most 99 (90 x 1.1).
    history = [AppliedStep(T0 - timedelta(minutes=20), D("100"), D("90"))]
    window = WindowLimit("rule_window", Limit(D("10"), RULE), 60)
    value, _ = cap_rolling_window(D("90"), D("110"), history=history, now=T0, window=window)
    assert value == D("99.0000")


def test_cap_rolling_window__changes_older_than_the_window__do_not_count():
    history = [AppliedStep(T0 - timedelta(minutes=61), D("100"), D("110"))]
    window = WindowLimit("rule_window", Limit(D("10"), RULE), 60)
    value, entry = cap_rolling_window(D("110"), D("121"), history=history, now=T0, window=window)
    assert value == D("121") and entry["bound"] is False


def test_cap_channel_share__a_raise_past_the_channel_share__is_cut_to_the_share():
    # Channel at 500 of 1000 (50%), limit 60%: d <= (0.6 x 1000 - 500) / 0.4 = 250.
    channel = ChannelBudget("search", D("500"), D("1000"))
    value, entry = cap_channel_share(D("100"), D("400"), channel=channel, pct=Limit(D("60"), WORKSPACE))
    assert value == D("350.0000")
    assert (D("500") + 250) / (D("1000") + 250) == D("0.6")
    assert entry["bound"] is True and entry["source"] == WORKSPACE and "search holds 50.00%" in entry["detail"]


def test_cap_channel_share__a_channel_already_over_its_share__gets_no_raise_but_may_cut():
    channel = ChannelBudget("search", D("900"), D("1000"))
    assert cap_channel_share(D("100"), D("110"), channel=channel, pct=Limit(D("60"), WORKSPACE))[0] == D("100")
    assert cap_channel_share(D("100"), D("90"), channel=channel, pct=Limit(D("60"), WORKSPACE))[0] == D("90")


def test_cap_cooldown__a_change_within_the_cooldown__is_blocked():
    value, entry = cap_cooldown(D("1"), D("1.1"), last_applied_at=T0 - timedelta(minutes=59), now=T0, minutes=60)
    assert value == D("1") and entry["bound"] is True
    assert "next allowed at 2026-03-10T12:01:00+00:00" in entry["detail"]


def test_cap_cooldown__after_the_cooldown__the_change_passes():
    value, entry = cap_cooldown("active", "paused", last_applied_at=T0 - timedelta(minutes=60), now=T0, minutes=60)
    assert value == "paused" and entry["bound"] is False


def test_cap_actions_per_day__at_the_limit__blocks_and_names_the_guardrail():
    value, entry = cap_actions_per_day(3, 7, actions_in_day=24, limit=Limit(24, WORKSPACE))
    assert value == 3
    assert entry == {"cap": "actions_per_day", "limit": "24 per 24 h", "source": WORKSPACE, "bound": True,
                     "detail": "24 actions in the last 24 hours"}


def test_cap_change__a_numeric_change__reports_every_cap_considered_in_order():
    capped = cap_change(D("1.0000"), D("1.5000"), limits=limits(rule_floor=D("0.5"), rule_ceiling=D("1.2")),
                        inputs=CapInputs(now=T0, floor=D("0.1"), ceiling=D("5"),
                                         channel=ChannelBudget("search", D("1"), D("10"))))
    assert [e["cap"] for e in capped.report] == [
        "target_bounds", "rule_bounds", "max_step", "rule_window", "channel_share", "cooldown", "actions_per_day",
    ]
    assert capped.value == D("1.1000")
    assert {e["cap"] for e in capped.report if e["bound"]} == {"rule_bounds", "max_step"}


def test_cap_change__a_status_change__only_meets_cooldown_and_daily_actions():
    capped = cap_change("active", "paused", limits=limits(cooldown_minutes=30),
                        inputs=CapInputs(now=T0, history=[AppliedStep(T0 - timedelta(minutes=10), "paused", "active")]))
    assert [e["cap"] for e in capped.report] == ["cooldown", "actions_per_day"]
    assert capped.value == "active"  # blocked: capped to no change



def test_cap_change__once_the_daily_limit_is_used_up__blocks_naming_that_cap_alone():
    capped = cap_change(D("1.0000"), D("5.0000"), limits=limits(actions_per_day=Limit(3, RULE)),
                        inputs=CapInputs(now=T0, actions_in_day=3, floor=D("0.1"), ceiling=D("2")))
    assert capped.value == D("1.0000")
    assert [(e["cap"], e["bound"]) for e in capped.report] == [("actions_per_day", True)]


def test_cap_past_daily_limit__before_the_limit_is_used_up__leaves_the_change_to_every_cap():
    assert cap_past_daily_limit(D("1.0000"), D("5.0000"), limits=limits(actions_per_day=Limit(3, RULE)),
                                actions_in_day=2) is None


def test_cap_past_daily_limit__a_change_that_rounds_to_no_move__is_left_to_every_cap():
    used_up = limits(actions_per_day=Limit(3, RULE))
    assert cap_past_daily_limit(D("1.0000"), D("1.00004"), limits=used_up, actions_in_day=3) is None
    capped = cap_change(D("1.0000"), D("1.00004"), limits=used_up, inputs=CapInputs(now=T0, actions_in_day=3))
    assert capped.value == D("1.0000") and not any(e["bound"] for e in capped.report)


# --- properties ----------------------------------------------------------------------------------

money = st.decimals(min_value=D("0.0001"), max_value=D("10000"), places=4)


@given(current=money, requested=money, lo=money, hi=money)
def test_move_toward__lands_between_current_and_requested_and_never_past_a_bound(current, requested, lo, hi):
    lo, hi = min(lo, hi), max(lo, hi)
    value = move_toward(current, requested, lo=lo, hi=hi)
    assert min(current, requested) <= value <= max(current, requested)
    if lo <= current <= hi:
        assert lo <= value <= hi
    else:  # outside the band already (a bound was tightened): only a move back towards it
        assert _distance(value, lo, hi) <= _distance(current, lo, hi)
    assert value == value.quantize(D("0.0001"))


def _distance(value: Decimal, lo: Decimal, hi: Decimal) -> Decimal:
    return max(lo - value, value - hi, D(0))


steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=90),  # minutes since the previous request
              st.decimals(min_value=D("-60"), max_value=D("60"), places=2)),  # requested change in %
    min_size=1, max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    start=st.decimals(min_value=D("0.50"), max_value=D("100"), places=2),
    requests=steps,
    step_pct=st.decimals(min_value=D("1"), max_value=D("50"), places=1),
    window_pct=st.decimals(min_value=D("1"), max_value=D("30"), places=1),
    window_minutes=st.integers(min_value=5, max_value=180),
    cooldown=st.integers(min_value=0, max_value=45),
    daily=st.integers(min_value=1, max_value=20),
)
def test_caps__any_sequence_of_requests__keeps_every_rolling_window_every_step_and_every_bound(
    start, requests, step_pct, window_pct, window_minutes, cooldown, daily
):
    floor, ceiling = start / 4, start * 4
    cap_limits = limits(
        max_step=Limit(step_pct, RULE),
        windows=(WindowLimit("rule_window", Limit(window_pct, RULE), window_minutes),
                 WindowLimit("workspace_hour", Limit(D("10"), WORKSPACE), 60)),
        cooldown_minutes=cooldown,
        actions_per_day=Limit(daily, RULE),
    )
    now, value, timeline = T0, start.quantize(D("0.0001")), []  # timeline: (applied_at, old, new)
    for minutes, pct in requests:
        now += timedelta(minutes=minutes)
        history = [AppliedStep(t, old, new) for t, old, new in timeline]
        in_day = sum(1 for t, _, _ in timeline if t > now - timedelta(days=1))
        capped = cap_change(value, value * (1 + pct / 100),
                            limits=cap_limits, inputs=CapInputs(now=now, history=history, actions_in_day=in_day,
                                                                floor=floor, ceiling=ceiling))
        if capped.value != value:
            timeline.append((now, value, capped.value))
            value = capped.value

    _assert_within_every_cap(start, timeline, floor=floor, ceiling=ceiling, cap_limits=cap_limits)


def _value_at(start: Decimal, timeline: list, moment: datetime) -> Decimal:
    """The value the target held at `moment` (a change applied at t holds from t on)."""
    value = start.quantize(D("0.0001"))
    for applied_at, _old, new in timeline:
        if applied_at <= moment:
            value = new
    return value


def _assert_within_every_cap(start, timeline, *, floor, ceiling, cap_limits: Limits):
    for index, (applied_at, old, new) in enumerate(timeline):
        assert floor <= new <= ceiling
        assert abs(new - old) <= old * cap_limits.max_step.value / 100
        for window in cap_limits.windows:
            p = window.pct.value / 100
            span_start = applied_at - timedelta(minutes=window.minutes)
            # Every window ending at or after this change and starting in [span_start, applied_at)
            # starts at one of these values: the one held at span_start, or one set since.
            starts = [_value_at(start, timeline, span_start)] + [
                n for t, _o, n in timeline[:index] if span_start < t < applied_at
            ]
            for start_value in starts:
                assert abs(new - start_value) <= start_value * p, (window.name, start_value, new)
        if index:
            assert applied_at - timeline[index - 1][0] >= timedelta(minutes=cap_limits.cooldown_minutes)
        in_day = [t for t, _, _ in timeline if applied_at - timedelta(days=1) < t <= applied_at]
        assert len(in_day) <= cap_limits.actions_per_day.value
