"""Rolling back an applied change: the inverse change, through the change pipeline.

History is never rewritten: the rollback is a new change (kind ROLLBACK) from the value the
target holds now back to the value the change replaced, proposed and applied by
`rules.changes`, so it is locked, compare-and-set, idempotent and audited like any change.

Compare-and-set on the rollback itself: if the target moved since the change was applied
(another change, a person's edit), rolling back would silently undo that later move too, so
it is refused with the values found, unless a workspace admin forces it.
"""

from django.db import transaction

from accounts.exceptions import ApplicationError, Conflict
from accounts.roles import Perm
from accounts.services import require_perm
from audit.actors import Actor
from rules.changes import change_apply, change_propose
from rules.models import Change
from rules.targets import FIELDS, format_value, read_value

ROLLBACK_KEY = "rollback:{change_id}"


@transaction.atomic
def change_rollback(*, actor: Actor, change: Change, reason: str, force: bool = False) -> Change:
    """Propose and apply the inverse of an applied change. Returns the rollback change."""
    require_perm(actor, Perm.ROLLBACK, change.workspace_id)
    if force:
        require_perm(actor, Perm.MANAGE_WORKSPACE, change.workspace_id)
    if not reason.strip():
        raise ApplicationError("Say why this change is rolled back.")
    change = Change.objects.select_related("segment", "creative", "campaign").get(pk=change.pk)
    _refuse_unless_rollbackable(change)
    target = type(change.target).objects.select_for_update().get(pk=change.target.pk)
    current = format_value(read_value(target, change.field))
    if current != change.capped_value and not force:
        raise Conflict(
            f"The {change.get_field_display().lower()} moved since change #{change.pk} was applied: it set "
            f"{change.capped_value}, it is now {current}. Rolling back would also undo that later move; "
            "a workspace admin may force it.",
            extra={"change": change.pk, "applied_value": change.capped_value, "current_value": current},
        )
    inverse, _created = change_propose(
        actor=actor, target=target, field=change.field, old_value=current,
        requested_value=change.old_value, capped_value=change.old_value,
        cap_report=[{"cap": "rollback", "bound": False,
                     "note": f"Restores the value change #{change.pk} replaced; caps bound the original change."}],
        idempotency_key=ROLLBACK_KEY.format(change_id=change.pk), kind=Change.Kind.ROLLBACK,
        rule=change.rule, rule_version=change.rule_version, batch_id="",
        reason=f"Rollback of change #{change.pk}{' (forced)' if force else ''}: {reason}",
    )
    return change_apply(actor=actor, change=inverse)


def _refuse_unless_rollbackable(change: Change) -> None:
    if change.field not in FIELDS:
        raise Conflict("This change set no value (an alert): there is nothing to roll back.")
    if change.status != Change.Status.APPLIED:
        raise Conflict(f"Only an applied change can be rolled back; this one is {change.get_status_display().lower()}.")
    if Change.objects.filter(idempotency_key=ROLLBACK_KEY.format(change_id=change.pk)).exists():
        raise Conflict(f"Change #{change.pk} has already been rolled back.")
