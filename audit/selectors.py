"""Reads of audit events and versions: history of an object, and field-by-field diffs.

Callers pass the workspaces the reader may see (`workspace_ids`; None means every
workspace, for superusers and the system): `audit` cannot ask `accounts` itself.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Exists, OuterRef, QuerySet
from reversion.models import Version

from .models import AuditEvent, VersionAudit
from .registry import versioned_entry


def audit_events(*, workspace_ids: Iterable[int] | None) -> QuerySet[AuditEvent]:
    """Events in the reader's workspaces, newest first (callers add their own filters)."""
    events = AuditEvent.objects.order_by("-id")
    if workspace_ids is None:
        return events
    return events.filter(workspace_id__in=list(workspace_ids))


def visible_versions(*, workspace_ids: Iterable[int] | None) -> QuerySet[Version]:
    """Versions recorded in the reader's workspaces: the workspace is the audit event's, so
    the history of a deleted object stays readable (and scoped)."""
    versions = Version.objects.select_related("revision", "revision__user", "content_type").prefetch_related(
        "revision__audit_links__event"
    )
    if workspace_ids is None:
        return versions
    in_scope = VersionAudit.objects.filter(revision=OuterRef("revision"), event__workspace_id__in=list(workspace_ids))
    return versions.filter(Exists(in_scope))


def object_history(model, object_id, *, workspace_ids: Iterable[int] | None) -> QuerySet[Version]:
    """Every version of one object, newest first."""
    return (
        visible_versions(workspace_ids=workspace_ids)
        .filter(pk__in=Version.objects.get_for_object_reference(model, object_id).values("pk"))
        .order_by("-pk")
    )


@dataclass(frozen=True)
class VersionInfo:
    """Who, why and when, for one version (from the audit event(s) that recorded it)."""

    actor_kind: str
    actor_label: str
    action: str
    reason: str
    request_id: str
    event_ids: list[int]


def version_info(version: Version) -> VersionInfo:
    events = [link.event for link in version.revision.audit_links.all()]
    # The first event is the edit itself; a restore adds a second one ("version.restore").
    actions = ", ".join(event.action for event in events)
    first = events[0] if events else None
    return VersionInfo(
        actor_kind=first.actor_kind if first else "",
        actor_label=first.actor_label if first else str(version.revision.user or ""),
        action=actions,
        reason=version.revision.comment,
        request_id=first.request_id if first else "",
        event_ids=[event.pk for event in events],
    )


def version_fields(version: Version) -> dict[str, Any]:
    """The stored field values of a version (typed: Decimal, datetime, list of ids for m2m)."""
    return dict(version.field_dict)


def version_children(version: Version) -> dict[str, dict[str, dict[str, Any]]]:
    """Followed children saved in the same version, e.g. {"triggers": {"<position>": {fields}}},
    keyed by the registered child key (default: the child's id)."""
    entry = versioned_entry(version.content_type.model_class())
    if entry is None or not entry.follow:
        return {}
    siblings = list(version.revision.version_set.exclude(pk=version.pk).select_related("content_type"))
    children = {}
    for name in entry.follow:
        relation = entry.model._meta.get_field(name)
        parent_attname = relation.field.attname
        key_field = entry.child_keys.get(name)
        child_model = relation.related_model
        own = [
            sibling for sibling in siblings
            if sibling.content_type.model_class() is child_model
            and str(sibling.field_dict.get(parent_attname)) == str(version.object_id)
        ]
        skip = {child_model._meta.pk.attname, parent_attname}
        children[name] = {
            str(child.field_dict[key_field]) if key_field else child.object_id: {
                k: v for k, v in child.field_dict.items() if k not in skip
            }
            for child in own
        }
    return children


def plain(value: Any) -> Any:
    """A value as JSON data (Decimal and dates as strings), for the API and templates."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def _field_changes(old: dict, new: dict) -> list[dict]:
    changes = []
    for name in sorted(set(old) | set(new)):
        before, after = plain(old.get(name)), plain(new.get(name))
        if before != after:
            changes.append({"field": name, "from": before, "to": after})
    return changes


def _children_diff(old: dict[str, dict], new: dict[str, dict]) -> dict:
    return {
        "added": [{"id": key, "fields": plain(new[key])} for key in sorted(set(new) - set(old), key=int)],
        "removed": [{"id": key, "fields": plain(old[key])} for key in sorted(set(old) - set(new), key=int)],
        "changed": [
            {"id": key, "changes": changes}
            for key in sorted(set(old) & set(new), key=int)
            if (changes := _field_changes(old[key], new[key]))
        ],
    }


def version_diff(old: Version, new: Version) -> dict:
    """Field-by-field differences from `old` to `new` (two versions of one object),
    including followed children (a rule's triggers), matched by their registered key.
    A child's own id and parent link are left out: they say nothing a person configured."""
    if (old.content_type_id, old.object_id) != (new.content_type_id, new.object_id):
        raise ValueError("A diff compares two versions of the same object.")
    old_children, new_children = version_children(old), version_children(new)
    return {
        "from_version": old.pk,
        "to_version": new.pk,
        "fields": _field_changes(version_fields(old), version_fields(new)),
        "children": {
            name: _children_diff(old_children.get(name, {}), new_children.get(name, {}))
            for name in sorted(set(old_children) | set(new_children))
        },
    }


def latest_version(model, object_id) -> Version | None:
    return Version.objects.get_for_object_reference(model, object_id).order_by("-pk").first()
