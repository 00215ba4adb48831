"""An approval is bound to the exact content of the change it approved.

Each Approval row stores the SHA-256 of the change's content when it was decided: target,
field, old value, capped value, rule version and revision. Revising a change (a person's
edit, a recompute) changes that hash, so approvals given before no longer count: neither
towards the number of approvals the policy requires, nor when the change is applied.
"""

import hashlib
import json
from datetime import datetime
from functools import lru_cache

from audit.actors import Actor

from .models import Approval, Change
from .targets import target_type

Decision = Approval.Decision


def content_hash(change: Change) -> str:
    return _hash_of(f"{target_type(change.target)}:{change.target.pk}", change.field, change.old_value,
                    change.capped_value, change.rule_version, change.revision)


# A batch hashes each change it auto-approves twice (the approval, then the check before applying it).
@lru_cache(maxsize=4096)
def _hash_of(target: str, field: str, old_value: str, capped_value: str, rule_version: int | None,
             revision: int) -> str:
    content = {"target": target, "field": field, "old_value": old_value, "capped_value": capped_value,
               "rule_version": rule_version, "revision": revision}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def approval_record(*, actor: Actor, change: Change, decision: str, comment: str, now: datetime,
                    level: int | None = None) -> Approval:
    """Write one decision (at the change's level unless told); callers are services, inside their
    transaction (they audit it)."""
    approval = approval_for(actor=actor, change=change, decision=decision, comment=comment, now=now, level=level)
    approval.save()
    return approval


def approval_for(*, actor: Actor, change: Change, decision: str, comment: str, now: datetime,
                 level: int | None = None) -> Approval:
    """The decision `approval_record` writes, not yet saved (a batch saves many at once)."""
    return Approval(
        workspace_id=change.workspace_id, change=change, decision=decision,
        level=change.approval_level if level is None else level,
        user=actor.user, actor_label=actor.label, comment=comment, content_hash=content_hash(change),
        created_at=now,
    )


def binds(approval: Approval, change: Change) -> bool:
    """Whether this approval authorises applying the change as it is now (what `is_approved_as_is` asks the
    database, for an approval still in memory)."""
    return approval.decision in (Decision.AUTO, Decision.APPROVE) and approval.content_hash == content_hash(change)


def valid_approvals(change: Change):
    """Approvals (or the auto-approval) given to the change's current content."""
    return change.approvals.filter(decision__in=[Decision.AUTO, Decision.APPROVE], content_hash=content_hash(change))


def approvers_of_current_content(change: Change) -> set[int]:
    return set(valid_approvals(change).filter(decision=Decision.APPROVE).values_list("user_id", flat=True))


def is_approved_as_is(change: Change) -> bool:
    return valid_approvals(change).exists()
