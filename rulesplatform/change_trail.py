"""Everything that explains one change, for its page: the rule version it came from (with the
triggers as they were), the evaluation's inputs, and its audit events in order (proposal,
approvals and escalations, application, connector pushes, rollback)."""

from dataclasses import dataclass, field

from django.db.models import Q
from reversion.models import Version

from audit.models import AuditEvent
from audit.selectors import plain, version_children, version_fields
from rules.decisions import evaluation_inputs
from rules.models import Change

from .versioning import rule_version_used


@dataclass(frozen=True)
class ChangeTrail:
    change: Change
    rule_version: Version | None
    rule_settings: dict = field(default_factory=dict)
    rule_triggers: list[dict] = field(default_factory=list)
    evaluation_inputs: dict | None = None
    events: list[AuditEvent] = field(default_factory=list)


def change_trail(change: Change) -> ChangeTrail:
    version = rule_version_used(change)
    triggers = version_children(version).get("triggers", {}) if version else {}
    return ChangeTrail(
        change=change,
        rule_version=version,
        rule_settings=plain(version_fields(version)) if version else {},
        rule_triggers=[plain(triggers[key]) for key in sorted(triggers, key=int)],
        evaluation_inputs=evaluation_inputs(change.evaluation) if change.evaluation_id else None,
        events=list(change_events(change)),
    )


def change_events(change: Change):
    """The change's own events, and those of writes it caused (the target's update)."""
    return AuditEvent.objects.filter(
        Q(subject_type=Change._meta.label_lower, subject_id=str(change.pk)) | Q(after__change=change.pk),
        workspace_id=change.workspace_id,
    ).order_by("id")
