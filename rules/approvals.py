"""Deciding the changes that wait for approval: approve, reject, escalate, revise; SLA escalation; expiry.

Who decides (rules.policy): a person whose membership decides the change's level (approvers up
to their `approval_level`, workspace admins every level); workers never approve.
  - four eyes: the requester of a change, and the owner of the rule that made it, cannot approve it;
  - an approver approves only within their limits (% and daily amount); above, they may only
    escalate, with a comment; rejecting needs a comment too;
  - a decision may name the content it was made on (`content_hash`, as listed by the queue):
    if the change was revised since, the decision is refused rather than bound to other content;
  - the policy may require several distinct approvers; approvals count only while they match
    the change's current content (rules.binding). Enough of them approve it, and it is applied
    at once (compare-and-set: a target that moved meanwhile leaves it conflicted).
A reallocation batch is decided as one: a decision on any of its changes is a decision on all.

The beat claims overdue work with conditional UPDATEs (healthchecks' `sendalerts` style): a
change escalates when `status` and `approval_level` are still those read AND its SLA has run
out, so two beats (or a person deciding at the same moment) never escalate it twice.
"""

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from accounts.roles import Perm
from accounts.services import require_perm
from audit.actors import Actor
from audit.services import audit_record

from .binding import approval_record, approvers_of_current_content, content_hash
from .changes import (
    AWAITING_DECISION,
    change_reroute,
    change_transition,
    changes_apply_approved,
    transition_allowed,
)
from .exceptions import (
    AboveApprovalLevel,
    AboveApprovalLimit,
    AlreadyApprovedByYou,
    CannotApproveOwnChange,
    ChangeContentChanged,
    ChangeNotDecidable,
    CommentRequired,
    InvalidManualChange,
    NotAnApprover,
    TopLevelReached,
)
from .manual_changes import cap_for_person, parse_requested
from .models import Approval, Change, NotificationEvent
from .notifications import notify_decided, notify_pending
from .policy import Authority, authority_of, group_size, policy_for_change
from .targets import TARGET_MODELS, format_value, read_value

logger = logging.getLogger(__name__)
Status = Change.Status
Decision = Approval.Decision
SLA_ACTOR = Actor.system("approval_sla")


# --- decisions by people -------------------------------------------------------------------------

@transaction.atomic
def change_approve(*, actor: Actor, change: Change, comment: str = "", content_hash: str | None = None,
                   now: datetime | None = None) -> Change:
    """Approve; once the policy's number of approvers is reached, the change is applied."""
    now = now or timezone.now()
    group = _open_group(change, content_hash)
    authority = _authority_for(actor, group[0])
    _refuse_own(actor, group[0])
    problems = authority.limits_exceeded(group_size(group))
    if problems:
        raise AboveApprovalLimit(f"You may not approve this change: {'; '.join(problems)}. Escalate it instead.",
                                 extra={"change": group[0].pk})
    if actor.user_id in approvers_of_current_content(group[0]):
        raise AlreadyApprovedByYou("You have approved this change already; another approver must approve it too.")
    for member in group:
        approval_record(actor=actor, change=member, decision=Decision.APPROVE, comment=comment, now=now)
    approvers, required = len(approvers_of_current_content(group[0])), policy_for_change(group[0]).approvals_required
    _audit_all(actor, group, "change.approve", comment, after={"approvals": approvers, "required": required})
    if approvers < required:
        return _the(change, group)
    for member in group:
        change_transition(member, Status.APPROVED)
        member.save(update_fields=["status"])
    done = changes_apply_approved(actor=actor, changes=group, now=now)
    applied = done[0].status == Status.APPLIED
    notify_decided(changes=done, event=NotificationEvent.CHANGE_APPLIED if applied
                   else NotificationEvent.CHANGE_NOT_APPLIED, comment=comment)
    return _the(change, done)


@transaction.atomic
def change_reject(*, actor: Actor, change: Change, comment: str, content_hash: str | None = None,
                  now: datetime | None = None) -> Change:
    _require_comment(comment, "Say why you reject this change.")
    now = now or timezone.now()
    group = _open_group(change, content_hash)
    _authority_for(actor, group[0])
    for member in group:
        approval_record(actor=actor, change=member, decision=Decision.REJECT, comment=comment, now=now)
        change_transition(member, Status.REJECTED)
        member.sla_due_at = None
        member.save(update_fields=["status", "sla_due_at"])
    _audit_all(actor, group, "change.reject", comment)
    notify_decided(changes=group, event=NotificationEvent.CHANGE_REJECTED, comment=comment)
    return _the(change, group)


@transaction.atomic
def change_escalate(*, actor: Actor, change: Change, comment: str, content_hash: str | None = None,
                    now: datetime | None = None) -> Change:
    """Hand the change to the next approval level (an approver above their limit does this)."""
    _require_comment(comment, "Say why you escalate this change.")
    now = now or timezone.now()
    group = _open_group(change, content_hash)
    _authority_for(actor, group[0])
    policy = policy_for_change(group[0])
    if group[0].approval_level >= policy.max_level:
        raise TopLevelReached(f"Level {group[0].approval_level} is the highest approval level of this policy: "
                              "approve or reject the change.")
    _escalate(actor, group, comment=comment, to_level=group[0].approval_level + 1,
              sla_minutes=policy.sla_minutes(group[0].approval_level + 1), now=now)
    return _the(change, group)


def _escalate(actor: Actor, group: Sequence[Change], *, comment: str, to_level: int, sla_minutes: int,
              now: datetime) -> None:
    for member in group:
        approval_record(actor=actor, change=member, decision=Decision.ESCALATE, comment=comment, now=now)
        change_transition(member, Status.ESCALATED)
        member.approval_level, member.sla_due_at = to_level, now + timedelta(minutes=sla_minutes)
        member.save(update_fields=["status", "approval_level", "sla_due_at"])
    _audit_all(actor, group, "change.escalate", comment, after={"approval_level": to_level})
    notify_pending(changes=group)


@transaction.atomic
def change_revise(*, actor: Actor, change: Change, value: str, reason: str, now: datetime | None = None) -> Change:
    """Edit the value of a change that waits for approval, as its new requester.

    The value is capped again against the target as it is now; the change is routed again
    (auto-approved and applied, or back to level 1), and approvals given before no longer count.
    """
    require_perm(actor, Perm.PROPOSE_CHANGES, change.workspace_id)
    _require_comment(reason, "Say why you revise this change.")
    now = now or timezone.now()
    group = _open_group(change, None)
    if len(group) > 1:
        raise ChangeNotDecidable("A change of a reallocation batch is not edited alone: reject the batch instead.")
    change = group[0]
    target = TARGET_MODELS[_target_kind(change)].objects.select_for_update().get(pk=change.target.pk)
    current, requested = read_value(target, change.field), parse_requested(change.field, value)
    capped = cap_for_person(target=target, field=change.field, current=current, requested=requested, now=now)
    if capped.value == current:
        raise InvalidManualChange("The caps leave nothing of this value: see the cap report.",
                                  extra={"cap_report": capped.report})
    before = {"old_value": change.old_value, "capped_value": change.capped_value, "revision": change.revision}
    change.old_value, change.requested_value = format_value(current), format_value(requested)
    change.capped_value, change.cap_report = format_value(capped.value), capped.report
    change.revision, change.requested_by, change.reason = change.revision + 1, actor.user, reason
    change.save(update_fields=["old_value", "requested_value", "capped_value", "cap_report", "revision",
                               "requested_by", "reason"])
    audit_record(actor=actor, action="change.revise", subject=change, before=before, reason=reason,
                 after={"old_value": change.old_value, "capped_value": change.capped_value,
                        "revision": change.revision, "cap_report": change.cap_report})
    change_reroute(actor=actor, change=change, now=now)
    return changes_apply_approved(actor=actor, changes=[change], now=now)[0]


# --- the beat: SLA escalation and expiry ---------------------------------------------------------

def changes_escalate_overdue(*, now: datetime | None = None) -> list[int]:
    """Escalate every change whose level's SLA has run out, each exactly once. Returns their ids."""
    now = now or timezone.now()
    overdue = Change.objects.filter(status__in=AWAITING_DECISION, sla_due_at__lt=now).order_by("pk")
    return [pk for pk, status, level in overdue.values_list("pk", "status", "approval_level")
            if _escalate_overdue(pk, status, level, now)]


@transaction.atomic
def _escalate_overdue(change_id: int, status: str, level: int, now: datetime) -> bool:
    change = Change.objects.select_related("segment__campaign", "creative__campaign", "campaign").get(pk=change_id)
    policy = policy_for_change(change)
    still_overdue = Change.objects.filter(pk=change_id, status=status, approval_level=level, sla_due_at__lt=now)
    if level >= policy.max_level:
        # Nothing above the top level: stop its clock; it waits for a decision or its expiry.
        if still_overdue.update(sla_due_at=None):
            audit_record(actor=SLA_ACTOR, action="change.sla_breach", subject=change,
                         after={"approval_level": level, "top_level": True})
        return False
    if not transition_allowed(status, Status.ESCALATED):
        return False
    claimed = still_overdue.update(status=Status.ESCALATED, approval_level=level + 1,
                                   sla_due_at=now + timedelta(minutes=policy.sla_minutes(level + 1)))
    if not claimed:
        return False  # decided, revised or escalated by someone else since it was read
    change.refresh_from_db()
    approval_record(actor=SLA_ACTOR, change=change, decision=Decision.ESCALATE, level=level, now=now,
                    comment=f"The SLA of level {level} ran out.")
    audit_record(actor=SLA_ACTOR, action="change.escalate", subject=change, before={"status": status,
                 "approval_level": level}, after={"status": change.status, "approval_level": change.approval_level,
                                                  "sla_due_at": change.sla_due_at}, reason="SLA breached")
    notify_pending(changes=[change])
    return True


def changes_expire(*, now: datetime | None = None) -> list[int]:
    """Expire every change still waiting past its expiry, each exactly once. Returns their ids."""
    now = now or timezone.now()
    waiting = Change.objects.filter(status__in=AWAITING_DECISION, expires_at__lte=now).order_by("pk")
    return [pk for pk, status in waiting.values_list("pk", "status") if _expire(pk, status, now)]


@transaction.atomic
def _expire(change_id: int, status: str, now: datetime) -> bool:
    if not transition_allowed(status, Status.EXPIRED):
        return False
    claimed = Change.objects.filter(pk=change_id, status=status, expires_at__lte=now).update(
        status=Status.EXPIRED, sla_due_at=None)
    if not claimed:
        return False
    change = Change.objects.select_related("rule").get(pk=change_id)
    audit_record(actor=SLA_ACTOR, action="change.expire", subject=change, before={"status": status},
                 after={"status": change.status, "expires_at": change.expires_at},
                 reason="Not decided before it expired: its data has gone stale.")
    notify_decided(changes=[change], event=NotificationEvent.CHANGE_EXPIRED)
    return True


# --- helpers -------------------------------------------------------------------------------------

def _open_group(change: Change, expected_hash: str | None) -> list[Change]:
    """The change and its batch, locked, still waiting for a decision on the content the caller saw."""
    # Lock the change rows only (PostgreSQL cannot lock the nullable side of the joined targets).
    rows = Change.objects.select_for_update(of=("self",)).select_related(
        "segment__campaign", "creative__campaign", "campaign", "rule")
    locked = rows.get(pk=change.pk)
    group = list(rows.filter(batch_id=locked.batch_id).order_by("pk")) if locked.batch_id else [locked]
    if any(member.status not in AWAITING_DECISION for member in group):
        raise ChangeNotDecidable(f"Change #{locked.pk} is {locked.get_status_display().lower()}: it is not waiting "
                                 "for a decision.", extra={"change": locked.pk, "status": locked.status})
    if expected_hash is not None and expected_hash != content_hash(locked):
        raise ChangeContentChanged(f"Change #{locked.pk} was revised since you looked at it: look again.",
                                   extra={"change": locked.pk, "content_hash": content_hash(locked)})
    return group


def _authority_for(actor: Actor, change: Change) -> Authority:
    authority = authority_of(actor, change.workspace_id)
    if not authority.level:
        raise NotAnApprover("You decide no approval level in this workspace.")
    if not authority.decides_level(change.approval_level):
        raise AboveApprovalLevel(f"This change waits at level {change.approval_level}; you decide up to level "
                                 f"{authority.level}.")
    return authority


def _refuse_own(actor: Actor, change: Change) -> None:
    if actor.user_id is not None and actor.user_id == change.requested_by_id:
        raise CannotApproveOwnChange("You requested this change: someone else must approve it.")
    if actor.user_id is not None and change.rule_id and actor.user_id == change.rule.owner_id:
        raise CannotApproveOwnChange("This change comes from your rule: someone else must approve it.")


def _require_comment(comment: str, message: str) -> None:
    if not (comment or "").strip():
        raise CommentRequired(message)


def _target_kind(change: Change) -> str:
    return next(kind for kind in TARGET_MODELS if getattr(change, f"{kind}_id") is not None)


def _audit_all(actor: Actor, group: Sequence[Change], action: str, comment: str, *, after: dict | None = None):
    for member in group:
        audit_record(actor=actor, action=action, subject=member, reason=comment,
                     after={"status": member.status, "approval_level": member.approval_level,
                            "content_hash": content_hash(member), **(after or {})})


def _the(change: Change, group: Sequence[Change]) -> Change:
    return next(member for member in group if member.pk == change.pk)
