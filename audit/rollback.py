"""Restoring an earlier version as a new version: history is never rewritten.

The generic part lives here: find the object, require a reason, run the model's restore
handler (registered by `rulesplatform.versioning`, which writes through the domain service,
so permissions, validation, version numbers and the domain's own audit event apply), and
record a `version.restore` event that names the version restored. Both events land in ONE
new revision, so the restore shows up as one version in the history.
"""

import reversion
from django.db import transaction
from reversion.models import Version

from .actors import Actor
from .exceptions import RestoreError
from .registry import restore_handler
from .selectors import latest_version
from .services import audit_record


@transaction.atomic
def version_restore(*, actor: Actor, version: Version, reason: str):
    """Make the object look like `version` again, as a new audited version. Returns the object."""
    if not reason.strip():
        raise RestoreError("Say why this version is being restored.", code="reason_required")
    model = version.content_type.model_class()
    handler = restore_handler(model)
    instance = model._base_manager.select_for_update().filter(pk=version.object_id).first()
    if instance is None:
        raise RestoreError(
            f"{version.object_repr} no longer exists; only existing objects can be restored.",
            code="object_gone", status=409,
        )
    current = latest_version(model, version.object_id)
    with reversion.create_revision(manage_manually=True):
        restored = handler(actor=actor, instance=instance, version=version, reason=reason)
        audit_record(
            actor=actor, action="version.restore", subject=restored, reason=reason,
            before={"version": current.pk if current else None},
            after={"restored_from_version": version.pk, "restored_from_time": version.revision.date_created},
        )
    return restored
