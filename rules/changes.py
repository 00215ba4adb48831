"""Writes for changes: propose, apply (alone or as a batch), mark conflicted.

A change moves through the statuses of `TRANSITIONS` and nowhere else; that table is the
one place the life cycle is decided (the approval workflow adds its states there).

Applying is the dangerous step, so it is built to be safe under retries and concurrency:
  - one transaction; the change rows, then the targets, are locked (`select_for_update`) in a
    fixed order (by model, then id), so two appliers of overlapping targets cannot deadlock;
  - only a change still in a status that may become APPLIED is applied: a second applier (a
    retried task, a concurrent worker) finds it applied and does nothing;
  - compare-and-set: the target must still hold the change's old value. If it moved since the
    change was planned, the change becomes CONFLICTED and the target is left alone;
  - a batch (a reallocation) applies all or nothing: one conflict conflicts the whole batch,
    so a campaign's total budget is never half moved;
  - the target update and its audit event (before/after) commit together.
"""

import logging
from collections.abc import Sequence
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.exceptions import Conflict
from accounts.roles import Perm
from accounts.services import require_perm
from audit.actors import Actor
from audit.services import audit_record

from .models import Change, Evaluation, Rule
from .targets import FIELDS, TARGET_MODELS, Target, format_value, parse_value, read_value, target_type

logger = logging.getLogger(__name__)
Status = Change.Status

# Statuses a change is created in: PROPOSED, or BLOCKED when the caps left nothing to change.
INITIAL_STATUSES = frozenset({Status.PROPOSED, Status.BLOCKED})
# Allowed moves. Terminal statuses (applied, blocked, conflicted, failed, ...) have no entry.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.PROPOSED: frozenset({Status.APPLIED, Status.CONFLICTED, Status.FAILED}),
}
APPLICABLE_STATUSES = frozenset(s for s, targets in TRANSITIONS.items() if Status.APPLIED in targets)


class ChangeTransitionRefused(Conflict):
    pass


def _transition(change: Change, to: str) -> None:
    if to not in TRANSITIONS.get(change.status, frozenset()):
        raise ChangeTransitionRefused(
            f"A change that is {change.get_status_display().lower()} cannot become {Status(to).label.lower()}.",
            extra={"change": change.pk, "status": change.status, "to": to},
        )
    change.status = to


def _require_change_perm(actor: Actor, change: Change, perm: str) -> None:
    # A rule's changes were authorised when an approver activated the rule; whoever triggers
    # its run (worker, beat, a person's manual run) does not need to authorise them again.
    if change.kind != Change.Kind.RULE:
        require_perm(actor, perm, change.workspace_id)


def _change_facts(change: Change) -> dict:
    return {
        "target": "{}:{}".format(*_target_key(change)),
        "field": change.field,
        "old_value": change.old_value,
        "requested_value": change.requested_value,
        "capped_value": change.capped_value,
        "status": change.status,
        "cap_report": change.cap_report,
        "rule": change.rule_id,
        "rule_version": change.rule_version,
        "evaluation": change.evaluation_id,
        "batch_id": change.batch_id,
    }


@transaction.atomic
def change_propose(
    *,
    actor: Actor,
    target: Target,
    field: str,
    old_value: str,
    requested_value: str,
    capped_value: str,
    cap_report: list[dict],
    idempotency_key: str,
    kind: str = Change.Kind.RULE,
    rule: Rule | None = None,
    rule_version: int | None = None,
    evaluation: Evaluation | None = None,
    batch_id: str = "",
    reason: str = "",
) -> tuple[Change, bool]:
    """Record a capped change: PROPOSED, or BLOCKED when capped to nothing. Returns (change, created).

    The idempotency key is unique: proposing again (a retried task, a concurrent worker)
    returns the change already recorded under that key and creates nothing.
    """
    change = Change(
        workspace_id=target.workspace_id, kind=kind, rule=rule, rule_version=rule_version, evaluation=evaluation,
        field=field, old_value=old_value, requested_value=requested_value, capped_value=capped_value,
        cap_report=cap_report, status=Status.BLOCKED if capped_value == old_value else Status.PROPOSED,
        batch_id=batch_id, idempotency_key=idempotency_key, requested_by=actor.user, reason=reason,
        **{target_type(target): target},
    )
    _require_change_perm(actor, change, Perm.PROPOSE_CHANGES)
    try:
        # A savepoint: losing the race for the key must not spoil the caller's transaction.
        with transaction.atomic():
            change.save()
    except IntegrityError:
        existing = Change.objects.filter(idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return existing, False
    action = "change.propose" if change.status == Status.PROPOSED else "change.block"
    audit_record(actor=actor, action=action, subject=change, after=_change_facts(change), reason=reason)
    return change, True


@transaction.atomic
def change_apply(*, actor: Actor, change: Change, now: datetime | None = None) -> Change:
    """Apply one change (see the module docstring for the guarantees)."""
    return change_apply_batch(actor=actor, changes=[change], now=now)[0]


@transaction.atomic
def change_apply_batch(*, actor: Actor, changes: Sequence[Change], now: datetime | None = None) -> list[Change]:
    """Apply changes all or nothing. Changes no longer applicable are returned untouched."""
    now = now or timezone.now()
    locked = list(Change.objects.select_for_update().filter(pk__in=[c.pk for c in changes]).order_by("pk"))
    pending = [c for c in locked if c.status in APPLICABLE_STATUSES]
    if not pending:
        return locked
    for change in pending:
        _require_change_perm(actor, change, Perm.DECIDE_CHANGES)
    targets = _lock_targets(pending)
    found = {c.pk: format_value(read_value(targets[_target_key(c)], c.field)) for c in pending}
    moved = {c.pk: found[c.pk] for c in pending if found[c.pk] != c.old_value}
    if moved:
        _conflict_batch(actor, pending, moved)
        return locked
    decided_from = {c.pk: c.status for c in pending}
    try:
        with transaction.atomic():
            for change in pending:
                _write_target(actor, change, targets[_target_key(change)], now)
    except IntegrityError as error:
        # A database constraint refused a value (e.g. a bound tightened since planning); the
        # savepoint undid the batch in the database, so undo it in memory too.
        for change in pending:
            change.status, change.applied_at = decided_from[change.pk], None
        _fail_batch(actor, pending, str(error))
    return locked


@transaction.atomic
def change_mark_conflicted(*, actor: Actor, change: Change, reason: str) -> Change:
    change = Change.objects.select_for_update().get(pk=change.pk)
    _mark(actor, change, Status.CONFLICTED, reason, action="change.conflict")
    return change


def _target_key(change: Change) -> tuple[str, int]:
    return next((kind, pk) for kind in TARGET_MODELS if (pk := getattr(change, f"{kind}_id")) is not None)


def _lock_targets(changes: Sequence[Change]) -> dict[tuple[str, int], Target]:
    keys = sorted({_target_key(c) for c in changes})
    locked: dict[tuple[str, int], Target] = {}
    for kind in sorted({k for k, _ in keys}):
        ids = [pk for k, pk in keys if k == kind]
        model = TARGET_MODELS[kind]
        for target in model.objects.select_for_update().filter(pk__in=ids).order_by("pk"):
            locked[(kind, target.pk)] = target
    return locked


def _write_target(actor: Actor, change: Change, target: Target, now: datetime) -> None:
    attr_value = parse_value(change.field, change.capped_value)
    setattr(target, _attr(change), attr_value)
    target.save(update_fields=[_attr(change), "updated_at"])
    _transition(change, Status.APPLIED)
    change.applied_at = now
    change.save(update_fields=["status", "applied_at"])
    audit_record(
        actor=actor, action="change.apply", subject=target, workspace_id=change.workspace_id,
        before={change.field: change.old_value}, after={change.field: change.capped_value, "change": change.pk},
        reason=f"Change #{change.pk}: {change.reason}".strip(),
    )


def _attr(change: Change) -> str:
    return FIELDS[change.field].attr


def _conflict_batch(actor: Actor, pending: Sequence[Change], moved: dict[int, str]) -> None:
    for change in pending:
        if change.pk in moved:
            why = (f"The target moved since the change was planned: expected {change.old_value}, "
                   f"found {moved[change.pk]}.")
        else:
            why = "Another change of its batch conflicted; the batch applies all or nothing."
        _mark(actor, change, Status.CONFLICTED, why, action="change.conflict")
    logger.info("Changes %s conflicted: targets moved", [c.pk for c in pending])


def _fail_batch(actor: Actor, pending: Sequence[Change], error: str) -> None:
    for change in pending:
        _mark(actor, change, Status.FAILED, error, action="change.fail")
    logger.warning("Changes %s failed: %s", [c.pk for c in pending], error)


def _mark(actor: Actor, change: Change, status: str, error: str, *, action: str) -> None:
    before = change.status
    _transition(change, status)
    change.error = error
    change.save(update_fields=["status", "error"])
    audit_record(actor=actor, action=action, subject=change, before={"status": before},
                 after={"status": change.status, "error": error})
