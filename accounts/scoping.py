"""Scoping a queryset to the workspaces a caller may act in, for API views and the admin.

Each scoped model names the lookup from itself to its workspace (`workspace_lookup`),
so the filter is written once here.
"""

from django.db.models import QuerySet

from .roles import Perm
from .selectors import workspace_ids_for


def scope_queryset(queryset: QuerySet, *, user, workspace_lookup: str, perm: str = Perm.VIEW, token=None):
    ids = workspace_ids_for(user, perm, token=token)
    return queryset.filter(**{f"{workspace_lookup}__in": ids})


def workspace_id_of(obj, workspace_lookup: str) -> int:
    """Follow `workspace_lookup` (e.g. "campaign__workspace") on an instance to its workspace id."""
    *path, last = workspace_lookup.split("__")
    for attr in path:
        obj = getattr(obj, attr)
    return getattr(obj, f"{last}_id") if last != "id" else obj.pk
