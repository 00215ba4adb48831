"""The evaluation engine: rules -> one vectorised pass per (scope, window) -> decisions -> changes.

For each call of `evaluate_rules`:

1. Rules are grouped by scope (workspace, campaigns, channel, segment criteria). Each scope's
   segments are read in one query; the counters of all the scopes of a workspace are summed per
   (segment, bucket) in one more, over the longest span any of its rules needs, and each scope
   takes its rows and buckets from those arrays; rules sharing a scope share them.
2. Each trigger is computed for all segments and its last N windows at once (`rules.triggers`).
3. Per segment: stale or flagged data -> "skipped: stale data" (never a money move); otherwise
   the triggers combine by the rule's match (all / any).
4. One Evaluation per rule keeps every number that drove the decision (JSON, no NaN); then the
   change pipeline turns the fired segments into capped changes (or, in a dry run, into a
   proposal that writes nothing).

Windows are whole metric buckets: the current window ends at `now` floored to the workspace
bucket, so a bucket still filling is never judged.
"""

import logging
import math
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.db import transaction

from accounts.roles import Perm
from accounts.services import require_perm
from audit.actors import Actor
from campaigns.freshness import FLAGGED, NO_DATA, STALE, metrics_freshness
from campaigns.metrics import get_metric

from .aggregates import BucketGrid, ScopeCounters, counters_needed, floor_to_bucket, load_counters
from .explain import STATUS_NAMES, run_summary, trigger_reason
from .models import Evaluation, Rule, Trigger
from .pipeline import PlannedChange, changes_for_evaluation, daily_limit_blocks
from .selectors import rules_for_engine, scope_key, segments_in_scope
from .services import evaluation_record, evaluation_set_outcome
from .triggers import Status, TriggerResult, WindowResult, evaluate_trigger, lookback_buckets

logger = logging.getLogger(__name__)
Outcome = Evaluation.Outcome


@dataclass
class RuleEvaluationResult:
    rule: Rule
    window_start: datetime
    window_end: datetime
    outcome: str
    summary: str
    decisions: list[dict]  # one per segment in scope, JSON-safe
    planned_changes: list[PlannedChange] = field(default_factory=list)
    evaluation: Evaluation | None = None  # None in a dry run

    @property
    def fired_segment_ids(self) -> list[int]:
        return [d["segment_id"] for d in self.decisions if d["decision"] == Outcome.FIRED]


def evaluate_rules(
    *, rule_ids: list[int], now: datetime, source: str, actor: Actor, dry_run: bool = False
) -> list[RuleEvaluationResult]:
    """Evaluate these rules at `now`. Outside a dry run only active rules run (one may have been
    paused since it was queued); a failing rule is logged and does not stop the others."""
    rules = list(rules_for_engine(rule_ids=rule_ids, only_active=not dry_run))
    scopes = _ScopeCache(rules, now=now)
    results = []
    for rule in rules:
        try:
            results.append(_evaluate_rule(rule, scopes=scopes, now=now, source=source, actor=actor,
                                          dry_run=dry_run))
        except Exception:
            if dry_run:
                raise
            logger.exception("Evaluation of rule %s failed", rule.pk)
    return results


def rule_preview(*, actor: Actor, rule: Rule, now: datetime) -> RuleEvaluationResult:
    """What the rule would do now, whatever its status: a dry run that writes nothing."""
    require_perm(actor, Perm.PREVIEW_RULES, rule.workspace_id)
    return evaluate_rules(rule_ids=[rule.pk], now=now, source=Evaluation.Source.MANUAL, actor=actor,
                          dry_run=True)[0]


# --- one rule --------------------------------------------------------------------------------


def _evaluate_rule(rule: Rule, *, scopes: "_ScopeCache", now: datetime, source: str, actor: Actor,
                   dry_run: bool) -> RuleEvaluationResult:
    window_end = floor_to_bucket(now, rule.workspace.metric_bucket_minutes)
    triggers = list(rule.triggers.all())
    longest = max((t.window_minutes for t in triggers), default=rule.workspace.metric_bucket_minutes)
    result = RuleEvaluationResult(rule, window_end - timedelta(minutes=longest), window_end, Outcome.NOT_FIRED,
                                  "", [])
    inactive = _outside_active_hours(rule, now)
    if inactive:
        result.outcome, result.summary = Outcome.SKIPPED_INACTIVE_HOURS, inactive
    elif not triggers:
        result.outcome, result.summary = Outcome.INSUFFICIENT_DATA, "Nothing to evaluate: the rule has no trigger."
    else:
        result.decisions = _decide(rule, triggers, scopes.get(rule))
        result.outcome = _outcome(result.decisions)
        result.summary = run_summary(result.decisions, blocked=False)
    if dry_run:
        result.planned_changes = _plan(result, actor=actor, now=now, evaluation=None, dry_run=True)
        _mark_blocked(result)
        return result
    with transaction.atomic():
        result.evaluation = evaluation_record(
            actor=actor, rule=rule, window_end=window_end, evaluated_at=now, source=source,
            outcome=result.outcome, summary=result.summary, inputs=_inputs(result, now=now, source=source),
        )
        result.planned_changes = _plan(result, actor=actor, now=now, evaluation=result.evaluation, dry_run=False)
        # Changes blocked by the used-up daily limit are not recorded as Changes: the evaluation keeps them.
        unrecorded = daily_limit_blocks(result.planned_changes)
        if _mark_blocked(result) or unrecorded:
            inputs = {**result.evaluation.inputs, "daily_limit_blocks": unrecorded} if unrecorded else None
            evaluation_set_outcome(actor=actor, evaluation=result.evaluation, outcome=result.outcome,
                                   summary=result.summary, inputs=inputs)
    return result


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
    result.summary = run_summary(result.decisions, blocked=True)
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
    segments: list[dict]  # id, name, campaign_id, stale (reason or "")
    counters: ScopeCounters


def _decide(rule: Rule, triggers: list[Trigger], scope: _Scope) -> list[dict]:
    if not scope.segments:
        return []
    bucket = rule.workspace.metric_bucket_minutes
    results = [
        evaluate_trigger(t, scope.counters.series(get_metric(t.metric)), bucket_minutes=bucket) for t in triggers
    ]
    statuses = np.stack([r.status for r in results], axis=1)  # (segments, triggers)
    decisions = _combine(statuses, rule.match)
    records = [_trigger_records(r, scope.counters.grid) for r in results]
    out = []
    for i, segment in enumerate(scope.segments):
        decision = Outcome.SKIPPED_STALE if segment["stale"] else decisions[i]
        trigger_rows = [rows[i] for rows in records]
        reason = segment["stale"] or "; ".join(row["reason"] for row in trigger_rows)
        out.append({"segment_id": segment["id"], "segment_name": segment["name"],
                    "campaign_id": segment["campaign_id"], "decision": str(decision), "reason": reason,
                    "triggers": trigger_rows})
    return out


def _combine(statuses: np.ndarray, match: str) -> np.ndarray:
    passed, failed = statuses == Status.PASSED, statuses == Status.FAILED
    insufficient = statuses == Status.INSUFFICIENT
    if match == Rule.Match.ALL:
        fired, not_fired = passed.all(axis=1), failed.any(axis=1)
    else:
        fired, not_fired = passed.any(axis=1), ~insufficient.any(axis=1) & ~passed.any(axis=1)
    return np.where(fired, Outcome.FIRED, np.where(not_fired, Outcome.NOT_FIRED, Outcome.INSUFFICIENT_DATA))


def _outcome(decisions: list[dict]) -> str:
    seen = {d["decision"] for d in decisions}
    for outcome in (Outcome.FIRED, Outcome.NOT_FIRED, Outcome.SKIPPED_STALE):
        if outcome in seen:
            return outcome
    return Outcome.INSUFFICIENT_DATA


def _trigger_records(result: TriggerResult, grid: BucketGrid) -> list[dict]:
    """Per segment, the trigger's settings, its current window's numbers, and its verdict."""
    trigger = result.trigger
    metric = get_metric(trigger.metric)
    windows = [_window_rows(w, _window_bounds(trigger, grid, k)) for k, w in enumerate(result.windows)]
    settings = {
        "trigger_id": trigger.pk, "position": trigger.position, "metric": trigger.metric, "kind": trigger.kind,
        "direction": trigger.direction, "threshold": _number(trigger.threshold),
        "confidence": _number(trigger.confidence), "k_sigma": _number(trigger.k_sigma),
        "min_sample": trigger.min_sample, "window_minutes": trigger.window_minutes,
        "baseline_minutes": trigger.baseline_minutes, "consecutive_required": trigger.consecutive_windows,
    }
    rows = []
    for i in range(len(result.status)):
        segment_windows = [rows_of_window[i] for rows_of_window in windows]
        consecutive = int(result.consecutive[i])
        row = {**settings, **segment_windows[0], "status": STATUS_NAMES[Status(result.status[i])],
               "passed": bool(result.status[i] == Status.PASSED), "consecutive_count": consecutive,
               "reason": trigger_reason(trigger, metric, segment_windows, consecutive)}
        if len(segment_windows) > 1:
            row["earlier_windows"] = segment_windows[1:]
        rows.append(row)
    return rows


def _window_bounds(trigger: Trigger, grid: BucketGrid, k: int) -> tuple[str, str]:
    end = grid.end - timedelta(minutes=k * trigger.window_minutes)
    return (end - timedelta(minutes=trigger.window_minutes)).isoformat(), end.isoformat()


def _window_rows(window: WindowResult, bounds: tuple[str, str]) -> list[dict]:
    columns = {
        "value": window.value, "numerator": window.numerator, "denominator": window.denominator,
        "baseline": window.baseline, "baseline_numerator": window.baseline_numerator,
        "baseline_denominator": window.baseline_denominator, **window.extra,
    }
    columns = {name: _numbers(values) for name, values in columns.items() if values is not None}
    statuses = [STATUS_NAMES[Status(s)] for s in window.status]
    reasons = window.insufficient_reason.tolist()
    return [
        {"window_start": bounds[0], "window_end": bounds[1], **{name: col[i] for name, col in columns.items()},
         "status": statuses[i], "insufficient_reason": reasons[i]}
        for i in range(len(statuses))
    ]


def _numbers(values: np.ndarray) -> list[float | None]:
    """Plain floats for JSON: NaN and infinities (undefined statistics, open intervals) become None."""
    return [v if math.isfinite(v) else None for v in np.asarray(values, dtype=float).tolist()]


def _number(value) -> float | None:
    return None if value is None else float(value)


def _inputs(result: RuleEvaluationResult, *, now: datetime, source: str) -> dict:
    rule = result.rule
    return {
        "rule_version": rule.version, "evaluated_at": now.isoformat(), "source": source,
        "window_start": result.window_start.isoformat(), "window_end": result.window_end.isoformat(),
        "bucket_minutes": rule.workspace.metric_bucket_minutes, "time_zone": rule.workspace.time_zone,
        "freshness_limit_minutes": rule.workspace.freshness_limit_minutes, "match": rule.match,
        "active_hours": [rule.active_hours_start, rule.active_hours_end],
        "segments": result.decisions,
    }


# --- scopes: segments, freshness and counters, shared between rules ---------------------------


class _ScopeCache:
    """Loads each scope once per call, over the longest span and all the counters its rules need.

    The facts are read once per workspace: the first scope asked for loads the segments of
    every scope of that workspace the call's rules need, sums their facts in one query over
    the longest span any of them needs, and each scope takes its own rows and buckets from it.
    """

    def __init__(self, rules: list[Rule], *, now: datetime):
        self.now = now
        self._lookback: dict[tuple, int] = defaultdict(int)
        self._metrics: dict[tuple, set[str]] = defaultdict(set)
        self._rules: dict[int, dict[tuple, Rule]] = defaultdict(dict)  # workspace -> scope -> a rule of it
        for rule in rules:
            key = scope_key(rule)
            self._rules[rule.workspace_id].setdefault(key, rule)
            bucket = rule.workspace.metric_bucket_minutes
            for trigger in rule.triggers.all():
                self._lookback[key] = max(self._lookback[key], lookback_buckets(trigger, bucket))
                self._metrics[key].add(trigger.metric)
        self._loaded: dict[tuple, _Scope] = {}

    def get(self, rule: Rule) -> _Scope:
        key = scope_key(rule)
        if key not in self._loaded:
            self._load_workspace(rule.workspace, self._rules[rule.workspace_id] or {key: rule})
        return self._loaded[key]

    def _load_workspace(self, workspace, scope_rules: dict[tuple, Rule]) -> None:
        rows = {key: list(segments_in_scope(rule).values(
            "id", "name", "campaign_id", "daily_budget", "campaign__metrics_received_at",
            "campaign__metrics_latest_bucket", "campaign__data_quality_flag",
        )) for key, rule in scope_rules.items()}
        union = {r["id"]: r for scope_rows in rows.values() for r in scope_rows}
        grid = BucketGrid(floor_to_bucket(self.now, workspace.metric_bucket_minutes),
                          workspace.metric_bucket_minutes, max(self._lookback[key] for key in scope_rules))
        needed = {key: counters_needed(get_metric(m) for m in self._metrics[key]) for key in scope_rules}
        loaded = load_counters(
            campaign_ids={r["campaign_id"] for r in union.values()}, segment_ids=list(union),
            daily_budgets=[float(r["daily_budget"]) for r in union.values()],
            counters=sorted({name for names in needed.values() for name in names}), grid=grid,
        )
        stale = {r["id"]: _staleness(r, workspace, self.now) for r in union.values()}
        for key, scope_rows in rows.items():
            segments = [{"id": r["id"], "name": r["name"], "campaign_id": r["campaign_id"], "stale": stale[r["id"]]}
                        for r in scope_rows]
            counters = loaded.select([r["id"] for r in scope_rows], self._lookback[key], needed[key])
            self._loaded[key] = _Scope(segments, counters)


def _staleness(row: dict, workspace, now: datetime) -> str:
    """Why a segment's campaign data may not drive a change ("" when it may)."""
    freshness = metrics_freshness(
        received_at=row["campaign__metrics_received_at"], latest_bucket=row["campaign__metrics_latest_bucket"],
        quality_flag=row["campaign__data_quality_flag"], workspace=workspace, now=now,
    )
    if freshness.state == FLAGGED:
        return f"Skipped: stale data — flagged by a data-quality check ({freshness.flag})."
    if freshness.state == NO_DATA:
        return "Skipped: stale data — no metrics received yet."
    if freshness.state == STALE:
        return (f"Skipped: stale data — the newest metrics are {freshness.age_minutes} minutes old "
                f"(limit {freshness.limit_minutes}).")
    return ""
