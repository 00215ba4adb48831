"""A realistic mix of rules: scopes of every kind, every trigger kind, windows and baselines.

Most marketers scope a rule to a campaign, some narrow it to a device, and a few watch a whole
channel or the whole workspace. Rules sharing a scope share its aggregates in the engine, so the
mix decides how much that cache saves: 100 rules over 10 campaigns make about 40 scopes, and the
report gives the count of every run.
"""

import random
from collections.abc import Callable
from decimal import Decimal

from audit.actors import Actor
from campaigns.simulator import CHANNEL_MARKETS
from rules.models import Rule, Trigger
from rules.services import rule_activate, rule_create

from .dataset import DEVICES, INTENTS, SEED, Market
from .progress import Progress

BENCH_ACTOR = Actor.system("benchmark")
WINDOWS = (60, 120, 180, 240)
BASELINE_DAYS = (1, 3, 7, 13)
ACTIONS = ((Rule.Action.BID_PCT, Decimal("-10")), (Rule.Action.BUDGET_PCT, Decimal("-10")), (Rule.Action.ALERT, None))
Kind, Direction = Trigger.Kind, Trigger.Direction


def create_rules(market: Market, count: int, *, days: int, progress: Progress) -> list[Rule]:
    """`count` active rules over the market, always the same for the same market and count."""
    rng = random.Random(SEED)
    progress.start("creating rules", total=count, unit="rules")
    rules = []
    for i in range(count):
        scope = _scope(rng, market, i)
        triggers = [_trigger(rng, Kind.values[(i + k) % len(Kind.values)], scope, days=days)
                    for k in range(1 + (i % 3 == 0))]
        action, value = ACTIONS[rng.randrange(len(ACTIONS))]
        rule = rule_create(actor=BENCH_ACTOR, workspace=market.workspace, owner=market.owner,
                           name=f"Bench rule {i:04d}", triggers=triggers, action=action, action_value=value,
                           match=rng.choice(Rule.Match.values), **scope)
        rules.append(rule_activate(actor=BENCH_ACTOR, rule=rule))
        progress.advance()
    progress.finish()
    return rules


# --- scopes: (share of the rules, how to draw one) ---------------------------------------------

def _campaign(rng, market):
    return {"campaigns": [rng.choice(market.campaigns)]}


def _campaign_device(rng, market):
    return {**_campaign(rng, market), "segment_filter": {"device": rng.choice(DEVICES)}}


def _channel(rng, market):
    return {"channel": rng.choice(market.campaigns).channel}


def _channel_device(rng, market):
    return {**_channel(rng, market), "segment_filter": {"device": rng.choice(DEVICES)}}


def _workspace_device_intent(rng, market):
    return {"segment_filter": {"device": rng.choice(DEVICES), "intent": rng.choice(INTENTS)}}


_SCOPES: tuple[tuple[int, Callable], ...] = (
    (50, _campaign), (20, _campaign_device), (15, _channel_device), (10, _channel), (5, _workspace_device_intent),
)


def _scope(rng: random.Random, market: Market, index: int) -> dict:
    # 61 is prime to 100: every hundred rules visit every slot once, in a scattered order, so
    # that a few dozen rules already mix every kind of scope.
    slot = index * 61 % 100
    for share, draw in _SCOPES:
        if slot < share:
            return draw(rng, market)
        slot -= share
    raise AssertionError("the shares add up to 100")


# --- triggers --------------------------------------------------------------------------------

def _trigger(rng: random.Random, kind: str, scope: dict, *, days: int) -> dict:
    window = rng.choice(WINDOWS)
    consecutive = rng.choice((1, 1, 1, 2))
    # Baselines end where the windows start: the whole lookback must fit in the loaded days.
    longest_baseline = days * 1440 - window * consecutive
    baseline = min(rng.choice(BASELINE_DAYS) * 1440, longest_baseline // window * window)
    settings = {"kind": kind, "window_minutes": window, "baseline_minutes": baseline,
                "consecutive_windows": consecutive, "min_sample": 100}
    return settings | _KIND_SETTINGS[kind](rng, _base_ctr(scope))


def _base_ctr(scope: dict) -> float:
    channel = scope["campaigns"][0].channel if scope.get("campaigns") else scope.get("channel")
    return CHANNEL_MARKETS[channel].ctr if channel else min(m.ctr for m in CHANNEL_MARKETS.values())


def _threshold(rng, base_ctr):
    return rng.choice((
        {"metric": "ctr", "direction": Direction.BELOW, "threshold": Decimal(f"{base_ctr * 0.6:.6f}")},
        {"metric": "spend_pace", "direction": Direction.ABOVE, "threshold": Decimal("1.2"), "min_sample": 0},
        {"metric": "roas", "direction": Direction.BELOW, "threshold": Decimal("0.5"), "min_sample": 10},
    ))


def _relative_change(rng, base_ctr):
    metric = rng.choice(("ctr", "micro_conversion_rate", "avg_dwell", "cvr"))
    return {"metric": metric, "direction": Direction.BELOW, "threshold": Decimal("30")}


def _significant_change(rng, base_ctr):
    metric, direction = rng.choice((("ctr", Direction.BELOW), ("micro_conversion_rate", Direction.BELOW),
                                    ("bounce_rate", Direction.ABOVE)))
    return {"metric": metric, "direction": direction, "confidence": Decimal("0.95")}


def _control_limit(rng, base_ctr):
    metric, direction = rng.choice((("ctr", Direction.BELOW), ("micro_conversion_rate", Direction.BELOW),
                                    ("cpc", Direction.ABOVE)))
    return {"metric": metric, "direction": direction, "k_sigma": Decimal("3")}


_KIND_SETTINGS = {
    Kind.THRESHOLD: _threshold, Kind.RELATIVE_CHANGE: _relative_change,
    Kind.SIGNIFICANT_CHANGE: _significant_change, Kind.CONTROL_LIMIT: _control_limit,
}
