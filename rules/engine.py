"""The evaluation engine: rules -> one vectorised pass per (scope, window) -> decisions -> changes.

For each call of `evaluate_rules`:

1. Rules are grouped by scope (workspace, campaigns, channel, segment criteria). The segments of
   all the scopes of a workspace are read in one query with their details, their campaigns'
   freshness in one more; the counters of all those segments are read once, per (segment,
   interval between the window and baseline boundaries of all its rules' triggers)
   (`rules.aggregates`), and each scope takes its rows from those arrays; rules sharing a scope
   share them.
2. Each trigger is computed for all segments and its last N windows at once (`rules.triggers`).
3. Per segment: stale or flagged data -> "skipped: stale data" (never a money move); otherwise
   the triggers combine by the rule's match (all / any).
4. One Evaluation per rule keeps every number that drove the decision (in columns, see
   `rules.decisions`); then the change pipeline turns the fired segments into capped changes
   (or, in a dry run, into a proposal that writes nothing).

Windows are whole metric buckets: the current window ends at `now` floored to the workspace
bucket, so a bucket still filling is never judged.
"""

import gc
import logging
import zoneinfo
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

import numpy as np
from django.db import transaction

from accounts.roles import Perm
from accounts.services import require_perm
from audit.actors import Actor
from campaigns.freshness import FLAGGED, NO_DATA, STALE, MetricsFreshness, metrics_freshness
from campaigns.metrics import get_metric
from campaigns.models import Campaign

from .aggregates import BucketGrid, ScopeCounters, counters_needed, floor_to_bucket, load_counters
from .decisions import OUTCOMES, ScopeSegments, SegmentDecisions, scope_segments, segment_decisions
from .explain import run_summary
from .models import Evaluation, Rule, Trigger
from .pipeline import ChangeBatch, PlannedChange, RuleRun, changes_for_evaluation, daily_limit_blocks
from .selectors import rules_for_engine, scope_key, segments_in_scopes
from .services import (
    evaluation_build,
    evaluation_correct,
    evaluation_entry,
    evaluation_record,
    evaluation_set_outcome,
)
from .triggers import Status, evaluate_trigger, lookback_buckets, needs_bucket_moments, window_offsets

logger = logging.getLogger(__name__)
Outcome = Evaluation.Outcome


@dataclass
class RuleEvaluationResult:
    rule: Rule
    window_start: datetime
    window_end: datetime
    outcome: str
    summary: str
    segments: SegmentDecisions = field(default_factory=SegmentDecisions)  # every segment in scope, in columns
    planned_changes: list[PlannedChange] = field(default_factory=list)
    evaluation: Evaluation | None = None  # None in a dry run

    @property
    def decisions(self) -> list[dict]:
        """One JSON-safe row per segment in scope, built on each read (dry runs show them; runs store columns)."""
        return self.segments.rows()

    @property
    def fired_segment_ids(self) -> list[int]:
        return self.segments.fired_segment_ids()


# During a cycle: young collections 14x rarer, full ones 10x (Python's defaults: 700, 10, 10).
_CYCLE_GC_THRESHOLDS = (10_000, 10, 100)


@contextmanager
def _heap_frozen():
    """Spare a cycle the garbage collections that find nothing to collect.

    A full-scale cycle allocates about a million objects, nearly all alive until it ends, which
    sets off hundreds of young and several full collections; each full one re-scans everything
    the process holds (Django, modules, the rules and arrays of the cycle). `gc.freeze` moves
    what the process held before the cycle out of their reach, and rarer collections during it
    leave the rest to after: ~1 s of a 6 s cycle, measured. Collection stays on, so a cycle's
    reference cycles are still freed; the thresholds and frozen objects are handed back after.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*_CYCLE_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@_heap_frozen()
def evaluate_rules(
    *, rule_ids: list[int], now: datetime, source: str, actor: Actor, dry_run: bool = False
) -> list[RuleEvaluationResult]:
    """Evaluate these rules at `now`. Outside a dry run only active rules run (one may have been
    paused since it was queued); a failing rule is logged and does not stop the others.

    Every rule's decisions are computed first, writing nothing; then all are recorded together
    in one transaction, as if one after the other in the order given (`_record_together`). Should
    that fail, they are recorded rule by rule instead, each in its own transaction (`_record_rule`).
    """
    rules = list(rules_for_engine(rule_ids=rule_ids, only_active=not dry_run))
    scopes = _ScopeCache(rules, now=now)
    results = []
    for rule in rules:
        try:
            result = _evaluate_rule(rule, scopes=scopes, now=now)
            if dry_run:
                result.planned_changes = _plan(result, actor=actor, now=now, evaluation=None, dry_run=True)
                _mark_blocked(result)
            results.append(result)
        except Exception:
            if dry_run:
                raise
            logger.exception("Evaluation of rule %s failed", rule.pk)
    if dry_run or not results:
        return results
    return _record(results, actor=actor, now=now, source=source)


def rule_preview(*, actor: Actor, rule: Rule, now: datetime) -> RuleEvaluationResult:
    """What the rule would do now, whatever its status: a dry run that writes nothing."""
    require_perm(actor, Perm.PREVIEW_RULES, rule.workspace_id)
    return evaluate_rules(rule_ids=[rule.pk], now=now, source=Evaluation.Source.MANUAL, actor=actor,
                          dry_run=True)[0]


# --- one rule --------------------------------------------------------------------------------


def _evaluate_rule(rule: Rule, *, scopes: "_ScopeCache", now: datetime) -> RuleEvaluationResult:
    """The rule's decisions at `now`; writes nothing."""
    window_end = floor_to_bucket(now, rule.workspace.metric_bucket_minutes)
    triggers = list(rule.triggers.all())
    longest = max((t.window_minutes for t in triggers), default=rule.workspace.metric_bucket_minutes)
    result = RuleEvaluationResult(rule, window_end - timedelta(minutes=longest), window_end, Outcome.NOT_FIRED,
                                  "")
    inactive = _outside_active_hours(rule, now)
    if inactive:
        result.outcome, result.summary = Outcome.SKIPPED_INACTIVE_HOURS, inactive
    elif not triggers:
        result.outcome, result.summary = Outcome.INSUFFICIENT_DATA, "Nothing to evaluate: the rule has no trigger."
    else:
        result.segments = _decide(rule, triggers, scopes.get(rule))
        result.outcome = _outcome(result.segments)
        result.summary = run_summary(result.segments, blocked=False)
    return result


# --- recording -------------------------------------------------------------------------------


def _record(results: list[RuleEvaluationResult], *, actor: Actor, now: datetime,
            source: str) -> list[RuleEvaluationResult]:
    decided = [(result.outcome, result.summary) for result in results]
    try:
        with transaction.atomic():
            _record_together(results, actor=actor, now=now, source=source)
        return results
    except Exception:
        logger.exception("Recording %s evaluations together failed: recording them rule by rule", len(results))
    recorded = []
    for result, (outcome, summary) in zip(results, decided, strict=True):
        result.outcome, result.summary, result.planned_changes, result.evaluation = outcome, summary, [], None
        try:
            _record_rule(result, actor=actor, now=now, source=source)
            recorded.append(result)
        except Exception:
            logger.exception("Evaluation of rule %s failed", result.rule.pk)
    return recorded


def _record_together(results: list[RuleEvaluationResult], *, actor: Actor, now: datetime, source: str) -> None:
    """Every rule's evaluation, changes and audit events, set-based (pipeline.ChangeBatch), in the order given."""
    runs = [RuleRun(result.rule, _evaluation(result, now=now, source=source), result.fired_segment_ids,
                    result.window_start, result.window_end) for result in results]
    batch = ChangeBatch(actor=actor, runs=runs, now=now)
    for result, run in zip(results, runs, strict=True):
        result.evaluation = run.evaluation
        batch.entries.append(evaluation_entry(run.evaluation))
        result.planned_changes = batch.record(run)
        correction = _outcome_correction(result)
        if correction:
            batch.entries.append(evaluation_correct(run.evaluation, **correction))
    batch.write(evaluations=[run.evaluation for run in runs])


def _evaluation(result: RuleEvaluationResult, *, now: datetime, source: str) -> Evaluation:
    return evaluation_build(rule=result.rule, window_end=result.window_end, source=source, outcome=result.outcome,
                            summary=result.summary, **evaluation_fields(result, now=now, source=source))


def _record_rule(result: RuleEvaluationResult, *, actor: Actor, now: datetime, source: str) -> None:
    """One rule's evaluation and changes, change by change through the services."""
    with transaction.atomic():
        result.evaluation = evaluation_record(
            actor=actor, rule=result.rule, window_end=result.window_end, evaluated_at=now, source=source,
            outcome=result.outcome, summary=result.summary, **evaluation_fields(result, now=now, source=source),
        )
        result.planned_changes = _plan(result, actor=actor, now=now, evaluation=result.evaluation, dry_run=False)
        correction = _outcome_correction(result)
        if correction:
            evaluation_set_outcome(actor=actor, evaluation=result.evaluation, **correction)


def _outcome_correction(result: RuleEvaluationResult) -> dict | None:
    """What the pipeline's answer changes in the recorded evaluation, if anything.

    Changes blocked by the used-up daily limit are not recorded as Changes: the evaluation keeps them.
    """
    unrecorded = daily_limit_blocks(result.planned_changes)
    if not (_mark_blocked(result) or unrecorded):
        return None
    inputs = {**result.evaluation.inputs, "daily_limit_blocks": unrecorded} if unrecorded else None
    return {"outcome": result.outcome, "summary": result.summary, "inputs": inputs}


def _plan(result: RuleEvaluationResult, *, actor: Actor, now: datetime, evaluation: Evaluation | None,
          dry_run: bool) -> list[PlannedChange]:
    # Alert-only rules go through the pipeline too: it is what raises the alert.
    if not result.fired_segment_ids:
        return []
    return changes_for_evaluation(
        actor=actor, rule=result.rule, evaluation=evaluation, fired_segment_ids=result.fired_segment_ids,
        window_start=result.window_start, window_end=result.window_end, now=now, dry_run=dry_run,
    )


def _mark_blocked(result: RuleEvaluationResult) -> bool:
    """A rule that fired but saw every proposed change capped to nothing was blocked by a cap."""
    changes = result.planned_changes
    if result.outcome != Outcome.FIRED or not changes or not all(c.blocked for c in changes):
        return False
    result.outcome = Outcome.BLOCKED_BY_CAP
    result.summary = run_summary(result.segments, blocked=True)
    return True


def _outside_active_hours(rule: Rule, now: datetime) -> str:
    """Empty when the rule may run now; otherwise why not (in the workspace's time zone)."""
    start, end = rule.active_hours_start, rule.active_hours_end
    if start is None or end is None:
        return ""
    tz = rule.workspace.time_zone
    local = now.astimezone(zoneinfo.ZoneInfo(tz))
    # A start after the end wraps past midnight (22 to 6 runs overnight).
    active = start <= local.hour < end if start < end else (local.hour >= start or local.hour < end)
    if active:
        return ""
    return f"Skipped: outside active hours ({start:02d}:00–{end:02d}:00 {tz}); it was {local:%H:%M} there."


# --- decisions -------------------------------------------------------------------------------


@dataclass
class _Scope:
    segments: list[dict]  # id, name, campaign_id, stale (reason or ""); shared between scopes, read only
    counters: ScopeCounters

    @cached_property
    def columns(self) -> ScopeSegments:
        """The segments as the columns of the decisions, made once for all the scope's rules."""
        return scope_segments(self.segments)


def _decide(rule: Rule, triggers: list[Trigger], scope: _Scope) -> SegmentDecisions:
    if not scope.segments:
        return SegmentDecisions()
    bucket = rule.workspace.metric_bucket_minutes
    results = [
        evaluate_trigger(t, scope.counters.series(get_metric(t.metric)), bucket_minutes=bucket) for t in triggers
    ]
    statuses = np.stack([r.status for r in results], axis=1)  # (segments, triggers)
    return segment_decisions(scope.columns, results, _combine(statuses, rule.match),
                             window_end=scope.counters.grid.end)


# A trigger's Status code -> the OUTCOMES code it gives a segment when it decides alone.
_TRIGGER_OUTCOMES = np.array([OUTCOMES.index({
    Status.FAILED: Outcome.NOT_FIRED, Status.PASSED: Outcome.FIRED, Status.INSUFFICIENT: Outcome.INSUFFICIENT_DATA,
}[status]) for status in sorted(Status)])


def _combine(statuses: np.ndarray, match: str) -> np.ndarray:
    """Per segment, the triggers' verdicts combined by the rule's match (OUTCOMES codes)."""
    if statuses.shape[1] == 1:  # most rules: one trigger, whose verdict decides whatever the match
        return _TRIGGER_OUTCOMES[statuses[:, 0]]
    passed, failed = statuses == Status.PASSED, statuses == Status.FAILED
    insufficient = statuses == Status.INSUFFICIENT
    if match == Rule.Match.ALL:
        fired, not_fired = passed.all(axis=1), failed.any(axis=1)
    else:
        fired, not_fired = passed.any(axis=1), ~insufficient.any(axis=1) & ~passed.any(axis=1)
    code = OUTCOMES.index
    return np.where(fired, code(Outcome.FIRED),
                    np.where(not_fired, code(Outcome.NOT_FIRED), code(Outcome.INSUFFICIENT_DATA)))


def _outcome(decisions: SegmentDecisions) -> str:
    counts = decisions.counts()
    for outcome in (Outcome.FIRED, Outcome.NOT_FIRED, Outcome.SKIPPED_STALE):
        if counts[outcome]:
            return outcome
    return Outcome.INSUFFICIENT_DATA


def evaluation_fields(result: RuleEvaluationResult, *, now: datetime, source: str) -> dict:
    """What an Evaluation keeps besides its rule, window, outcome and summary: the settings and
    the decisions' counts as JSON (`inputs`), every number behind the decisions in columns (`numbers`)."""
    rule = result.rule
    decisions, numbers = result.segments.to_stored()
    inputs = {
        "rule_version": rule.version, "evaluated_at": now.isoformat(), "source": source,
        "window_start": result.window_start.isoformat(), "window_end": result.window_end.isoformat(),
        "bucket_minutes": rule.workspace.metric_bucket_minutes, "time_zone": rule.workspace.time_zone,
        "freshness_limit_minutes": rule.workspace.freshness_limit_minutes, "match": rule.match,
        "active_hours": [rule.active_hours_start, rule.active_hours_end],
        **decisions,
    }
    return {"inputs": inputs, "numbers": numbers}


# --- scopes: segments, freshness and counters, shared between rules ---------------------------


class _ScopeCache:
    """Loads each scope once per call, over the longest span and all the counters its rules need.

    The facts are read once per workspace: the first scope asked for loads the segments of
    every scope of that workspace the call's rules need (`segments_in_scopes`), sums their facts
    per interval between the window and baseline boundaries of all their triggers
    (`load_counters`), over the longest span any of them needs, and each scope takes its own
    rows, span and counters from it.
    """

    def __init__(self, rules: list[Rule], *, now: datetime):
        self.now = now
        self._lookback: dict[tuple, int] = defaultdict(int)
        self._metrics: dict[tuple, set[str]] = defaultdict(set)  # per scope
        self._moments: dict[int, set[str]] = defaultdict(set)  # ratio metrics judged per bucket
        self._offsets: dict[int, set[int]] = defaultdict(set)  # range ends, in buckets before the end
        self._rules: dict[int, dict[tuple, Rule]] = defaultdict(dict)  # workspace -> scope -> a rule of it
        self._keys: dict[int, tuple] = {}  # rule -> its scope key, made once
        for rule in rules:
            key = self._keys[rule.pk] = scope_key(rule)
            workspace = rule.workspace_id
            self._rules[workspace].setdefault(key, rule)
            bucket = rule.workspace.metric_bucket_minutes
            for trigger in rule.triggers.all():
                self._lookback[key] = max(self._lookback[key], lookback_buckets(trigger, bucket))
                self._metrics[key].add(trigger.metric)
                self._offsets[workspace] |= window_offsets(trigger, bucket)
                if needs_bucket_moments(trigger):
                    self._moments[workspace].add(trigger.metric)
        self._loaded: dict[tuple, _Scope] = {}

    def get(self, rule: Rule) -> _Scope:
        """The scope of one of the rules the cache was made for."""
        key = self._keys[rule.pk]
        if key not in self._loaded:
            self._load_workspace(rule.workspace, self._rules[rule.workspace_id])
        return self._loaded[key]

    def _load_workspace(self, workspace, scope_rules: dict[tuple, Rule]) -> None:
        # Scopes overlap (a channel's rules, its campaigns' rules...): one query reads every scope's
        # segments with the details of their union, and the counters are read for the union.
        scopes = segments_in_scopes(scope_rules, fields=("id", "name", "campaign_id", "daily_budget"))
        ids, names, campaign_ids = (scopes.columns[name] for name in ("id", "name", "campaign_id"))
        grid = BucketGrid(floor_to_bucket(self.now, workspace.metric_bucket_minutes),
                          workspace.metric_bucket_minutes, max(self._lookback[key] for key in scope_rules))
        metrics = {key: [get_metric(m) for m in sorted(self._metrics[key])] for key in scope_rules}
        loaded = load_counters(
            workspace_id=workspace.pk, campaign_ids=set(campaign_ids), segment_ids=ids,
            daily_budgets=[float(budget) for budget in scopes.columns["daily_budget"]],
            counters=counters_needed(m for scope_metrics in metrics.values() for m in scope_metrics),
            moments=[get_metric(m) for m in sorted(self._moments[workspace.pk])], grid=grid,
            offsets=self._offsets[workspace.pk],
        )
        stale = _campaigns_staleness(set(campaign_ids), workspace, self.now)
        # One dict per segment, shared by the scopes holding it (they only read it).
        segments = [{"id": pk, "name": name, "campaign_id": campaign_id, "stale": stale[campaign_id]}
                    for pk, name, campaign_id in zip(ids, names, campaign_ids, strict=True)]
        for key, rows in scopes.members.items():
            self._loaded[key] = _Scope([segments[row] for row in rows.tolist()],
                                       loaded.select(rows, self._lookback[key], metrics[key]))


def _campaigns_staleness(campaign_ids: set[int], workspace, now: datetime) -> dict[int, str]:
    """Per campaign, why its segments' data may not drive a change ("" when it may): one query."""
    campaigns = Campaign.objects.filter(pk__in=campaign_ids).values_list(
        "pk", "metrics_received_at", "metrics_latest_bucket", "data_quality_flag")
    return {pk: _staleness(metrics_freshness(received_at=received_at, latest_bucket=latest_bucket,
                                             quality_flag=flag, workspace=workspace, now=now))
            for pk, received_at, latest_bucket, flag in campaigns}


def _staleness(freshness: MetricsFreshness) -> str:
    """Why a campaign's data may not drive a change ("" when it may)."""
    if freshness.state == FLAGGED:
        return f"Skipped: stale data — flagged by a data-quality check ({freshness.flag})."
    if freshness.state == NO_DATA:
        return "Skipped: stale data — no metrics received yet."
    if freshness.state == STALE:
        return (f"Skipped: stale data — the newest metrics are {freshness.age_minutes} minutes old "
                f"(limit {freshness.limit_minutes}).")
    return ""
