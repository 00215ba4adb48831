"""The base of every admin page: querysets and permissions from workspace roles, not Django perms."""

from django.contrib import admin

from .roles import Perm
from .scoping import scope_queryset, workspace_id_of
from .selectors import user_may, workspace_ids_for


class WorkspaceScopedAdmin(admin.ModelAdmin):
    workspace_lookup = "workspace"
    edit_perm = Perm.EDIT_CAMPAIGNS

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        return scope_queryset(qs, user=request.user, workspace_lookup=self.workspace_lookup)

    def _may(self, request, perm, obj=None) -> bool:
        if request.user.is_superuser:
            return True
        if not user_may_any(request.user, Perm.USE_ADMIN):
            return False
        if obj is None:
            return bool(workspace_ids_for(request.user, perm))
        return user_may(request.user, perm, workspace_id_of(obj, self.workspace_lookup))

    def has_module_permission(self, request):
        return self._may(request, Perm.VIEW)

    def has_view_permission(self, request, obj=None):
        return self._may(request, Perm.VIEW, obj)

    def has_add_permission(self, request):
        return self._may(request, self.edit_perm)

    def has_change_permission(self, request, obj=None):
        return self._may(request, self.edit_perm, obj)

    def has_delete_permission(self, request, obj=None):
        return self._may(request, self.edit_perm, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # Pickers offer only objects of workspaces the user may edit in.
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        lookup = _WORKSPACE_LOOKUPS.get(db_field.related_model._meta.label)
        if lookup is not None and field is not None and not request.user.is_superuser:
            field.queryset = scope_queryset(
                field.queryset, user=request.user, workspace_lookup=lookup, perm=self.edit_perm
            )
        return field


def user_may_any(user, perm) -> bool:
    return bool(workspace_ids_for(user, perm))


# Related models reachable from admin pickers, with their path to the workspace.
_WORKSPACE_LOOKUPS = {
    "accounts.Workspace": "id",
    "campaigns.Campaign": "workspace",
    "campaigns.Segment": "campaign__workspace",
    "campaigns.Creative": "campaign__workspace",
}


def register_workspace_lookup(model_label: str, lookup: str) -> None:
    """Apps that add scoped models register their path to the workspace here."""
    _WORKSPACE_LOOKUPS[model_label] = lookup
