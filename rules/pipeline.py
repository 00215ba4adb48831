"""From a fired rule to applied changes: action -> requested change -> caps -> propose -> apply.

`changes_for_evaluation` is what the engine calls once a rule has fired on some segments.
In a dry run it writes nothing and returns what it would propose. Otherwise, holding a lock
on the rule row (so two runs of one rule never plan on the same history), it records each
change (PROPOSED, or BLOCKED when capped to nothing), routes it through the approval policy
(a reallocation batch as one: rules.policy) and applies at once what the policy auto-approves;
the rest waits for approvers (rules.approvals). Each change carries an idempotency key naming
the rule version, target, field and window: a second run over the same window (a retried task,
a concurrent worker) finds the changes recorded and creates and applies nothing.

A change blocked because the rule's daily action limit was already used up (the
`actions_per_day` cap) is not recorded as a Change: once the limit is reached, every further
segment the rule fired on would add a blocked row and its audit event, thousands per run for a
broad rule, all for one rule-level reason. Such changes come back with `over_daily_limit` set,
and the engine keeps them in the evaluation's inputs instead (`daily_limit_blocks`: the cap's
report once, and per change its target, values and the caps that bound it). A change capped to
nothing by any other cap (bounds, step, window, channel share, cooldown) is still recorded as
BLOCKED with its cap report.

Alerts write no change: an audit event "rule.alert" (once per rule and window) plus a log
line record them. An escalation alert (a guard metric broke its limit) also notifies the
workspace's approvers and, with action_params {"pause": true}, pauses the fired segments
through the same caps and policy as any change.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

from django.db import transaction
from django.db.models import Q

from audit.actors import Actor
from audit.models import AuditEvent
from audit.services import audit_record
from campaigns.models import Campaign, Creative, Segment

from .actions import ActionInput, ChangeRequest, Reallocation, reallocations_for, requests_for, split_exactly
from .caps import CapInputs, Capped, ChannelBudget, Limits, cap_change
from .changes import change_propose, changes_apply_approved, changes_route
from .history import applied_steps, daily_budget_by_channel, rule_actions_in_day
from .models import Change, Evaluation, Rule
from .notifications import notify_alert
from .targets import Target, bounds, format_value, is_numeric, target_type

logger = logging.getLogger(__name__)


@dataclass
class PlannedChange:
    target: Segment | Creative | Campaign
    field: str
    old_value: str
    requested_value: str
    capped_value: str
    cap_report: list[dict]
    blocked: bool
    change: Change | None = None
    over_daily_limit: bool = False  # blocked by the rule's used-up daily limit: kept in the evaluation, no Change


DAILY_LIMIT_CAP = "actions_per_day"


def daily_limit_blocks(planned_changes: list[PlannedChange]) -> dict:
    """What the evaluation's inputs keep of the changes not recorded because the daily limit was used up."""
    blocked = [p for p in planned_changes if p.over_daily_limit]
    if not blocked:
        return {}
    return {
        "cap": _bound_entry(blocked[0], DAILY_LIMIT_CAP),
        "changes": [{"target": f"{target_type(p.target)}:{p.target.pk}", "field": p.field,
                     "old_value": p.old_value, "requested_value": p.requested_value,
                     "bound_caps": [e["cap"] for e in p.cap_report if e["bound"]]} for p in blocked],
    }


def _bound_entry(planned: PlannedChange, cap: str) -> dict | None:
    return next((e for e in planned.cap_report if e["cap"] == cap and e["bound"]), None)


@dataclass
class _Planned:
    """A planned change with what recording it needs."""

    planned: PlannedChange
    key: str
    reason: str


@dataclass
class _Group:
    """Changes that are recorded and applied together: one change, or a reallocation batch."""

    items: list[_Planned] = field(default_factory=list)
    batch_id: str = ""


def changes_for_evaluation(*, actor: Actor, rule: Rule, evaluation: Evaluation | None, fired_segment_ids: list[int],
                           window_start: datetime, window_end: datetime, now: datetime,
                           dry_run: bool) -> list[PlannedChange]:
    if rule.action in (Rule.Action.ALERT, Rule.Action.ESCALATE_ALERT):
        if not dry_run:
            _record_alert(actor=actor, rule=rule, evaluation=evaluation, fired_segment_ids=fired_segment_ids,
                          window_end=window_end)
        if not pauses_on_escalation(rule):
            return []
    if dry_run:
        groups = _Planner(rule, window_start, window_end, now).plan(fired_segment_ids)
        return [item.planned for group in groups for item in group.items]
    with transaction.atomic():
        # Serialise runs of one rule: its history (cooldowns, windows, actions per day) must
        # include what the previous run applied, and a window must be recorded once.
        Rule.objects.select_for_update().filter(pk=rule.pk).values_list("pk").first()
        groups = _Planner(rule, window_start, window_end, now).plan(fired_segment_ids)
        return _record_and_apply(actor, rule, evaluation, groups, now)


def idempotency_key(*, rule: Rule, target: Target, field_name: str, window_end: datetime) -> str:
    return f"rule:{rule.pk}:v{rule.version}:{target_type(target)}:{target.pk}:{field_name}:{window_end.isoformat()}"


class _Planner:
    """Plans one run of a rule: requests from the action, each through the caps.

    The caps' inputs are loaded once per run; what the run itself plans is counted as it
    goes (actions towards the daily limit, budget raised in a channel), so that a dry run
    shows the same outcome as the real run.
    """

    def __init__(self, rule: Rule, window_start: datetime, window_end: datetime, now: datetime):
        self.rule, self.window_start, self.window_end, self.now = rule, window_start, window_end, now
        self.limits = Limits.for_rule(rule)
        self.actions_in_day = rule_actions_in_day(rule_id=rule.pk, now=now)
        self._steps: dict[tuple[str, str], dict] = {}
        self._channels: dict[str, dict[str, Decimal]] = {}

    def plan(self, fired_segment_ids: list[int]) -> list[_Group]:
        segments = list(
            Segment.objects.filter(pk__in=fired_segment_ids, campaign__workspace_id=self.rule.workspace_id)
            .select_related("campaign").order_by("pk")
        )
        action_input = ActionInput(self.rule, segments, self.window_start, self.window_end)
        if self.rule.action == Rule.Action.REALLOCATE_BUDGET:
            reallocations = reallocations_for(action_input)
            self._load_steps([(s, Change.Field.DAILY_BUDGET) for r in reallocations for s in r.givers + r.receivers])
            return [self._plan_reallocation(r) for r in reallocations]
        requests = requests_for(action_input)
        self._load_steps([(r.target, r.field) for r in requests])
        return [self._plan_request(r) for r in requests]

    # --- single changes ---

    def _plan_request(self, request: ChangeRequest) -> _Group:
        capped = self._cap(request.target, request.field, request.old_value, request.requested_value,
                           with_channel=request.field == Change.Field.DAILY_BUDGET)
        item = self._item(request.target, request.field, request.old_value, request.requested_value, capped,
                          request.reason)
        if not item.planned.blocked:
            self.actions_in_day += 1
            if request.field == Change.Field.DAILY_BUDGET:
                self._add_to_channel(request.target, capped.value - request.old_value)
        return _Group([item])

    # --- reallocation ---

    def _plan_reallocation(self, plan: Reallocation) -> _Group:
        """Cap both sides, then conserve the campaign total exactly.

        Givers' cuts are capped first; what they can give is split equally over the
        receivers (remainder to the best) and each receiver's raise is capped; whatever the
        receivers cannot take is handed back to the givers in proportion to their capped cuts
        (`split_exactly`), so sum(cuts) == sum(raises) to the last unit.
        """
        budget = Change.Field.DAILY_BUDGET
        giver_caps = [self._cap(g, budget, g.daily_budget, g.daily_budget - cut)
                      for g, cut in zip(plan.givers, plan.cuts, strict=True)]
        capped_cuts = [g.daily_budget - c.value for g, c in zip(plan.givers, giver_caps, strict=True)]
        shares = split_exactly(sum(capped_cuts, Decimal(0)), [Decimal(1)] * len(plan.receivers))
        receiver_caps = [self._cap(r, budget, r.daily_budget, r.daily_budget + share)
                         for r, share in zip(plan.receivers, shares, strict=True)]
        moved = sum((c.value - r.daily_budget for r, c in zip(plan.receivers, receiver_caps, strict=True)), Decimal(0))
        cuts = split_exactly(moved, capped_cuts) if moved else [Decimal(0)] * len(plan.givers)

        conservation = partial(_conservation_entry, total=sum((s.daily_budget for s in plan.givers + plan.receivers),
                                                               Decimal(0)), asked=sum(plan.cuts), moved=moved)
        group = _Group(batch_id=self._batch_id(plan.campaign))
        for giver, asked, capped, cut, capped_cut in zip(plan.givers, plan.cuts, giver_caps, cuts, capped_cuts,
                                                         strict=True):
            capped.report.append(conservation(bound=cut != capped_cut))
            capped.value = giver.daily_budget - cut
            group.items.append(self._item(giver, budget, giver.daily_budget, giver.daily_budget - asked, capped,
                                          self._reallocation_reason(plan, f"gives {cut} of its budget")))
        for receiver, share, capped in zip(plan.receivers, shares, receiver_caps, strict=True):
            capped.report.append(conservation(bound=False))
            what = f"receives (ranked by {plan.rank_metric} = {plan.scores[receiver.pk]:.4g})"
            group.items.append(self._item(receiver, budget, receiver.daily_budget, receiver.daily_budget + share,
                                          capped, self._reallocation_reason(plan, what)))
        if moved:
            self.actions_in_day += 1  # a batch is one action
        return group

    def _batch_id(self, campaign: Campaign) -> str:
        return f"realloc:r{self.rule.pk}v{self.rule.version}:c{campaign.pk}:{self.window_end:%Y%m%dT%H%M%S}"

    def _reallocation_reason(self, plan: Reallocation, what: str) -> str:
        return (f"Rule “{self.rule.name}” (v{self.rule.version}): reallocate {self.rule.action_value}% of budget in "
                f"{plan.campaign.name}; this segment {what}")

    # --- caps and their inputs ---

    def _cap(self, target: Target, field_name: str, current, requested, *, with_channel: bool = False) -> Capped:
        floor, ceiling = bounds(target, field_name) if is_numeric(field_name) else (None, None)
        inputs = CapInputs(
            now=self.now,
            history=self._steps.get((target_type(target), field_name), {}).get(target.pk, ()),
            actions_in_day=self.actions_in_day,
            floor=floor,
            ceiling=ceiling,
            channel=self._channel_budget(target) if with_channel else None,
        )
        return cap_change(current, requested, limits=self.limits, inputs=inputs)

    def _load_steps(self, targets: list[tuple[Target, str]]) -> None:
        since = self.now - timedelta(minutes=self.limits.history_minutes)
        wanted: dict[tuple[str, str], set[int]] = {}
        for target, field_name in targets:
            wanted.setdefault((target_type(target), field_name), set()).add(target.pk)
        for (kind, field_name), ids in wanted.items():
            self._steps[(kind, field_name)] = applied_steps(target_type=kind, target_ids=ids, field=field_name,
                                                            since=since)

    def _channel_totals(self, target: Target) -> dict[str, Decimal]:
        kind = target_type(target)
        if kind not in self._channels:
            self._channels[kind] = daily_budget_by_channel(workspace_id=self.rule.workspace_id, target_type=kind)
        return self._channels[kind]

    def _channel_budget(self, target: Target) -> ChannelBudget:
        channel = _campaign_of(target).channel
        totals = self._channel_totals(target)
        return ChannelBudget(channel, totals.get(channel, Decimal(0)), sum(totals.values(), Decimal(0)))

    def _add_to_channel(self, target: Target, delta: Decimal) -> None:
        totals = self._channel_totals(target)
        channel = _campaign_of(target).channel
        totals[channel] = totals.get(channel, Decimal(0)) + delta

    def _item(self, target: Target, field_name: str, old, requested, capped: Capped, reason: str) -> _Planned:
        planned = PlannedChange(
            target=target, field=field_name, old_value=format_value(old), requested_value=format_value(requested),
            capped_value=format_value(capped.value), cap_report=capped.report, blocked=capped.value == old,
        )
        planned.over_daily_limit = planned.blocked and _bound_entry(planned, DAILY_LIMIT_CAP) is not None
        key = idempotency_key(rule=self.rule, target=target, field_name=field_name, window_end=self.window_end)
        return _Planned(planned, key, reason)


def _campaign_of(target: Target) -> Campaign:
    return target if isinstance(target, Campaign) else target.campaign


def _conservation_entry(*, total: Decimal, asked: Decimal, moved: Decimal, bound: bool) -> dict:
    detail = f"moved {moved} of {asked} asked; the campaign's segments keep {total} in total"
    if bound:
        detail += "; this cut was reduced to what the receiving segments could take"
    return {"cap": "budget_conservation", "limit": f"total {total}", "source": "reallocation", "bound": bound,
            "detail": detail}


# --- recording ---------------------------------------------------------------------------------

def _record_and_apply(actor: Actor, rule: Rule, evaluation: Evaluation | None, groups: list[_Group],
                      now: datetime) -> list[PlannedChange]:
    recorded = _already_recorded(groups)
    result: list[PlannedChange] = []
    for group in groups:
        existing = recorded.get(group.batch_id) if group.batch_id else recorded.get(group.items[0].key)
        if existing:
            # This window was recorded by an earlier run: report it, never apply it again.
            result += [_planned_from(change) for change in existing]
        elif all(item.planned.over_daily_limit for item in group.items):
            result += [item.planned for item in group.items]  # kept in the evaluation (module docstring)
        else:
            result += _record_group(actor, rule, evaluation, group, now)
    return result


def _already_recorded(groups: list[_Group]) -> dict[str, list[Change]]:
    keys = [item.key for group in groups if not group.batch_id for item in group.items]
    batch_ids = [group.batch_id for group in groups if group.batch_id]
    found: dict[str, list[Change]] = {}
    if not groups:
        return found
    changes = (Change.objects.filter(Q(idempotency_key__in=keys) | Q(batch_id__in=batch_ids))
               .select_related("segment__campaign", "creative__campaign", "campaign").order_by("pk"))
    for change in changes:
        found.setdefault(change.batch_id or change.idempotency_key, []).append(change)
    return found


def _record_group(actor: Actor, rule: Rule, evaluation: Evaluation | None, group: _Group,
                  now: datetime) -> list[PlannedChange]:
    changes = []
    for item in group.items:
        planned = item.planned
        change, _created = change_propose(
            actor=actor, target=planned.target, field=planned.field, old_value=planned.old_value,
            requested_value=planned.requested_value, capped_value=planned.capped_value,
            cap_report=planned.cap_report, idempotency_key=item.key, rule=rule, rule_version=rule.version,
            evaluation=evaluation, batch_id=group.batch_id, reason=item.reason, now=now, route_now=False,
        )
        changes.append(change)
    # The group is judged as one by the policy, and what it approves is applied as one.
    changes = changes_route(actor=actor, changes=changes, now=now)
    changes = changes_apply_approved(actor=actor, changes=changes, now=now)
    pairs = zip(changes, group.items, strict=True)
    return [_planned_from(change, target=item.planned.target) for change, item in pairs]


def _planned_from(change: Change, *, target: Target | None = None) -> PlannedChange:
    return PlannedChange(
        target=target or change.target, field=change.field, old_value=change.old_value,
        requested_value=change.requested_value, capped_value=change.capped_value, cap_report=change.cap_report,
        blocked=change.status == Change.Status.BLOCKED, change=change,
    )


# --- alerts --------------------------------------------------------------------------------------

def pauses_on_escalation(rule: Rule) -> bool:
    return rule.action == Rule.Action.ESCALATE_ALERT and bool((rule.action_params or {}).get("pause"))


def _record_alert(*, actor: Actor, rule: Rule, evaluation: Evaluation | None, fired_segment_ids: list[int],
                  window_end: datetime) -> None:
    if not fired_segment_ids:
        return
    with transaction.atomic():
        Rule.objects.select_for_update().filter(pk=rule.pk).values_list("pk").first()
        window = window_end.isoformat()
        if AuditEvent.objects.filter(action="rule.alert", workspace_id=rule.workspace_id, after__rule=rule.pk,
                                     after__window_end=window).exists():
            return
        escalated = rule.action == Rule.Action.ESCALATE_ALERT
        audit_record(
            actor=actor, action="rule.alert", subject=evaluation if evaluation is not None else rule,
            workspace_id=rule.workspace_id,
            reason=f"Rule “{rule.name}” fired ({'escalated to approvers' if escalated else 'alert only'})",
            after={"rule": rule.pk, "rule_version": rule.version, "window_end": window,
                   "segment_ids": sorted(fired_segment_ids), "escalated": escalated},
        )
        if escalated:
            names = list(Segment.objects.filter(pk__in=fired_segment_ids).order_by("pk").values_list("name", flat=True))
            notify_alert(rule=rule, segment_names=names, window_end=window_end, paused=pauses_on_escalation(rule),
                         summary=evaluation.summary if evaluation is not None else f"Rule “{rule.name}” fired.")
    logger.warning("Alert: rule %s (%s) fired on segments %s for the window ending %s",
                   rule.pk, rule.name, sorted(fired_segment_ids), window)
