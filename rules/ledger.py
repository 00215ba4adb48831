"""What planning the changes of several rules' runs reads, read once, and what the batch has applied so far.

Rules evaluated together are planned one after the other, in the order given, exactly as if each
had been recorded before the next was planned: a later rule sees what earlier ones applied —
the targets' current values, their applied steps (rolling windows, cooldowns), the channels'
budgets and the workspace's auto-applied amount. The ledger reads each of these once for the
whole batch (one query per kind, never one per rule or target) and keeps what the batch applies
on top, in memory, until the batch writes it.

The fired segments are read with the fields planning reads (`PLANNING_FIELDS`; reading another
one would cost a query per segment) and their campaigns once each. Unless `lock` is asked for,
they are not locked: the batch locks the targets it changes when it writes them and checks they
still hold what it planned on (rules.pipeline, `ChangeBatch`).

A target read by an action itself (a creative, a reallocation's receiver) is a fresh copy of
its row: before such an action runs, the caller writes the targets the batch has changed (`dirty`).
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Q

from campaigns.models import Campaign, Segment
from rulesplatform.id_arrays import id_in

from .caps import AppliedStep, Limits
from .history import applied_steps, counts_in_channel_totals, daily_budgets_by_channel, rules_actions_in_day
from .models import ApprovalPolicy, Change, Rule
from .policy import PolicyBook, applied_amount, auto_applied_amounts_in_day, campaign_id_of
from .targets import FIELDS, Target, parse_value, target_type

TargetKey = tuple[str, int]
# What planning reads of a fired segment: the actions' values and names, the caps' bounds (rules.targets),
# its campaign (loaded whole, once per campaign) and its status.
PLANNING_FIELDS = ("campaign", "name", "status", "bid", "daily_budget", "bid_floor", "bid_ceiling", "budget_floor",
                   "budget_ceiling")


class Ledger:
    def __init__(self, *, rules: Sequence[Rule], fired_segment_ids: Iterable[int], now: datetime, lock: bool):
        """`lock`: lock the fired segments (by id) for the caller's transaction, so what is planned on them
        still holds when the batch writes."""
        self.now = now
        self.workspace_ids = sorted({rule.workspace_id for rule in rules})
        self._since = now - timedelta(minutes=max((Limits.for_rule(r).history_minutes for r in rules), default=0))
        self.targets: dict[TargetKey, Target] = {("segment", s.pk): s for s in _fired_segments(fired_segment_ids,
                                                                                             lock=lock)}
        self._fired = {pk for _, pk in self.targets}
        self._fired_in_workspace: dict[int, dict[int, Segment]] = defaultdict(dict)
        for (_, pk), segment in self.targets.items():
            self._fired_in_workspace[segment.campaign.workspace_id][pk] = segment
        self._actions = rules_actions_in_day(rule_ids=[r.pk for r in rules], now=now) if rules else {}
        self._steps: dict[tuple[str, str], dict[int, list[AppliedStep]]] = defaultdict(dict)
        self._applied_steps: dict[tuple[str, str], dict[int, list[AppliedStep]]] = defaultdict(
            lambda: defaultdict(list))
        self._channels: dict[tuple[int, str], dict[str, Decimal]] = {}
        self._channel_deltas: dict[tuple[int, str], dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        self._policies: PolicyBook | None = None
        self._policy_of: dict[tuple[int, int], ApprovalPolicy] = {}  # by (workspace, campaign): one default each
        self._auto_amounts: dict[int, Decimal] | None = None
        self.dirty: dict[TargetKey, set[str]] = {}  # targets changed in memory and not written yet: their attrs

    # --- reads for planning ----------------------------------------------------------------

    def segments(self, rule: Rule, fired_segment_ids: Iterable[int]) -> list[Segment]:
        """The rule's fired segments of its workspace, by id."""
        in_workspace = self._fired_in_workspace.get(rule.workspace_id, {})
        return [in_workspace[pk] for pk in sorted(set(fired_segment_ids)) if pk in in_workspace]

    def actions_in_day(self, rule: Rule) -> int:
        return self._actions.get(rule.pk, 0)

    def load_steps(self, kind: str, field_name: str, ids: set[int]) -> None:
        """Read the applied steps of these targets' field not read yet, in one query: those of a fired segment are
        read with every other fired segment's."""
        stored = self._steps[(kind, field_name)]
        missing = ids - stored.keys()
        if not missing:
            return
        if kind == "segment":
            missing |= self._fired - stored.keys()
        found = applied_steps(target_type=kind, target_ids=missing, field=field_name, since=self._since)
        stored.update({pk: found.get(pk, []) for pk in missing})

    def steps(self, kind: str, field_name: str, pk: int, *, since: datetime) -> list[AppliedStep]:
        """Applied steps of the target's field after `since`, with those of this batch, oldest first. Read on first
        use, unless `load_steps` read them with others'."""
        stored = self._steps[(kind, field_name)]
        if pk not in stored:
            self.load_steps(kind, field_name, {pk})
        applied = [*stored[pk], *self._applied_steps[(kind, field_name)].get(pk, ())]
        return sorted((step for step in applied if step.applied_at > since), key=lambda step: step.applied_at)

    def channel_totals(self, workspace_id: int, kind: str) -> dict[str, Decimal]:
        """Daily budgets per channel as they are after this batch's changes so far (a copy the caller may move)."""
        if (workspace_id, kind) not in self._channels:
            loaded = daily_budgets_by_channel(workspace_ids=self.workspace_ids, target_type=kind)
            self._channels.update({(pk, kind): totals for pk, totals in loaded.items()})
        totals = dict(self._channels.get((workspace_id, kind), {}))
        for channel, delta in self._channel_deltas[(workspace_id, kind)].items():
            totals[channel] = totals.get(channel, Decimal(0)) + delta
        return totals

    def policy_for(self, change: Change) -> ApprovalPolicy:
        if self._policies is None:
            self._policies = PolicyBook.of(self.workspace_ids)
        key = (change.workspace_id, campaign_id_of(change))
        if key not in self._policy_of:
            self._policy_of[key] = self._policies.policy_for(workspace_id=key[0], campaign_id=key[1])
        return self._policy_of[key]

    def auto_amount_in_day(self, workspace_id: int) -> Decimal:
        if self._auto_amounts is None:
            self._auto_amounts = auto_applied_amounts_in_day(workspace_ids=self.workspace_ids, now=self.now)
        return self._auto_amounts[workspace_id]

    # --- what the batch applies ----------------------------------------------------------------

    def canonical(self, target: Target) -> Target:
        """The one copy of the target the batch changes and plans on."""
        return self.targets.setdefault((target_type(target), target.pk), target)

    def applied(self, change: Change, target: Target, *, auto: bool) -> None:
        """Count an applied change (already set on `target`, the canonical copy) in what later plans see."""
        kind, field_name = target_type(target), change.field
        self.dirty.setdefault((kind, target.pk), set()).add(FIELDS[field_name].attr)
        old, new = parse_value(field_name, change.old_value), parse_value(field_name, change.capped_value)
        self._applied_steps[(kind, field_name)][target.pk].append(AppliedStep(self.now, old, new))
        if field_name != Change.Field.DAILY_BUDGET:
            return
        if counts_in_channel_totals(target):
            channel = (target if kind == "campaign" else target.campaign).channel
            self._channel_deltas[(change.workspace_id, kind)][channel] += new - old
        if auto:
            moved = applied_amount(change.old_value, change.capped_value)
            self._auto_amounts[change.workspace_id] = self.auto_amount_in_day(change.workspace_id) + moved


def _fired_segments(ids: Iterable[int], *, lock: bool) -> list[Segment]:
    """The fired segments with what planning reads of them (`PLANNING_FIELDS`), each campaign read once."""
    segments = Segment.objects.filter(id_in("pk", set(ids))).only(*PLANNING_FIELDS).order_by("pk")
    if lock:
        segments = segments.select_for_update()
    segments = list(segments)
    campaigns = Campaign.objects.in_bulk({segment.campaign_id for segment in segments})
    for segment in segments:
        segment.campaign = campaigns[segment.campaign_id]
    return segments


def recorded_changes(runs) -> dict[str, list[Change]]:
    """Changes already recorded for these runs' windows, by batch id (a reallocation) or idempotency key."""
    by_window: dict[datetime, set[int]] = defaultdict(set)
    for run in runs:
        by_window[run.window_end].add(run.rule.pk)
    if not by_window:
        return {}
    # Every key of a rule's change ends with its window (pipeline.idempotency_key).
    query = Q()
    for window_end, rule_ids in by_window.items():
        query |= Q(rule_id__in=rule_ids, idempotency_key__endswith=f":{window_end.isoformat()}")
    found: dict[str, list[Change]] = {}
    for change in (Change.objects.filter(query).select_related("segment__campaign", "creative__campaign", "campaign")
                   .order_by("pk")):
        found.setdefault(change.batch_id or change.idempotency_key, []).append(change)
    return found
