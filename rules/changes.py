"""Writes for changes: propose (and route through the approval policy), apply, mark conflicted.

The life cycle of a change, decided here and nowhere else (`TRANSITIONS`, enforced by
`change_transition`, which every service calls before it moves a change):

    proposed -> approved (the policy auto-approves it) -> applied | conflicted | failed
    proposed -> pending (level 1) -> approved -> applied | conflicted | failed
                                  -> rejected | expired
                                  -> escalated (level k) -> escalated (level k+1) -> ...
                                                         -> approved | rejected | expired
    pending / escalated -> pending (revised: back to level 1, earlier approvals void)
    blocked (capped to nothing) is terminal from the start.

A change is applied only when it is APPROVED *and* an approval bound to its current content
exists (rules.binding): an edit after approval voids it.

Applying is the dangerous step, so it is built to be safe under retries and concurrency:
  - one transaction; the change rows, then the targets, are locked (`select_for_update`) in a
    fixed order (by model, then id), so two appliers of overlapping targets cannot deadlock;
  - only a change still in a status that may become APPLIED is applied: a second applier (a
    retried task, a concurrent worker) finds it applied and does nothing;
  - compare-and-set: the target must still hold the change's old value. If it moved since the
    change was planned, the change becomes CONFLICTED and the target is left alone;
  - a batch (a reallocation) applies all or nothing: one conflict conflicts the whole batch,
    so a campaign's total budget is never half moved;
  - the target update and its audit event (before/after) commit together, and its pushes to
    the workspace's connectors are recorded with it and sent once it commits (rules.pushes).
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models.base import ModelState
from django.utils import timezone

from accounts.roles import Perm
from accounts.services import require_perm
from audit.actors import Actor
from audit.services import AuditEntry, audit_record_many

from .binding import approval_for, is_approved_as_is
from .exceptions import ApprovalNoLongerValid, IllegalTransition
from .models import Approval, ApprovalPolicy, Change, Evaluation, Rule
from .notifications import notify_pending
from .policy import auto_applied_amount_in_day, policy_for_change, route
from .pushes import pushes_enqueue
from .targets import FIELDS, TARGET_MODELS, Target, format_value, parse_value, read_value, target_type

logger = logging.getLogger(__name__)
Status = Change.Status

# Statuses a change is created in: PROPOSED, or BLOCKED when the caps left nothing to change.
INITIAL_STATUSES = frozenset({Status.PROPOSED, Status.BLOCKED})
_DECIDED = frozenset({Status.APPROVED, Status.REJECTED, Status.EXPIRED, Status.ESCALATED, Status.PENDING})
# Allowed moves. Terminal statuses (applied, blocked, rejected, expired, conflicted, failed) have no entry.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.PROPOSED: frozenset({Status.APPROVED, Status.PENDING}),
    Status.PENDING: _DECIDED,
    Status.ESCALATED: _DECIDED,
    Status.APPROVED: frozenset({Status.APPLIED, Status.CONFLICTED, Status.FAILED}),
}
APPLICABLE_STATUSES = frozenset(s for s, targets in TRANSITIONS.items() if Status.APPLIED in targets)
# Waiting for a person: what the approval queue lists, what escalates and expires.
AWAITING_DECISION = frozenset({Status.PENDING, Status.ESCALATED})
# An audit entry, or what builds it once the rows it names have their ids (a batch inserts them last).
LazyEntry = AuditEntry | Callable[[], AuditEntry]


def audit_entries(*, actor: Actor, entries: Sequence[LazyEntry]) -> None:
    audit_record_many(actor=actor, entries=[entry() if callable(entry) else entry for entry in entries])


def entry_as_of(action: str, subject, state: dict, **fields) -> LazyEntry:
    """An audit entry whose subject is shown as it is now, `state` being the fields its repr shows
    (a status, an outcome): a batch builds it once the subject has its id, by when the subject may have moved on."""
    def build() -> AuditEntry:
        return AuditEntry(action, as_of(subject, state), **fields)
    return build


def as_of(subject, state: dict):
    """A copy of the model instance `subject` with `state` over its fields. It is the shallow copy
    `copy.copy` makes (own `_state` and cache of related rows), made directly: `copy.copy` goes
    through pickling (`Model.__reduce__`), a cost above the rest of an audit event's in a batch."""
    earlier = type(subject).__new__(type(subject))
    earlier.__dict__ = {**subject.__dict__, **state}
    earlier._state = ModelState()
    earlier._state.__dict__ = {**subject._state.__dict__, "fields_cache": dict(subject._state.fields_cache)}
    return earlier


def transition_allowed(from_status: str, to_status: str) -> bool:
    return to_status in TRANSITIONS.get(from_status, frozenset())


def change_transition(change: Change, to: str) -> None:
    """The one guard of the life cycle: every service moves a change through here (or checks
    `transition_allowed` before a conditional UPDATE that claims the move)."""
    if not transition_allowed(change.status, to):
        raise IllegalTransition(
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
        "target": "{}:{}".format(*target_key(change)),
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
    now: datetime | None = None,
    route_now: bool = True,
) -> tuple[Change, bool]:
    """Record a capped change and route it through the approval policy. Returns (change, created).

    BLOCKED when capped to nothing; otherwise APPROVED (the policy auto-approves it) or PENDING
    at level 1. A caller proposing a batch passes `route_now=False` and routes the batch as one
    with `changes_route`. The idempotency key is unique: proposing again (a retried task, a
    concurrent worker) returns the change already recorded under that key and creates nothing.
    """
    change = change_build(
        actor=actor, target=target, field=field, old_value=old_value, requested_value=requested_value,
        capped_value=capped_value, cap_report=cap_report, idempotency_key=idempotency_key, kind=kind, rule=rule,
        rule_version=rule_version, evaluation=evaluation, batch_id=batch_id, reason=reason,
    )
    try:
        # A savepoint: losing the race for the key must not spoil the caller's transaction.
        with transaction.atomic():
            change.save()
    except IntegrityError:
        existing = Change.objects.filter(idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return existing, False
    audit_entries(actor=actor, entries=[proposal_entry(change)])
    if route_now and change.status == Status.PROPOSED:
        changes_route(actor=actor, changes=[change], now=now)
    return change, True


def change_build(*, actor: Actor, target: Target, field: str, old_value: str, requested_value: str,
                 capped_value: str, cap_report: list[dict], idempotency_key: str, kind: str = Change.Kind.RULE,
                 rule: Rule | None = None, rule_version: int | None = None, evaluation: Evaluation | None = None,
                 batch_id: str = "", reason: str = "") -> Change:
    """The change `change_propose` records, in its initial status, not yet saved (a batch saves many at once)."""
    change = Change(
        workspace_id=target.workspace_id, kind=kind, rule=rule, rule_version=rule_version, evaluation=evaluation,
        field=field, old_value=old_value, requested_value=requested_value, capped_value=capped_value,
        cap_report=cap_report, status=Status.BLOCKED if capped_value == old_value else Status.PROPOSED,
        batch_id=batch_id, idempotency_key=idempotency_key, requested_by=actor.user, reason=reason,
        **{target_type(target): target},
    )
    _require_change_perm(actor, change, Perm.PROPOSE_CHANGES)
    return change


def proposal_entry(change: Change) -> LazyEntry:
    """The audit event of a change just built: its facts as proposed (it may move on before a batch audits it)."""
    state = {"status": change.status}
    action = "change.propose" if change.status == Status.PROPOSED else "change.block"

    def build() -> AuditEntry:
        proposed = as_of(change, state)
        return AuditEntry(action, proposed, after=_change_facts(proposed), reason=change.reason)
    return build


@transaction.atomic
def changes_route(*, actor: Actor, changes: Sequence[Change], now: datetime | None = None) -> list[Change]:
    """Send proposed changes (one, or a batch judged as one) on: auto-approved, or pending at level 1.

    Only PROPOSED changes move: a change recorded by a concurrent run and already routed is left
    as it is. Approvers who may decide level 1 are notified once the transaction commits.
    Approved changes are for the caller to apply (`changes_apply_approved`).
    """
    _route(actor, [c for c in changes if c.status == Status.PROPOSED], now or timezone.now())
    return list(changes)


@transaction.atomic
def change_reroute(*, actor: Actor, change: Change, now: datetime | None = None) -> Change:
    """Route a revised change again (rules.approvals.change_revise): its earlier routing no longer holds."""
    _route(actor, [change] if change.status in AWAITING_DECISION else [], now or timezone.now())
    return change


def _route(actor: Actor, routable: list[Change], now: datetime) -> None:
    if not routable:
        return
    routed = route_in_memory(actor, routable, policy=policy_for_change(routable[0]), now=now,
                             auto_amount_in_day=auto_applied_amount_in_day(workspace_id=routable[0].workspace_id,
                                                                           now=now))
    for change in routable:
        change.save(update_fields=["status", "policy_report", "approval_level", "sla_due_at", "expires_at"])
    Approval.objects.bulk_create(routed.approvals)
    audit_entries(actor=actor, entries=routed.entries)
    if not routed.auto:
        notify_pending(changes=routable)


@dataclass
class Routed:
    """What routing a group decided, in memory: the approvals and audit events to write."""

    auto: bool
    approvals: list[Approval] = field(default_factory=list)
    entries: list[LazyEntry] = field(default_factory=list)


def route_in_memory(actor: Actor, routable: Sequence[Change], *, policy: ApprovalPolicy,
                    auto_amount_in_day, now: datetime) -> Routed:
    """Move proposed changes (a group judged as one) to APPROVED (auto) or PENDING at level 1; writes nothing."""
    routing = route(policy, routable, auto_amount_in_day=auto_amount_in_day)
    routed = Routed(routing.auto)
    for change in routable:
        before = {"status": change.status, "approval_level": change.approval_level}
        change.policy_report = routing.report
        if routing.auto:
            change_transition(change, Status.APPROVED)
            change.approval_level, change.sla_due_at, change.expires_at = 0, None, None
            routed.approvals.append(approval_for(actor=actor, change=change, decision=Approval.Decision.AUTO,
                                                 comment="Within the approval policy's auto-apply limits.", now=now))
        else:
            change_transition(change, Status.PENDING)
            change.approval_level = 1
            change.sla_due_at = now + timedelta(minutes=policy.sla_minutes(1))
            change.expires_at = now + timedelta(minutes=policy.pending_expiry_minutes)
        routed.entries.append(entry_as_of(
            "change.auto_approve" if routing.auto else "change.await_approval", change, {"status": change.status},
            before=before,
            after={"status": change.status, "approval_level": change.approval_level, "policy_report": routing.report,
                   "sla_due_at": change.sla_due_at, "expires_at": change.expires_at}))
    return routed


def changes_apply_approved(*, actor: Actor, changes: Sequence[Change], now: datetime | None = None) -> list[Change]:
    """Apply the approved ones among `changes` (as one batch); return every change, as it now is."""
    approved = [c for c in changes if c.status == Status.APPROVED]
    if not approved:
        return list(changes)
    applied = {c.pk: c for c in change_apply_batch(actor=actor, changes=approved, now=now)}
    return [applied.get(c.pk, c) for c in changes]


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
    refuse_unless_approved_as_is(pending)
    targets = _lock_targets(pending)
    moved = moved_targets(pending, targets)
    if moved:
        _conflict_batch(actor, pending, moved)
        return locked
    decided_from = {c.pk: c.status for c in pending}
    try:
        with transaction.atomic():
            for change in pending:
                _write_target(actor, change, targets[target_key(change)], now)
    except IntegrityError as error:
        # A database constraint refused a value (e.g. a bound tightened since planning); the
        # savepoint undid the batch in the database, so undo it in memory too.
        for change in pending:
            change.status, change.applied_at = decided_from[change.pk], None
        _fail_batch(actor, pending, str(error))
        return locked
    pushes_enqueue(changes=pending)
    return locked


@transaction.atomic
def change_mark_conflicted(*, actor: Actor, change: Change, reason: str) -> Change:
    change = Change.objects.select_for_update().get(pk=change.pk)
    _mark(actor, change, Status.CONFLICTED, reason, action="change.conflict")
    return change


def moved_targets(changes: Sequence[Change], targets: dict[tuple[str, int], Target]) -> dict[int, str]:
    """Compare-and-set: the changes whose target no longer holds their old value, with the value found."""
    found = {id(c): format_value(read_value(targets[target_key(c)], c.field)) for c in changes}
    return {id(c): found[id(c)] for c in changes if found[id(c)] != c.old_value}


def refuse_unless_approved_as_is(changes: Sequence[Change],
                                 approved: Callable[[Change], bool] = is_approved_as_is) -> None:
    # The approval is the authorisation to apply: it must be for exactly this content.
    for change in changes:
        if not approved(change):
            raise ApprovalNoLongerValid(
                f"Change #{change.pk} was edited after it was approved: it needs a new approval.",
                extra={"change": change.pk},
            )


def target_key(change: Change) -> tuple[str, int]:
    return next((kind, pk) for kind in TARGET_MODELS if (pk := getattr(change, f"{kind}_id")) is not None)


def _lock_targets(changes: Sequence[Change]) -> dict[tuple[str, int], Target]:
    keys = sorted({target_key(c) for c in changes})
    locked: dict[tuple[str, int], Target] = {}
    for kind in sorted({k for k, _ in keys}):
        ids = [pk for k, pk in keys if k == kind]
        model = TARGET_MODELS[kind]
        for target in model.objects.select_for_update().filter(pk__in=ids).order_by("pk"):
            locked[(kind, target.pk)] = target
    return locked


def _write_target(actor: Actor, change: Change, target: Target, now: datetime) -> None:
    entry = apply_in_memory(change, target, now)
    target.save(update_fields=[target_attr(change), "updated_at"])
    change.save(update_fields=["status", "applied_at"])
    audit_entries(actor=actor, entries=[entry])


def apply_in_memory(change: Change, target: Target, now: datetime) -> LazyEntry:
    """Set the target's value and move the change to APPLIED; writes nothing. Returns its audit event."""
    setattr(target, target_attr(change), parse_value(change.field, change.capped_value))
    change_transition(change, Status.APPLIED)
    change.applied_at = now
    return lambda: AuditEntry(
        "change.apply", target, workspace_id=change.workspace_id,
        before={change.field: change.old_value}, after={change.field: change.capped_value, "change": change.pk},
        reason=f"Change #{change.pk}: {change.reason}".strip(),
    )


def target_attr(change: Change) -> str:
    return FIELDS[change.field].attr


def _conflict_batch(actor: Actor, pending: Sequence[Change], moved: dict[int, str]) -> None:
    entries = conflict_in_memory(pending, moved)
    for change in pending:
        change.save(update_fields=["status", "error"])
    audit_entries(actor=actor, entries=entries)
    logger.info("Changes %s conflicted: targets moved", [c.pk for c in pending])


def conflict_in_memory(pending: Sequence[Change], moved: dict[int, str]) -> list[LazyEntry]:
    """Mark a group CONFLICTED (all or nothing) given `moved_targets`; writes nothing. Returns the audit events."""
    entries = []
    for change in pending:
        if id(change) in moved:
            why = (f"The target moved since the change was planned: expected {change.old_value}, "
                   f"found {moved[id(change)]}.")
        else:
            why = "Another change of its batch conflicted; the batch applies all or nothing."
        entries.append(_mark_in_memory(change, Status.CONFLICTED, why, action="change.conflict"))
    return entries


def _fail_batch(actor: Actor, pending: Sequence[Change], error: str) -> None:
    for change in pending:
        _mark(actor, change, Status.FAILED, error, action="change.fail")
    logger.warning("Changes %s failed: %s", [c.pk for c in pending], error)


def _mark(actor: Actor, change: Change, status: str, error: str, *, action: str) -> None:
    entry = _mark_in_memory(change, status, error, action=action)
    change.save(update_fields=["status", "error"])
    audit_entries(actor=actor, entries=[entry])


def _mark_in_memory(change: Change, status: str, error: str, *, action: str) -> LazyEntry:
    before = change.status
    change_transition(change, status)
    change.error = error
    return entry_as_of(action, change, {"status": status}, before={"status": before},
                       after={"status": change.status, "error": error})
