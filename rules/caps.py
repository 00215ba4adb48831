"""Caps: the layered limits a requested change passes through before it is proposed.

Each cap is a pure function of (current value, value requested so far, the cap's inputs,
its limit). It returns a value between the current and the requested one, ends included,
and one report entry: `{"cap", "limit", "source", "bound", "detail"}`. A cap only ever
shortens a change, never reverses or lengthens it, so caps compose; a change shortened to
nothing (capped value == current value) is *blocked*.

Numeric fields (bid, daily budget) pass, in this order:
  target_bounds   the target's own floor and ceiling (segment bid/budget floor and ceiling);
  rule_bounds     rule.value_floor / value_ceiling, when set;
  max_step        |new - current| <= p x current, p = min(rule.max_step_pct, workspace guardrail);
  rolling_window  the rule's window (max_change_per_window_pct over cap_window_minutes) and the
                  workspace guardrail's (guardrail_max_change_per_hour_pct over 60 minutes);
                  see `cap_rolling_window` for the exact guarantee;
  channel_share   budget increases only; see `cap_channel_share`.
Every field (also status and rotation order) then passes:
  cooldown        no change within rule.cooldown_minutes of the last applied change to the
                  same target and field (by anyone: rule, person or rollback);
  actions_per_day at most min(rule.max_actions_per_day, workspace guardrail) applied actions of
                  the rule in the 24 hours before now (rolling, so no burst across midnight).
                  Once it is used up it is checked first and alone: the change is blocked and its
                  report names that cap only (`cap_past_daily_limit`).

Money is rounded to the 4 decimals of the database *towards the current value*, so rounding
can only make a change smaller and never pushes it past a cap.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from .targets import QUANTUM, Value

HUNDRED = Decimal(100)
WORKSPACE_WINDOW_MINUTES = 60
ACTIONS_DAY = timedelta(days=1)
RULE, WORKSPACE = "rule", "workspace guardrail"


@dataclass(frozen=True)
class Limit:
    value: Decimal | int
    source: str  # RULE or WORKSPACE: which setting is the tighter one


def tighter(rule_value: Decimal | int | None, workspace_value: Decimal | int) -> Limit:
    """The smaller of a rule's setting and the workspace guardrail over it (a guardrail always wins)."""
    if rule_value is not None and rule_value <= workspace_value:
        return Limit(rule_value, RULE)
    return Limit(workspace_value, WORKSPACE)


@dataclass(frozen=True)
class WindowLimit:
    name: str
    pct: Limit
    minutes: int


@dataclass(frozen=True)
class AppliedStep:
    """One applied change of the target+field the caps look at."""

    applied_at: datetime
    old_value: Value
    new_value: Value


@dataclass(frozen=True)
class ChannelBudget:
    """Daily budgets summed over the workspace (see `cap_channel_share` for what is summed)."""

    channel: str
    channel_total: Decimal
    workspace_total: Decimal


@dataclass(frozen=True)
class CapInputs:
    now: datetime
    history: Sequence[AppliedStep] = ()  # applied changes of this target+field, any order
    actions_in_day: int = 0  # the rule's actions in the 24 hours before `now`
    floor: Decimal | None = None  # the target's own bounds for this field
    ceiling: Decimal | None = None
    channel: ChannelBudget | None = None  # None: the channel share cap does not apply

    @property
    def last_applied_at(self) -> datetime | None:
        return max((step.applied_at for step in self.history), default=None)


@dataclass(frozen=True)
class Limits:
    """A rule's cap settings, each already bounded by its workspace guardrail."""

    max_step: Limit
    windows: tuple[WindowLimit, ...]
    cooldown_minutes: int
    actions_per_day: Limit
    channel_share: Limit
    rule_floor: Decimal | None = None
    rule_ceiling: Decimal | None = None

    @classmethod
    def for_rule(cls, rule) -> "Limits":
        workspace = rule.workspace
        return cls(
            max_step=tighter(rule.max_step_pct, workspace.guardrail_max_step_pct),
            windows=(
                WindowLimit("rule_window", Limit(rule.max_change_per_window_pct, RULE), rule.cap_window_minutes),
                WindowLimit("workspace_hour", Limit(workspace.guardrail_max_change_per_hour_pct, WORKSPACE),
                            WORKSPACE_WINDOW_MINUTES),
            ),
            cooldown_minutes=rule.cooldown_minutes,
            actions_per_day=tighter(rule.max_actions_per_day, workspace.guardrail_max_actions_per_rule_per_day),
            channel_share=tighter(rule.max_channel_share_pct, workspace.guardrail_max_channel_share_pct),
            rule_floor=rule.value_floor,
            rule_ceiling=rule.value_ceiling,
        )

    @property
    def history_minutes(self) -> int:
        """How far back the caps look at applied changes of one target."""
        return max([self.cooldown_minutes, *(w.minutes for w in self.windows)])


@dataclass
class Capped:
    value: Value
    report: list[dict] = field(default_factory=list)


def _entry(cap: str, limit: str, source: str, bound: bool, detail: str = "") -> dict:
    return {"cap": cap, "limit": limit, "source": source, "bound": bound, "detail": detail}


def _pct(value: Decimal) -> str:
    return f"{Decimal(value).normalize():f}%"


def move_toward(current: Decimal, requested: Decimal, *, lo: Decimal | None = None,
                hi: Decimal | None = None) -> Decimal:
    """`requested` clamped into [lo, hi], but never past `current` in the other direction.

    When `current` already lies outside [lo, hi] (a bound was tightened after the value was
    set), a change further out is blocked and a change back towards the band is allowed.
    """
    if requested > current:
        value = requested if hi is None else min(requested, hi)
        return max(current, value).quantize(QUANTUM, rounding=ROUND_FLOOR)
    if requested < current:
        value = requested if lo is None else max(requested, lo)
        return min(current, value).quantize(QUANTUM, rounding=ROUND_CEILING)
    return current


# --- numeric caps ------------------------------------------------------------------------

def cap_bounds(current: Decimal, requested: Decimal, *, floor: Decimal | None, ceiling: Decimal | None,
               name: str, source: str) -> tuple[Decimal, dict]:
    value = move_toward(current, requested, lo=floor, hi=ceiling)
    limit = f"[{'-' if floor is None else floor}, {'-' if ceiling is None else ceiling}]"
    bound = value != requested
    detail = f"kept within {limit}" if bound else ""
    return value, _entry(name, limit, source, bound, detail)


def cap_max_step(current: Decimal, requested: Decimal, *, pct: Limit) -> tuple[Decimal, dict]:
    allowed = current * pct.value / HUNDRED
    value = move_toward(current, requested, lo=current - allowed, hi=current + allowed)
    bound = value != requested
    detail = f"one change may move {current} by at most {allowed.quantize(QUANTUM)}" if bound else ""
    return value, _entry("max_step", _pct(pct.value), pct.source, bound, detail)


def cap_rolling_window(current: Decimal, requested: Decimal, *, history: Sequence[AppliedStep], now: datetime,
                       window: WindowLimit) -> tuple[Decimal, dict]:
    """Net change per rolling window: for EVERY window of `window.minutes`, in both directions,
    |value at its end - value at its start| <= pct x value at its start.

    A new value at `now` ends windows that start anywhere in [now - W, now), so it is checked
    against every value the target held in that span: the value at the span's start (the old
    value of the first change applied in it) and every value since (each change's old and new
    value, and the current value). It must lie within pct of each: above max(v) x (1 - p) and
    below min(v) x (1 + p). Comparing only with the span's start value would let a cut followed
    by a raise move the value by almost 2p within one window.
    """
    since = now - timedelta(minutes=window.minutes)
    held = [current]
    for step in history:
        if step.applied_at > since:
            held += [step.old_value, step.new_value]
    p = window.pct.value / HUNDRED
    lo, hi = max(held) * (1 - p), min(held) * (1 + p)
    value = move_toward(current, requested, lo=lo, hi=hi)
    bound = value != requested
    detail = ""
    if bound:
        detail = (f"values held in the last {window.minutes} min range {min(held)}-{max(held)}; "
                  f"a new value must stay within [{lo.quantize(QUANTUM)}, {hi.quantize(QUANTUM)}]")
    return value, _entry(window.name, f"{_pct(window.pct.value)} per {window.minutes} min", window.pct.source,
                         bound, detail)


def cap_channel_share(current: Decimal, requested: Decimal, *, channel: ChannelBudget,
                      pct: Limit) -> tuple[Decimal, dict]:
    """A budget increase may not lift its channel above pct of the workspace's daily budget.

    channel_total = C and workspace_total = T include the target's current budget. Raising it
    by d gives the share (C + d) / (T + d) <= s, i.e. d <= (s x T - C) / (1 - s). A channel
    already above its share gets no increase; decreases are never limited. A workspace whose
    whole budget is in one channel is at 100%, so its increases need a share limit of 100%.
    """
    s = pct.value / HUNDRED
    if requested <= current or s >= 1:
        return requested, _entry("channel_share", _pct(pct.value), pct.source, False)
    headroom = max((s * channel.workspace_total - channel.channel_total) / (1 - s), Decimal(0))
    value = move_toward(current, requested, hi=current + headroom)
    bound = value != requested
    detail = ""
    if bound:
        share = channel.channel_total / channel.workspace_total * HUNDRED if channel.workspace_total else HUNDRED
        detail = (f"{channel.channel} holds {share.quantize(Decimal('0.01'))}% of the workspace's daily budget; "
                  f"room for +{headroom.quantize(QUANTUM)}")
    return value, _entry("channel_share", _pct(pct.value), pct.source, bound, detail)


# --- caps on every field -------------------------------------------------------------------

def cap_cooldown(current: Value, requested: Value, *, last_applied_at: datetime | None, now: datetime,
                 minutes: int) -> tuple[Value, dict]:
    next_allowed = last_applied_at + timedelta(minutes=minutes) if last_applied_at else None
    bound = requested != current and next_allowed is not None and now < next_allowed
    detail = ""
    if bound:
        detail = f"last change at {last_applied_at.isoformat()}; next allowed at {next_allowed.isoformat()}"
    return (current if bound else requested), _entry("cooldown", f"{minutes} min", RULE, bound, detail)


def cap_actions_per_day(current: Value, requested: Value, *, actions_in_day: int,
                        limit: Limit) -> tuple[Value, dict]:
    bound = requested != current and actions_in_day >= limit.value
    detail = f"{actions_in_day} actions in the last 24 hours" if bound else ""
    return (current if bound else requested), _entry("actions_per_day", f"{limit.value} per 24 h", limit.source,
                                                     bound, detail)


# --- composition -----------------------------------------------------------------------------

def cap_change(current: Value, requested: Value, *, limits: Limits, inputs: CapInputs) -> Capped:
    """Every cap in order; the result names each cap considered, its limit and whether it bound."""
    past_limit = cap_past_daily_limit(current, requested, limits=limits, actions_in_day=inputs.actions_in_day)
    if past_limit is not None:
        return past_limit
    result = Capped(requested)
    if isinstance(current, Decimal):
        result.value = move_toward(current, requested)  # to the database's 4 decimals, towards current
        _apply_numeric_caps(result, current, limits, inputs)
    for cap in (
        lambda v: cap_cooldown(current, v, last_applied_at=inputs.last_applied_at, now=inputs.now,
                               minutes=limits.cooldown_minutes),
        lambda v: cap_actions_per_day(current, v, actions_in_day=inputs.actions_in_day, limit=limits.actions_per_day),
    ):
        result.value, entry = cap(result.value)
        result.report.append(entry)
    return result


def cap_past_daily_limit(current: Value, requested: Value, *, limits: Limits, actions_in_day: int) -> Capped | None:
    """The change blocked by the rule's used-up daily limit, its report naming that cap alone; None when the
    limit is not used up or the change does not move (then every cap has its say, `cap_change`).

    Once the limit is used up the change is blocked whatever the other caps say, and no other cap can
    bind a change that no longer moves. Reporting that one cap alone spares the thousands of segments a
    broad rule keeps firing on once its limit is reached, and the reads of the other caps' inputs.
    """
    if not (daily_limit_used_up(limits, actions_in_day) and moves(current, requested)):
        return None
    value, entry = cap_actions_per_day(current, requested, actions_in_day=actions_in_day, limit=limits.actions_per_day)
    return Capped(value, [entry])


def daily_limit_used_up(limits: Limits, actions_in_day: int) -> bool:
    return actions_in_day >= limits.actions_per_day.value


def moves(current: Value, requested: Value) -> bool:
    """Whether a change still moves once rounded to the database's decimals, towards the current value."""
    return (move_toward(current, requested) if isinstance(current, Decimal) else requested) != current


def _apply_numeric_caps(result: Capped, current: Decimal, limits: Limits, inputs: CapInputs) -> None:
    caps = [
        lambda v: cap_bounds(current, v, floor=inputs.floor, ceiling=inputs.ceiling, name="target_bounds",
                             source="target"),
    ]
    if limits.rule_floor is not None or limits.rule_ceiling is not None:
        caps.append(lambda v: cap_bounds(current, v, floor=limits.rule_floor, ceiling=limits.rule_ceiling,
                                         name="rule_bounds", source=RULE))
    caps.append(lambda v: cap_max_step(current, v, pct=limits.max_step))
    for window in limits.windows:
        caps.append(lambda v, w=window: cap_rolling_window(current, v, history=inputs.history, now=inputs.now,
                                                           window=w))
    if inputs.channel is not None:
        caps.append(lambda v: cap_channel_share(current, v, channel=inputs.channel, pct=limits.channel_share))
    for cap in caps:
        result.value, entry = cap(result.value)
        result.report.append(entry)
