"""Writes for rules (with their triggers, as one unit) and their evaluation records.

Every write takes an actor, checks the actor's role, validates against the metric registry
and the workspace guardrails (`rules.validation`), and records an audit event in the same
transaction. A rule's triggers are always written together with the rule, and each saved
edit raises `Rule.version`, so an evaluation can say exactly which settings it ran with.
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.exceptions import Conflict, PermissionDenied
from accounts.models import Workspace
from accounts.roles import Perm
from accounts.selectors import user_may
from accounts.services import refuse_unknown_fields, require_perm, snapshot
from audit.actors import Actor
from audit.services import audit_record
from campaigns.models import Campaign
from rulesplatform.bulk_insert import bulk_insert

from .changes import LazyEntry, audit_entries, entry_as_of
from .models import Evaluation, Rule, Trigger
from .validation import TRIGGER_FIELDS, rule_problems, trigger_problems, with_trigger_defaults

# What callers may set on a rule; status, version and bookkeeping have their own services.
RULE_FIELDS = (
    "name", "description", "channel", "segment_filter", "match", "evaluation_interval_minutes",
    "active_hours_start", "active_hours_end", "action", "action_value", "action_params",
    "max_step_pct", "max_change_per_window_pct", "cap_window_minutes", "cooldown_minutes",
    "max_actions_per_day", "value_floor", "value_ceiling", "max_channel_share_pct",
)


def rule_snapshot(rule: Rule) -> dict:
    """The rule with its scope and triggers, as plain data: what a version of the rule is."""
    data = snapshot(rule, exclude=("campaigns", "last_evaluated_at", "created_at", "updated_at"))
    data["campaigns"] = sorted(rule.campaigns.values_list("pk", flat=True))
    data["triggers"] = [
        {name: getattr(t, name) for name in TRIGGER_FIELDS} for t in rule.triggers.order_by("position", "id")
    ]
    return data


@transaction.atomic
def rule_create(
    *,
    actor: Actor,
    workspace: Workspace,
    owner,
    triggers: Sequence[Mapping] = (),
    campaigns: Iterable[Campaign] = (),
    **fields,
) -> Rule:
    """A new rule, always as a draft: only someone who may activate rules makes it live."""
    require_perm(actor, Perm.EDIT_RULES, workspace.pk)
    refuse_unknown_fields(fields, RULE_FIELDS)
    rule = Rule(workspace=workspace, owner=owner, **fields)
    campaigns = list(campaigns)
    _validate(rule, triggers, campaigns)
    rule.save()
    rule.campaigns.set(campaigns)
    _write_triggers(rule, triggers)
    audit_record(actor=actor, action="rule.create", subject=rule, after=rule_snapshot(rule))
    return rule


@transaction.atomic
def rule_update(
    *,
    actor: Actor,
    rule: Rule,
    triggers: Sequence[Mapping] | None = None,
    campaigns: Iterable[Campaign] | None = None,
    reason: str = "",
    **fields,
) -> Rule:
    """Edit a rule; `triggers`, when given, replace the rule's triggers in the same version."""
    require_perm(actor, Perm.EDIT_RULES, rule.workspace_id)
    refuse_unknown_fields(fields, RULE_FIELDS)
    rule = Rule.objects.select_for_update().select_related("workspace").get(pk=rule.pk)
    _refuse_edit_of_live_rule(actor, rule)
    before = rule_snapshot(rule)
    for name, value in fields.items():
        setattr(rule, name, value)
    campaigns = list(rule.campaigns.all()) if campaigns is None else list(campaigns)
    if triggers is None:
        triggers = before["triggers"]
    _validate(rule, triggers, campaigns)
    rule.version += 1
    rule.save()
    rule.campaigns.set(campaigns)
    rule.triggers.all().delete()
    _write_triggers(rule, triggers)
    audit_record(actor=actor, action="rule.update", subject=rule, before=before, after=rule_snapshot(rule),
                 reason=reason)
    return rule


def rule_activate(*, actor: Actor, rule: Rule, reason: str = "") -> Rule:
    return _rule_set_status(actor=actor, rule=rule, status=Rule.Status.ACTIVE, reason=reason)


def rule_pause(*, actor: Actor, rule: Rule, reason: str = "") -> Rule:
    return _rule_set_status(actor=actor, rule=rule, status=Rule.Status.PAUSED, reason=reason)


def rule_archive(*, actor: Actor, rule: Rule, reason: str = "") -> Rule:
    return _rule_set_status(actor=actor, rule=rule, status=Rule.Status.ARCHIVED, reason=reason)


@transaction.atomic
def _rule_set_status(*, actor: Actor, rule: Rule, status: str, reason: str) -> Rule:
    require_perm(actor, Perm.ACTIVATE_RULES, rule.workspace_id)
    rule = Rule.objects.select_for_update().select_related("workspace").get(pk=rule.pk)
    if rule.status == status:
        return rule
    if rule.status == Rule.Status.ARCHIVED:
        raise Conflict("This rule is archived; archived rules cannot be changed.")
    if status == Rule.Status.ACTIVE:
        _validate(rule, rule_snapshot(rule)["triggers"], list(rule.campaigns.all()), require_triggers=True)
    before = {"status": rule.status}
    rule.status = status
    rule.save(update_fields=["status", "updated_at"])
    audit_record(actor=actor, action=f"rule.{_STATUS_VERBS[status]}", subject=rule, before=before,
                 after={"status": status, "version": rule.version}, reason=reason)
    return rule


_STATUS_VERBS = {Rule.Status.ACTIVE: "activate", Rule.Status.PAUSED: "pause", Rule.Status.ARCHIVED: "archive"}


@transaction.atomic
def evaluation_record(
    *,
    actor: Actor,
    rule: Rule,
    window_end: datetime,
    evaluated_at: datetime,
    source: str,
    outcome: str,
    summary: str,
    inputs: dict,
    numbers: bytes = b"",
) -> Evaluation:
    """Keep one evaluation of a rule, and mark the rule as evaluated at `evaluated_at`."""
    evaluation = evaluation_build(rule=rule, window_end=window_end, source=source, outcome=outcome, summary=summary,
                                  inputs=inputs, numbers=numbers)
    entry = evaluation_entry(evaluation)
    evaluations_insert(evaluations=[evaluation], evaluated_at=evaluated_at)
    audit_entries(actor=actor, entries=[entry])
    return evaluation


def evaluation_build(*, rule: Rule, window_end: datetime, source: str, outcome: str, summary: str, inputs: dict,
                     numbers: bytes = b"") -> Evaluation:
    """The evaluation `evaluation_record` keeps, not yet saved (a batch inserts many at once)."""
    return Evaluation(workspace_id=rule.workspace_id, rule=rule, rule_version=rule.version, window_end=window_end,
                      source=source, outcome=outcome, summary=summary, inputs=inputs, numbers=numbers)


def evaluation_entry(evaluation: Evaluation) -> LazyEntry:
    """The "rule.evaluate" audit event, with the evaluation's outcome as it is now."""
    return entry_as_of("rule.evaluate", evaluation, {"outcome": evaluation.outcome},
                       workspace_id=evaluation.workspace_id,
                       after={"rule": evaluation.rule_id, "rule_version": evaluation.rule_version,
                              "window_end": evaluation.window_end, "outcome": evaluation.outcome})


def evaluations_insert(*, evaluations: Sequence[Evaluation], evaluated_at: datetime) -> None:
    """Insert built evaluations (one query), and mark their rules as evaluated at `evaluated_at` (one more).
    The caller audits them (`evaluation_entry`), in its transaction."""
    # Their numbers weigh megabytes per cycle: sent in binary (see rulesplatform.bulk_insert).
    bulk_insert(evaluations)
    Rule.objects.filter(pk__in={e.rule_id for e in evaluations}).update(last_evaluated_at=evaluated_at)
    for evaluation in evaluations:
        evaluation.rule.last_evaluated_at = evaluated_at



@transaction.atomic
def evaluation_set_outcome(*, actor: Actor, evaluation: Evaluation, outcome: str, summary: str,
                           inputs: dict | None = None) -> Evaluation:
    """Correct the outcome once the change pipeline has answered (e.g. every change was blocked by a cap),
    and, when given, the inputs (e.g. with the changes the pipeline blocked without recording them)."""
    entry = evaluation_correct(evaluation, outcome=outcome, summary=summary, inputs=inputs)
    evaluation.save(update_fields=["outcome", "summary"] + (["inputs"] if inputs is not None else []))
    audit_entries(actor=actor, entries=[entry])
    return evaluation


def evaluation_correct(evaluation: Evaluation, *, outcome: str, summary: str, inputs: dict | None = None) -> LazyEntry:
    """What `evaluation_set_outcome` changes, in memory only; returns its "rule.evaluation_outcome" audit event."""
    before = {"outcome": evaluation.outcome}
    evaluation.outcome, evaluation.summary = outcome, summary
    if inputs is not None:
        evaluation.inputs = inputs
    return entry_as_of("rule.evaluation_outcome", evaluation, {"outcome": outcome},
                       workspace_id=evaluation.workspace_id, before=before, after={"outcome": outcome})


# --- helpers ---------------------------------------------------------------------------------


def _refuse_edit_of_live_rule(actor: Actor, rule: Rule) -> None:
    if rule.status == Rule.Status.ARCHIVED:
        raise Conflict("This rule is archived; archived rules cannot be changed.")
    # Editing a live rule changes what it does to money: that needs the same right as activating it.
    if rule.status == Rule.Status.ACTIVE and actor.user is not None and not user_may(
        actor.user, Perm.ACTIVATE_RULES, rule.workspace_id
    ):
        raise PermissionDenied("This rule is active: ask someone who may activate rules to pause it before editing.")


def _validate(rule: Rule, triggers: Sequence[Mapping], campaigns: list[Campaign], *,
              require_triggers: bool = False) -> None:
    errors = rule_problems(rule, campaigns, RULE_FIELDS)
    if require_triggers and not triggers:
        errors.setdefault("triggers", []).append("A rule needs at least one trigger before it can run.")
    for index, trigger in enumerate(triggers):
        for field, messages in trigger_problems(rule.workspace, trigger).items():
            errors.setdefault(f"triggers[{index}].{field}", []).extend(messages)
    if errors:
        raise ValidationError(errors)


def _write_triggers(rule: Rule, triggers: Sequence[Mapping]) -> None:
    Trigger.objects.bulk_create(
        [Trigger(rule=rule, position=i, **with_trigger_defaults(t)) for i, t in enumerate(triggers)]
    )
