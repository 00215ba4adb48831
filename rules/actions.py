"""What a rule's action asks for when it fires, before any cap.

Targets, per action (the fired segments are those the triggers decided on, in the rule's
workspace; archived segments and creatives are never touched):
  bid_pct / budget_pct      each fired segment's bid / daily budget x (1 + action_value / 100);
  set_bid / set_budget      each fired segment's bid / daily budget := action_value;
  pause_ / resume_segment   each fired segment that is active / paused;
  pause_creative            the active creatives of the fired segments' campaigns (creatives
                            belong to a campaign, not to a segment), or only those listed in
                            action_params["creative_ids"]. A campaign's last active creative is
                            never paused: the first in rotation order keeps serving;
  resume_creative           the paused creatives of those campaigns (or of the listed ones);
  rotate_creative           per campaign, the first active creative in rotation order moves to
                            the back (its rotation_order becomes the campaign's highest + 1), so
                            the next one serves first; one change per campaign, to one row;
  reallocate_budget         per campaign, action_value % of each fired segment's daily budget
                            moves to the campaign's best non-fired active segments (see
                            `reallocations_for`); the pipeline caps and balances it so that the
                            campaign's total is conserved exactly;
  alert                     no change: the pipeline records an audit event (see rules.pipeline);
  escalate_alert            the pipeline alerts the approvers; with action_params {"pause": true}
                            each fired segment that is active is paused too.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import NamedTuple

from django.db.models import Q, Sum

from accounts.exceptions import ApplicationError
from campaigns.holdouts import exclude_held_out
from campaigns.metrics import VIRTUAL_DENOMINATORS, get_metric
from campaigns.models import Campaign, Creative, DeliveryStatus, Segment

from .models import Change, Rule
from .targets import QUANTUM, Target, Value

DEFAULT_RANK_METRIC = "roas"
DEFAULT_RECEIVER_COUNT = 2
HUNDRED = Decimal(100)
Field = Change.Field


@dataclass(frozen=True)
class ActionInput:
    rule: Rule
    segments: list[Segment]  # the fired segments (campaign loaded), by id
    window_start: datetime
    window_end: datetime

    @property
    def value(self) -> Decimal:
        return self.rule.action_value

    @property
    def params(self) -> dict:
        return self.rule.action_params or {}

    def live_segments(self) -> list[Segment]:
        return [s for s in self.segments if s.status != DeliveryStatus.ARCHIVED]


class ChangeRequest(NamedTuple):
    """One change an action asks for (a tuple: a broad rule asks for thousands)."""

    target: Target
    field: str
    old_value: Value
    requested_value: Value
    reason: str


def requests_for(action_input: ActionInput) -> Iterator[ChangeRequest]:
    """The requested changes of every action but reallocation and alert, in a stable order.

    One at a time: a broad rule asks for thousands, which its daily limit mostly blocks, and the
    caller keeps no more of each than what it planned.
    """
    requests = _REQUESTS[action_input.rule.action](action_input)
    return (r for r in requests if r.requested_value != r.old_value)


def _reason(action_input: ActionInput, what: str) -> str:
    return f"{_rule_says(action_input)}{what}"


def _rule_says(action_input: ActionInput) -> str:
    return f"Rule “{action_input.rule.name}” (v{action_input.rule.version}): "


def _scaled(pct: Decimal) -> Callable[[Decimal], Decimal]:
    factor = 1 + pct / HUNDRED
    return lambda value: (value * factor).quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def _set_to(value: Decimal) -> Callable[[Decimal], Decimal]:
    value = value.quantize(QUANTUM)
    return lambda _old: value


def _numeric(field_name: str, attr: str, new_value: Callable[[Decimal], Callable[[Decimal], Decimal]], label: str):
    """Requests for each live fired segment's `attr`: `new_value(action value)` gives its new value from its old."""
    def build(ai: ActionInput) -> Iterator[ChangeRequest]:
        new_value_of, rule_says = new_value(ai.value), _rule_says(ai)
        for s in ai.live_segments():
            old = getattr(s, attr)
            yield ChangeRequest(s, field_name, old, new_value_of(old), f"{rule_says}{label} on {s.name}")

    return build


def _segment_status(status: str, label: str):
    def build(ai: ActionInput) -> Iterator[ChangeRequest]:
        return (ChangeRequest(s, Field.STATUS, s.status, status, _reason(ai, f"{label} {s.name}"))
                for s in ai.live_segments())

    return build


def _creatives_by_campaign(ai: ActionInput) -> dict[int, list[Creative]]:
    """Non-archived creatives of the fired segments' campaigns, in rotation order."""
    creatives = Creative.objects.filter(campaign_id__in={s.campaign_id for s in ai.segments}).exclude(
        status=DeliveryStatus.ARCHIVED
    ).order_by("campaign_id", "rotation_order", "name", "id")
    by_campaign: dict[int, list[Creative]] = defaultdict(list)
    for creative in creatives:
        by_campaign[creative.campaign_id].append(creative)
    return by_campaign


def _listed(ai: ActionInput, creatives: list[Creative]) -> list[Creative]:
    listed = ai.params.get("creative_ids")
    if listed is None:
        return creatives
    wanted = {int(pk) for pk in listed}
    return [c for c in creatives if c.pk in wanted]


def _pause_creatives(ai: ActionInput) -> list[ChangeRequest]:
    requests = []
    for creatives in _creatives_by_campaign(ai).values():
        active = [c for c in creatives if c.status == DeliveryStatus.ACTIVE]
        chosen = _listed(ai, active)
        if active and len(chosen) == len(active):
            chosen = chosen[1:]  # keep the first in rotation serving
        requests += [ChangeRequest(c, Field.STATUS, c.status, DeliveryStatus.PAUSED, _reason(ai, f"pause {c.name}"))
                     for c in chosen]
    return requests


def _resume_creatives(ai: ActionInput) -> list[ChangeRequest]:
    return [
        ChangeRequest(c, Field.STATUS, c.status, DeliveryStatus.ACTIVE, _reason(ai, f"resume {c.name}"))
        for creatives in _creatives_by_campaign(ai).values()
        for c in _listed(ai, [c for c in creatives if c.status == DeliveryStatus.PAUSED])
    ]


def _rotate_creatives(ai: ActionInput) -> list[ChangeRequest]:
    requests = []
    for creatives in _creatives_by_campaign(ai).values():
        active = [c for c in creatives if c.status == DeliveryStatus.ACTIVE]
        if len(active) < 2:
            continue
        first, back = active[0], max(c.rotation_order for c in creatives) + 1
        requests.append(ChangeRequest(first, Field.ROTATION_ORDER, first.rotation_order, back,
                                      _reason(ai, f"rotate: {first.name} to the back, {active[1].name} serves first")))
    return requests


_REQUESTS: dict[str, Callable[[ActionInput], Iterable[ChangeRequest]]] = {
    Rule.Action.BID_PCT: _numeric(Field.BID, "bid", _scaled, "bid change"),
    Rule.Action.BUDGET_PCT: _numeric(Field.DAILY_BUDGET, "daily_budget", _scaled, "budget change"),
    Rule.Action.SET_BID: _numeric(Field.BID, "bid", _set_to, "set bid"),
    Rule.Action.SET_BUDGET: _numeric(Field.DAILY_BUDGET, "daily_budget", _set_to, "set budget"),
    Rule.Action.PAUSE_SEGMENT: _segment_status(DeliveryStatus.PAUSED, "pause"),
    Rule.Action.RESUME_SEGMENT: _segment_status(DeliveryStatus.ACTIVE, "resume"),
    Rule.Action.PAUSE_CREATIVE: _pause_creatives,
    Rule.Action.RESUME_CREATIVE: _resume_creatives,
    Rule.Action.ROTATE_CREATIVE: _rotate_creatives,
    Rule.Action.ESCALATE_ALERT: lambda ai: (
        _segment_status(DeliveryStatus.PAUSED, "pause (guard metric broke its limit)")(ai)
        if ai.params.get("pause") else []
    ),
}


# --- reallocation ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Reallocation:
    """One campaign's requested transfer, before caps."""

    campaign: Campaign
    givers: list[Segment]  # the campaign's fired segments, by id
    cuts: list[Decimal]  # what each giver is asked to give: action_value % of its budget
    receivers: list[Segment]  # the best non-fired active segments, best first
    scores: dict[int, float] = field(default_factory=dict)  # rank metric per receiver
    rank_metric: str = DEFAULT_RANK_METRIC


def reallocations_for(ai: ActionInput) -> list[Reallocation]:
    """Per campaign of the fired segments: who gives how much, and who may receive.

    Receivers are the campaign's active segments that did not fire and are not held out, ranked by
    action_params["rank_metric"] (default roas) over the evaluation window, best first;
    the top action_params["receiver_count"] (default 2) with data in the window receive.
    A campaign with no receiver moves nothing.
    """
    metric_name = ai.params.get("rank_metric", DEFAULT_RANK_METRIC)
    givers_by_campaign: dict[int, list[Segment]] = defaultdict(list)
    for segment in ai.live_segments():
        givers_by_campaign[segment.campaign_id].append(segment)
    ranked = _ranked_receivers(ai, metric_name, fired_ids={s.pk for s in ai.segments},
                               campaign_ids=list(givers_by_campaign))
    count = max(1, int(ai.params.get("receiver_count", DEFAULT_RECEIVER_COUNT)))
    plans = []
    for campaign_id, givers in sorted(givers_by_campaign.items()):
        best = ranked.get(campaign_id, [])[:count]
        if not best:
            continue
        plans.append(Reallocation(
            campaign=givers[0].campaign,
            givers=givers,
            cuts=[(g.daily_budget * ai.value / HUNDRED).quantize(QUANTUM, rounding=ROUND_FLOOR) for g in givers],
            receivers=[segment for segment, _ in best],
            scores={segment.pk: score for segment, score in best},
            rank_metric=metric_name,
        ))
    return plans


def _ranked_receivers(ai: ActionInput, metric_name: str, *, fired_ids: set[int],
                      campaign_ids: list[int]) -> dict[int, list[tuple[Segment, float]]]:
    """Candidate receivers with their metric over the window, aggregated in ONE query."""
    metric = get_metric(metric_name)
    if metric.denominator in VIRTUAL_DENOMINATORS or metric.numerator in VIRTUAL_DENOMINATORS:
        raise ApplicationError(f"Segments cannot be ranked by {metric.label.lower()}; choose a stored metric.",
                               extra={"rank_metric": metric_name})
    in_window = Q(metric_facts__bucket_start__gte=ai.window_start, metric_facts__bucket_start__lt=ai.window_end)
    candidates = (
        exclude_held_out(Segment.objects.filter(campaign_id__in=campaign_ids, status=DeliveryStatus.ACTIVE))
        .exclude(pk__in=fired_ids)
        .select_related("campaign")
        .annotate(rank_num=Sum(f"metric_facts__{metric.numerator}", filter=in_window),
                  rank_den=Sum(f"metric_facts__{metric.denominator}", filter=in_window))
    )
    ranked: dict[int, list[tuple[Segment, float]]] = defaultdict(list)
    for segment in candidates:
        score = metric.value(float(segment.rank_num or 0), float(segment.rank_den or 0))
        if score is not None:
            ranked[segment.campaign_id].append((segment, score))
    sign = -1 if metric.higher_is_better else 1
    for entries in ranked.values():
        entries.sort(key=lambda entry: (sign * entry[1], entry[0].pk))
    return ranked


def split_exactly(total: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """Split `total` in proportion to `weights`, in units of QUANTUM, summing to `total` exactly.

    Largest-remainder method in integer units: each part is floored, and the units left over
    (fewer than the number of parts) go one each to the largest remainders, ties to the
    earliest part (callers list the best or first party first). When total <= sum(weights),
    no part exceeds its weight: a floored part below its weight is at least one unit below it.
    """
    units = int((total / QUANTUM).to_integral_value())
    weight_units = [int((w / QUANTUM).to_integral_value()) for w in weights]
    whole = sum(weight_units)
    if units < 0 or whole <= 0:
        raise ValueError("split_exactly needs a non-negative total and positive weights")
    parts = [units * w // whole for w in weight_units]
    remainders = [units * w % whole for w in weight_units]
    left = units - sum(parts)
    for index in sorted(range(len(parts)), key=lambda i: (-remainders[i], i))[:left]:
        parts[index] += 1
    return [Decimal(p) * QUANTUM for p in parts]
