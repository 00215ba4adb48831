"""From a fired rule to applied changes: action -> requested change -> caps -> propose -> apply.

`changes_for_evaluation` is what the engine calls once a rule has fired on some segments.
In a dry run it writes nothing and returns what it would propose. Otherwise, holding a lock
on the rule row (so two runs of one rule never plan on the same history), it records each
change (PROPOSED, or BLOCKED when capped to nothing), routes it through the approval policy
(a reallocation batch as one: rules.policy) and applies at once what the policy auto-approves;
the rest waits for approvers (rules.approvals). Each change carries an idempotency key naming
the rule version, target, field and window: a second run over the same window (a retried task,
a concurrent worker) finds the changes recorded and creates and applies nothing.

That is `changes_for_evaluation`: one rule's run, change by change through the change services.
The engine records the runs of all the rules it evaluates together with `ChangeBatch` instead:
one transaction, the same steps in memory (plans on a shared ledger, rules.ledger, so that each
rule sees what the rules before it applied), then a few set-based writes. Its outcome —
changes, statuses, targets, approvals, notifications, pushes, audit events and their order — is
that of recording the runs one after the other; should it fail, the engine falls back to
recording rule by rule through `changes_for_evaluation`.

A change blocked because the rule's daily action limit was already used up (the
`actions_per_day` cap) is not recorded as a Change: once the limit is reached, every further
segment the rule fired on would add a blocked row and its audit event, thousands per run for a
broad rule, all for one rule-level reason. Such changes come back with `over_daily_limit` set,
and the engine keeps them in the evaluation's inputs instead (`daily_limit_blocks`: the cap's
report once, and per change its target, values and the caps that bound it). Once a run's limit is
used up, the rest of its requests are planned in one pass, without reading the other caps' inputs
(`_Planner._past_daily_limit`). A change capped to nothing by any other cap (bounds, step, window,
channel share, cooldown) is still recorded as BLOCKED with its cap report.

Alerts write no change: an audit event "rule.alert" (once per rule and window) plus a log
line record them. An escalation alert (a guard metric broke its limit) also notifies the
workspace's approvers and, with action_params {"pause": true}, pauses the fired segments
through the same caps and policy as any change.
"""

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from itertools import chain

from django.db import connection, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.models import AuditEvent
from campaigns.models import Campaign, Creative, Segment
from rulesplatform.bulk_insert import bulk_insert
from rulesplatform.id_arrays import id_in

from .actions import ActionInput, ChangeRequest, Reallocation, reallocations_for, requests_for, split_exactly
from .binding import binds
from .caps import CapInputs, Capped, ChannelBudget, Limits, cap_change, cap_past_daily_limit, daily_limit_used_up, moves
from .changes import (
    LazyEntry,
    apply_in_memory,
    audit_entries,
    change_build,
    change_propose,
    changes_apply_approved,
    changes_route,
    conflict_in_memory,
    entry_as_of,
    moved_targets,
    proposal_entry,
    refuse_unless_approved_as_is,
    route_in_memory,
    target_attr,
    target_key,
)
from .ledger import Ledger, recorded_changes
from .models import Approval, Change, Evaluation, Rule
from .notifications import notify_alert, notify_pending_groups
from .pushes import pushes_enqueue
from .services import evaluations_insert
from .targets import TARGET_MODELS, Target, bounds, format_value, is_numeric, target_type

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
    bound_caps: dict[int, list[str]] = {}  # by cap report: a run's changes past the limit share one
    for p in blocked:
        if id(p.cap_report) not in bound_caps:
            bound_caps[id(p.cap_report)] = [e["cap"] for e in p.cap_report if e["bound"]]
    return {
        "cap": _bound_entry(blocked[0], DAILY_LIMIT_CAP),
        "changes": [{"target": f"{target_type(p.target)}:{p.target.pk}", "field": p.field,
                     "old_value": p.old_value, "requested_value": p.requested_value,
                     "bound_caps": bound_caps[id(p.cap_report)]} for p in blocked],
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


# What planning a run gives, in order: groups to record, and on their own the changes blocked by the
# rule's used-up daily limit, which are never recorded (module docstring).
_Plan = list[_Group | PlannedChange]


@dataclass
class RuleRun:
    """One rule's fired segments in one window, to turn into changes (`evaluation`: None in a dry run)."""

    rule: Rule
    evaluation: Evaluation | None
    fired_segment_ids: list[int]
    window_start: datetime
    window_end: datetime


def changes_for_evaluation(*, actor: Actor, rule: Rule, evaluation: Evaluation | None, fired_segment_ids: list[int],
                           window_start: datetime, window_end: datetime, now: datetime,
                           dry_run: bool) -> list[PlannedChange]:
    """One rule's run, recorded change by change through the change services (or, dry, only planned)."""
    run = RuleRun(rule, evaluation, fired_segment_ids, window_start, window_end)
    if dry_run:
        return changes_planned(run, now=now)
    if _alerts(rule):
        _record_alert(actor=actor, run=run)
        if not pauses_on_escalation(rule):
            return []
    with transaction.atomic():
        # Serialise runs of one rule: its history (cooldowns, windows, actions per day) must
        # include what the previous run applied, and a window must be recorded once.
        Rule.objects.select_for_update().filter(pk=rule.pk).values_list("pk").first()
        ledger = Ledger(rules=[rule], fired_segment_ids=fired_segment_ids, now=now, lock=True)
        plan = _Planner(run, now, ledger).plan()
        return _record_groups(run, plan, recorded_changes([run]),
                              partial(_record_group, actor, rule, evaluation, now=now))


def changes_planned(run: RuleRun, *, now: datetime) -> list[PlannedChange]:
    """What the run would propose: a dry run, which writes nothing."""
    if _alerts(run.rule) and not pauses_on_escalation(run.rule):
        return []
    ledger = Ledger(rules=[run.rule], fired_segment_ids=run.fired_segment_ids, now=now, lock=False)
    return [planned for entry in _Planner(run, now, ledger).plan() for planned in _as_planned(entry)]


def _as_planned(entry: _Group | PlannedChange) -> list[PlannedChange]:
    return [item.planned for item in entry.items] if isinstance(entry, _Group) else [entry]


def _alerts(rule: Rule) -> bool:
    return rule.action in (Rule.Action.ALERT, Rule.Action.ESCALATE_ALERT)


def idempotency_key(*, rule: Rule, target: Target, field_name: str, window_end: datetime) -> str:
    return f"rule:{rule.pk}:v{rule.version}:{target_type(target)}:{target.pk}:{field_name}:{window_end.isoformat()}"


# Actions that read rows of their own besides the fired segments (rules.actions: creatives, a
# campaign's other segments): in a batch, those rows must hold what it has applied before they are
# read; and their applied steps are read for all of a run's targets at once (the ledger reads the
# fired segments' for all of them).
_READS_ROWS_ITSELF = frozenset({Rule.Action.PAUSE_CREATIVE, Rule.Action.RESUME_CREATIVE, Rule.Action.ROTATE_CREATIVE,
                                Rule.Action.REALLOCATE_BUDGET})


class _Planner:
    """Plans one run of a rule: requests from the action, each through the caps.

    The caps' inputs come from the ledger (read once for all the rules planned together, with
    what earlier rules of the batch applied); what the run itself plans is counted as it
    goes (actions towards the daily limit, budget raised in a channel), so that a dry run
    shows the same outcome as the real run.
    """

    def __init__(self, run: RuleRun, now: datetime, ledger: Ledger):
        self.rule, self.window_start, self.window_end, self.now = run.rule, run.window_start, run.window_end, now
        self.fired_segment_ids, self.ledger = run.fired_segment_ids, ledger
        self.limits = Limits.for_rule(run.rule)
        self.actions_in_day = ledger.actions_in_day(run.rule)
        self._since = now - timedelta(minutes=self.limits.history_minutes)
        self._channels: dict[str, dict[str, Decimal]] = {}

    def plan(self) -> _Plan:
        segments = self.ledger.segments(self.rule, self.fired_segment_ids)
        action_input = ActionInput(self.rule, segments, self.window_start, self.window_end)
        if self.rule.action == Rule.Action.REALLOCATE_BUDGET:
            reallocations = reallocations_for(action_input)
            self._load_steps([(s, Change.Field.DAILY_BUDGET) for r in reallocations for s in r.givers + r.receivers])
            return [self._plan_reallocation(r) for r in reallocations]
        requests = requests_for(action_input)
        if self.rule.action in _READS_ROWS_ITSELF:  # targets besides the fired segments: their steps in one query
            requests = list(requests)
            self._load_steps([(r.target, r.field) for r in requests])
        requests, plan = iter(requests), []
        for request in requests:
            if daily_limit_used_up(self.limits, self.actions_in_day):
                return plan + self._past_daily_limit(chain([request], requests))
            plan.append(self._plan_request(request))
        return plan

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

    def _past_daily_limit(self, requests: Iterable[ChangeRequest]) -> _Plan:
        """The rest of the run once the daily limit is used up: a broad rule asks for thousands more.

        Each request that moves is blocked by that cap alone (caps.cap_past_daily_limit), built in one pass;
        nothing more is counted, so they share one report. One that does not move goes through every cap.
        """
        plan: _Plan = []
        report = None
        for request in requests:
            old, requested = request.old_value, request.requested_value
            if not moves(old, requested):
                plan.append(self._plan_request(request))
                continue
            if report is None:
                report = cap_past_daily_limit(old, requested, limits=self.limits,
                                              actions_in_day=self.actions_in_day).report
            old_value = format_value(old)
            plan.append(PlannedChange(target=request.target, field=request.field, old_value=old_value,
                                      requested_value=format_value(requested), capped_value=old_value,
                                      cap_report=report, blocked=True, over_daily_limit=True))
        return plan

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
        past_limit = cap_past_daily_limit(current, requested, limits=self.limits, actions_in_day=self.actions_in_day)
        if past_limit is not None:
            return past_limit  # the other caps' inputs are not read: they have no say
        kind = target_type(target)
        floor, ceiling = bounds(target, field_name) if is_numeric(field_name) else (None, None)
        inputs = CapInputs(
            now=self.now,
            history=self.ledger.steps(kind, field_name, target.pk, since=self._since),
            actions_in_day=self.actions_in_day,
            floor=floor,
            ceiling=ceiling,
            channel=self._channel_budget(target) if with_channel else None,
        )
        return cap_change(current, requested, limits=self.limits, inputs=inputs)

    def _load_steps(self, targets: list[tuple[Target, str]]) -> None:
        wanted: dict[tuple[str, str], set[int]] = {}
        for target, field_name in targets:
            wanted.setdefault((target_type(target), field_name), set()).add(target.pk)
        for (kind, field_name), ids in wanted.items():
            self.ledger.load_steps(kind, field_name, ids)

    def _channel_totals(self, target: Target) -> dict[str, Decimal]:
        kind = target_type(target)
        if kind not in self._channels:
            self._channels[kind] = self.ledger.channel_totals(self.rule.workspace_id, kind)
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


# --- recording, change by change (one rule's run; the batch's fallback) -----------------------------

def _record_groups(run: RuleRun, plan: _Plan, recorded: dict[str, list[Change]],
                   record_group: Callable[[_Group], list[PlannedChange]]) -> list[PlannedChange]:
    result: list[PlannedChange] = []
    for group in plan:
        if isinstance(group, PlannedChange):
            result.append(_past_limit_result(run, group, recorded))
            continue
        existing = recorded.get(group.batch_id) if group.batch_id else recorded.get(group.items[0].key)
        if existing:
            # This window was recorded by an earlier run: report it, never apply it again.
            result += [_planned_from(change) for change in existing]
        elif all(item.planned.over_daily_limit for item in group.items):
            result += [item.planned for item in group.items]  # kept in the evaluation (module docstring)
        else:
            result += record_group(group)
    return result


def _past_limit_result(run: RuleRun, planned: PlannedChange, recorded: dict[str, list[Change]]) -> PlannedChange:
    """A change past the daily limit is kept in the evaluation, unless an earlier run of this window recorded it."""
    if not recorded:  # the usual first run of a window: no key to build
        return planned
    key = idempotency_key(rule=run.rule, target=planned.target, field_name=planned.field, window_end=run.window_end)
    existing = recorded.get(key)
    return _planned_from(existing[0]) if existing else planned


def _record_group(actor: Actor, rule: Rule, evaluation: Evaluation | None, group: _Group, *,
                  now: datetime) -> list[PlannedChange]:
    changes = [change_propose(actor=actor, **_proposal(rule, evaluation, group, item), now=now, route_now=False)[0]
               for item in group.items]
    # The group is judged as one by the policy, and what it approves is applied as one.
    changes = changes_route(actor=actor, changes=changes, now=now)
    changes = changes_apply_approved(actor=actor, changes=changes, now=now)
    return _planned_changes(changes, group)


def _proposal(rule: Rule, evaluation: Evaluation | None, group: _Group, item: _Planned) -> dict:
    planned = item.planned
    return {"target": planned.target, "field": planned.field, "old_value": planned.old_value,
            "requested_value": planned.requested_value, "capped_value": planned.capped_value,
            "cap_report": planned.cap_report, "idempotency_key": item.key, "rule": rule,
            "rule_version": rule.version, "evaluation": evaluation, "batch_id": group.batch_id, "reason": item.reason}


def _planned_changes(changes: list[Change], group: _Group) -> list[PlannedChange]:
    pairs = zip(changes, group.items, strict=True)
    return [_planned_from(change, target=item.planned.target) for change, item in pairs]


def _planned_from(change: Change, *, target: Target | None = None) -> PlannedChange:
    return PlannedChange(
        target=target or change.target, field=change.field, old_value=change.old_value,
        requested_value=change.requested_value, capped_value=change.capped_value, cap_report=change.cap_report,
        blocked=change.status == Change.Status.BLOCKED, change=change,
    )


# --- recording, set-based (many rules' runs at once) ------------------------------------------------


class TargetMoved(RuntimeError):
    """A row the batch changes, not locked before planning, no longer holds what the batch planned on."""


class ChangeBatch:
    """The runs of many rules recorded together, in the caller's transaction, with the outcome of
    recording them one after the other (in the order `record` is called) change by change.

    Locks every rule once (by id), then reads what planning needs once for all of them (the
    ledger, rules.ledger: fired segments, applied steps, actions in the day, channel budgets,
    policies, auto-applied amounts, what was already recorded). `record` plans a run and takes its
    changes through the same steps as the change services — built, routed, applied, each status
    reached through `change_transition` — in memory; `write` inserts and updates everything in a
    few statements per kind of row, audit events last, in the order the change-by-change path
    writes them.

    No target is locked while planning: the targets the batch changes are locked when it writes
    them (by model, then id) and must still hold the values it planned on (compare-and-set), or the
    batch fails with `TargetMoved` and the engine records rule by rule instead. A moved target is
    never written blindly.
    """

    def __init__(self, *, actor: Actor, runs: Sequence[RuleRun], now: datetime):
        self.actor, self.now = actor, now
        # Serialise runs of each rule (see changes_for_evaluation), locking in id order: two batches
        # sharing rules wait for each other instead of deadlocking.
        list(Rule.objects.select_for_update().filter(pk__in={run.rule.pk for run in runs}).order_by("pk")
             .values_list("pk", flat=True))
        fired = [run for run in runs if run.fired_segment_ids]
        # The fired segments are read, not locked: most are never changed (a rule's daily limit stops it
        # long before its broad scope does). Those the batch changes are locked when it writes them.
        self.ledger = Ledger(rules=[run.rule for run in fired], now=now, lock=False,
                             fired_segment_ids=[pk for run in fired for pk in run.fired_segment_ids])
        self._locked: set[tuple[str, int]] = set()
        self._recorded = recorded_changes([run for run in fired if not _alerts(run.rule)
                                           or pauses_on_escalation(run.rule)])
        self._alerted = alerts_recorded([run for run in fired if _alerts(run.rule)])
        self.entries: list[LazyEntry] = []
        self._changes: list[Change] = []
        self._approvals: list[Approval] = []
        self._pending: list[list[Change]] = []
        self._applied: list[Change] = []
        self._unchecked: dict[tuple[str, int], dict[str, str]] = {}  # changed, not locked yet: attr -> value planned on

    def record(self, run: RuleRun) -> list[PlannedChange]:
        if _alerts(run.rule):
            self._alert(run)
            if not pauses_on_escalation(run.rule):
                return []
        if not run.fired_segment_ids:
            return []
        if run.rule.action in _READS_ROWS_ITSELF and self.ledger.dirty:
            self._write_targets()
        plan = _Planner(run, self.now, self.ledger).plan()
        return _record_groups(run, plan, self._recorded, partial(self._record_group, run))

    def write(self, *, evaluations: Sequence[Evaluation]) -> None:
        evaluations_insert(evaluations=evaluations, evaluated_at=self.now)
        bulk_insert(self._changes)
        bulk_insert(self._approvals)
        self._write_targets()
        if self._pending:
            notify_pending_groups(groups=self._pending)
        pushes_enqueue(changes=self._applied)
        audit_entries(actor=self.actor, entries=self.entries)

    def _record_group(self, run: RuleRun, group: _Group) -> list[PlannedChange]:
        changes = [change_build(actor=self.actor, **_proposal(run.rule, run.evaluation, group, item))
                   for item in group.items]
        self._changes += changes
        self.entries += [proposal_entry(change) for change in changes]
        routable = [c for c in changes if c.status == Change.Status.PROPOSED]
        if routable:
            first = routable[0]
            routed = route_in_memory(self.actor, routable, policy=self.ledger.policy_for(first), now=self.now,
                                     auto_amount_in_day=self.ledger.auto_amount_in_day(first.workspace_id))
            self._approvals += routed.approvals
            self.entries += routed.entries
            if routed.auto:
                self._apply(routable, routed.approvals)
            else:
                self._pending.append(routable)
        return _planned_changes(changes, group)

    def _apply(self, changes: list[Change], approvals: list[Approval]) -> None:
        """`change_apply_batch` in memory: approval binding, compare-and-set, all or nothing."""
        approval_of = {id(approval.change): approval for approval in approvals}
        refuse_unless_approved_as_is(changes, lambda change: binds(approval_of[id(change)], change))
        keys = [target_key(c) for c in changes]
        targets = {key: self.ledger.canonical(c.target) for key, c in zip(keys, changes, strict=True)}
        moved = moved_targets(changes, targets)
        if moved:
            self.entries += conflict_in_memory(changes, moved)
            return
        for key, change in zip(keys, changes, strict=True):
            target = targets[key]
            if key not in self._locked:
                self._unchecked.setdefault(key, {}).setdefault(target_attr(change), change.old_value)
            self.entries.append(apply_in_memory(change, target, self.now))
            self.ledger.applied(change, target, auto=True)
        self._applied += changes

    def _write_targets(self) -> None:
        """One UPDATE per (model, field) for the targets changed so far."""
        self._lock_unchecked()
        stamp = timezone.now()
        by_attr: dict[tuple[str, str], list[Target]] = {}
        for key, attrs in self.ledger.dirty.items():
            target = self.ledger.targets[key]
            target.updated_at = stamp
            for attr in attrs:
                by_attr.setdefault((key[0], attr), []).append(target)
        for (kind, attr), targets in sorted(by_attr.items(), key=lambda item: item[0]):
            _update_column(TARGET_MODELS[kind], attr, targets, stamp)
        self.ledger.dirty.clear()

    def _lock_unchecked(self) -> None:
        """Compare-and-set for the targets changed since the last write: lock them, by model then id, and check
        they still hold what the batch planned on."""
        for kind in sorted({kind for kind, _ in self._unchecked}):
            planned_on = {pk: attrs for (k, pk), attrs in self._unchecked.items() if k == kind}
            attrs = sorted({attr for attrs in planned_on.values() for attr in attrs})
            rows = (TARGET_MODELS[kind].objects.select_for_update().filter(id_in("pk", planned_on)).order_by("pk")
                    .values_list("pk", *attrs))
            for pk, *values in rows:
                for attr, value in zip(attrs, values, strict=True):
                    if attr in planned_on[pk] and format_value(value) != planned_on[pk][attr]:
                        raise TargetMoved(f"{kind} {pk}: {attr} is {value}, planned on {planned_on[pk][attr]}")
        self._locked |= set(self._unchecked)
        self._unchecked.clear()

    def _alert(self, run: RuleRun) -> None:
        window = (run.rule.pk, run.window_end.isoformat())
        if not run.fired_segment_ids or window in self._alerted:
            return
        self._alerted.add(window)
        self.entries.append(_alert_entry(run))
        _raise_alert(run)


def _update_column(model, attr: str, targets: list[Target], stamp: datetime) -> None:
    """Write one column of these rows from memory (and `updated_at`), in one UPDATE."""
    if connection.vendor != "postgresql":
        model.objects.bulk_update(targets, [attr, "updated_at"])
        return
    # bulk_update's CASE WHEN compiles one branch per row: twenty times slower than joining arrays.
    field, qn = model._meta.get_field(attr), connection.ops.quote_name
    values = [field.get_db_prep_save(getattr(t, attr), connection) for t in targets]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {qn(model._meta.db_table)} AS t SET {qn(field.column)} = v.value, updated_at = %s "
            f"FROM unnest(%s::bigint[], %s::{field.db_type(connection)}[]) AS v(id, value) WHERE t.id = v.id",
            [stamp, [t.pk for t in targets], values],
        )


# --- alerts --------------------------------------------------------------------------------------

def pauses_on_escalation(rule: Rule) -> bool:
    return rule.action == Rule.Action.ESCALATE_ALERT and bool((rule.action_params or {}).get("pause"))


def _record_alert(*, actor: Actor, run: RuleRun) -> None:
    if not run.fired_segment_ids:
        return
    with transaction.atomic():
        Rule.objects.select_for_update().filter(pk=run.rule.pk).values_list("pk").first()
        if alerts_recorded([run]):
            return
        audit_entries(actor=actor, entries=[_alert_entry(run)])
        _raise_alert(run)


def alerts_recorded(runs: Sequence[RuleRun]) -> set[tuple[int, str]]:
    """(rule id, window end) of the runs whose alert is already on record: raised once per rule and window."""
    if not runs:
        return set()
    found = AuditEvent.objects.filter(
        action="rule.alert", workspace_id__in={run.rule.workspace_id for run in runs},
        after__rule__in=[run.rule.pk for run in runs],
        after__window_end__in=sorted({run.window_end.isoformat() for run in runs}),
    ).values_list("after__rule", "after__window_end")
    return set(found)


def _alert_entry(run: RuleRun) -> LazyEntry:
    rule, evaluation = run.rule, run.evaluation
    escalated = rule.action == Rule.Action.ESCALATE_ALERT
    return entry_as_of(
        "rule.alert", evaluation if evaluation is not None else rule,
        {"outcome": evaluation.outcome} if evaluation is not None else {}, workspace_id=rule.workspace_id,
        reason=f"Rule “{rule.name}” fired ({'escalated to approvers' if escalated else 'alert only'})",
        after={"rule": rule.pk, "rule_version": rule.version, "window_end": run.window_end.isoformat(),
               "segment_ids": sorted(run.fired_segment_ids), "escalated": escalated},
    )


def _raise_alert(run: RuleRun) -> None:
    """Tell the approvers (an escalation), in the transaction that records the alert, and log it."""
    rule, evaluation = run.rule, run.evaluation
    if rule.action == Rule.Action.ESCALATE_ALERT:
        names = list(Segment.objects.filter(pk__in=run.fired_segment_ids).order_by("pk").values_list("name", flat=True))
        notify_alert(rule=rule, segment_names=names, window_end=run.window_end, paused=pauses_on_escalation(rule),
                     summary=evaluation.summary if evaluation is not None else f"Rule “{rule.name}” fired.")
    logger.warning("Alert: rule %s (%s) fired on segments %s for the window ending %s",
                   rule.pk, rule.name, sorted(run.fired_segment_ids), run.window_end.isoformat())
