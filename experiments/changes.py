"""Experiment changes (winner deployment, bandit re-weighting) through the same caps, pipeline and audit as any change.

Caps: an experiment has no rule settings of its own, so its changes are bound by the workspace
guardrails (max step, net change per hour, actions per day) plus the targets' own floors and
ceilings and a cooldown. Budget moves between an experiment's segments conserve the
campaign's total exactly (what the receivers can take is what the givers give), so the
channel-share cap, which limits growth of a channel, does not apply to them.

Recording: each change is proposed with `rules.changes.change_propose` (kind EXPERIMENT, an
idempotency key naming the experiment, purpose, target and field, so a retried task records
nothing twice). Submitting routes the batch through the workspace's approval policy as one
(`changes_route`: auto-approved, or pending for an approver) and applies what was approved as
one all-or-nothing batch (`changes_apply_approved`).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from audit.actors import Actor
from campaigns.models import Segment
from rules.actions import split_exactly
from rules.caps import (
    ACTIONS_DAY,
    WORKSPACE,
    WORKSPACE_WINDOW_MINUTES,
    CapInputs,
    Capped,
    Limit,
    Limits,
    WindowLimit,
    cap_change,
)
from rules.changes import change_propose, changes_apply_approved, changes_route
from rules.history import applied_steps
from rules.models import Change
from rules.targets import Target, Value, bounds, format_value, is_numeric, target_type

from .models import Experiment

# Between two experiment changes of one target (e.g. two bandit cycles, an hour apart).
EXPERIMENT_COOLDOWN_MINUTES = 30
# Recorded but not yet applied: waiting to be submitted, for an approver, or to be applied.
WAITING_STATUSES = frozenset(
    {Change.Status.PROPOSED, Change.Status.PENDING, Change.Status.ESCALATED, Change.Status.APPROVED}
)
BUDGET = Change.Field.DAILY_BUDGET


def experiment_limits(workspace) -> Limits:
    return Limits(
        max_step=Limit(workspace.guardrail_max_step_pct, WORKSPACE),
        windows=(WindowLimit("workspace_hour", Limit(workspace.guardrail_max_change_per_hour_pct, WORKSPACE),
                             WORKSPACE_WINDOW_MINUTES),),
        cooldown_minutes=EXPERIMENT_COOLDOWN_MINUTES,
        actions_per_day=Limit(workspace.guardrail_max_actions_per_rule_per_day, WORKSPACE),
        channel_share=Limit(workspace.guardrail_max_channel_share_pct, WORKSPACE),
    )


def batch_prefix(experiment: Experiment) -> str:
    return f"experiment:{experiment.pk}:"


@dataclass
class PlannedChange:
    target: Target
    field: str
    old_value: Value
    requested_value: Value
    capped: Capped
    reason: str

    @property
    def blocked(self) -> bool:
        return self.capped.value == self.old_value


class ChangePlanner:
    """Caps an experiment's requested changes as of `now` (one batch counts as one action of the day)."""

    def __init__(self, experiment: Experiment, now: datetime):
        self.experiment, self.now = experiment, now
        self.limits = experiment_limits(experiment.workspace)
        self.actions_in_day = _batches_applied_since(experiment, now - ACTIONS_DAY)

    def change(self, target: Target, field: str, current: Value, requested: Value, reason: str) -> PlannedChange:
        return PlannedChange(target, field, current, requested, self._cap(target, field, current, requested), reason)

    def move_budget(self, givers: Sequence[tuple[Segment, Decimal]], receivers: Sequence[tuple[Segment, Decimal]],
                    reason: Callable[[Segment, str], str]) -> list[PlannedChange]:
        """Cut the givers' budgets and raise the receivers', each capped, moving exactly the same total.

        Both sides are capped first; the smaller capped total is what moves, split over each side
        in proportion to its capped amounts (`split_exactly`), so no part exceeds its capped value.
        """
        cuts = [self._cap(s, BUDGET, s.daily_budget, s.daily_budget - amount) for s, amount in givers]
        raises = [self._cap(s, BUDGET, s.daily_budget, s.daily_budget + amount) for s, amount in receivers]
        capped_cuts = [s.daily_budget - c.value for (s, _), c in zip(givers, cuts, strict=True)]
        capped_raises = [c.value - s.daily_budget for (s, _), c in zip(receivers, raises, strict=True)]
        moved = min(sum(capped_cuts, Decimal(0)), sum(capped_raises, Decimal(0)))
        planned = []
        for side, capped_side, sign, verb in ((givers, capped_cuts, -1, "gives"), (receivers, capped_raises, 1,
                                                                                   "receives")):
            caps = cuts if sign < 0 else raises
            amounts = split_exactly(moved, capped_side) if moved > 0 else [Decimal(0)] * len(side)
            for (segment, asked), capped, amount, allowed in zip(side, caps, amounts, capped_side, strict=True):
                capped.value = segment.daily_budget + sign * amount
                capped.report.append(_conservation_entry(moved, bound=amount != allowed))
                planned.append(PlannedChange(segment, BUDGET, segment.daily_budget,
                                             segment.daily_budget + sign * asked, capped,
                                             reason(segment, f"{verb} {amount} of budget")))
        return planned

    def _cap(self, target: Target, field: str, current: Value, requested: Value) -> Capped:
        floor, ceiling = bounds(target, field) if is_numeric(field) else (None, None)
        since = self.now - timedelta(minutes=self.limits.history_minutes)
        history = applied_steps(target_type=target_type(target), target_ids=[target.pk], field=field, since=since)
        inputs = CapInputs(now=self.now, history=history.get(target.pk, ()), actions_in_day=self.actions_in_day,
                           floor=floor, ceiling=ceiling)
        return cap_change(current, requested, limits=self.limits, inputs=inputs)


def record_changes(*, actor: Actor, experiment: Experiment, planned: Sequence[PlannedChange], batch_id: str,
                   submit: bool, now: datetime) -> list[Change]:
    """Propose every planned change (BLOCKED when capped to nothing); with `submit`, route them and apply."""
    changes = []
    for item in planned:
        change, _created = change_propose(
            actor=actor, target=item.target, field=item.field, old_value=format_value(item.old_value),
            requested_value=format_value(item.requested_value), capped_value=format_value(item.capped.value),
            cap_report=item.capped.report, kind=Change.Kind.EXPERIMENT, batch_id=batch_id,
            idempotency_key=f"{batch_id}:{target_type(item.target)}:{item.target.pk}:{item.field}",
            reason=item.reason, now=now, route_now=False,
        )
        changes.append(change)
    return submit_changes(actor=actor, changes=changes, now=now) if submit else changes


def submit_changes(*, actor: Actor, changes: Sequence[Change], now: datetime) -> list[Change]:
    """Route the batch's proposed changes through the approval policy as one, then apply the approved ones
    together. What the policy sends to approval waits there (pending) for an approver."""
    routed = changes_route(actor=actor, changes=changes, now=now)
    return changes_apply_approved(actor=actor, changes=routed, now=now)


def batch_changes(batch_id: str) -> list[Change]:
    return list(Change.objects.filter(batch_id=batch_id, kind=Change.Kind.EXPERIMENT).order_by("pk"))


def _batches_applied_since(experiment: Experiment, since: datetime) -> int:
    return (Change.objects.filter(kind=Change.Kind.EXPERIMENT, batch_id__startswith=batch_prefix(experiment),
                                  status=Change.Status.APPLIED, applied_at__gt=since)
            .order_by().values("batch_id").distinct().count())


def _conservation_entry(moved: Decimal, *, bound: bool) -> dict:
    detail = f"{moved} moved between the experiment's segments; the campaign's total is unchanged"
    if bound:
        detail += "; reduced to what the other side could give or take"
    return {"cap": "budget_conservation", "limit": f"moved {moved}", "source": "experiment", "bound": bound,
            "detail": detail}
