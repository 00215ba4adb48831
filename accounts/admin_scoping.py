"""The base of every admin page: querysets and permissions from workspace roles, not Django perms.

A row is visible when the user's membership in its workspace allows both `view_perm` and
Perm.USE_ADMIN, so an integrator membership never surfaces in the admin, even for a user who is
a marketer elsewhere. Superusers see and do everything (they are the platform's operators).
"""

from django.contrib import admin, messages
from django.http import HttpResponseRedirect

from audit.actors import Actor

from .exceptions import ApplicationError
from .roles import Perm
from .scoping import workspace_id_of
from .selectors import admin_workspace_ids


class WorkspaceScopedAdmin(admin.ModelAdmin):
    workspace_lookup = "workspace"
    view_perm = Perm.VIEW
    edit_perm = Perm.EDIT_CAMPAIGNS

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        ids = admin_workspace_ids(request.user, self.view_perm)
        return qs.filter(**{f"{self.workspace_lookup}__in": ids})

    def _may(self, request, perm, obj=None) -> bool:
        if request.user.is_superuser:
            return True
        ids = admin_workspace_ids(request.user, perm)
        if obj is None:
            return bool(ids)
        return workspace_id_of(obj, self.workspace_lookup) in ids

    def has_module_permission(self, request):
        return self._may(request, self.view_perm)

    def has_view_permission(self, request, obj=None):
        return self._may(request, self.view_perm, obj)

    def has_add_permission(self, request):
        return self._may(request, self.edit_perm)

    def has_change_permission(self, request, obj=None):
        return self._may(request, self.edit_perm, obj)

    def has_delete_permission(self, request, obj=None):
        return self._may(request, self.edit_perm, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # Pickers offer only objects of workspaces the user may edit in.
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        return scope_picker(field, db_field, request, self.edit_perm)

    # A service's refusal (a domain error: not allowed, conflict, invalid state) reaches the person as
    # a message on the page they came from, not as a server error. The admin's own transaction has
    # rolled back by the time it is caught here.
    def changeform_view(self, request, *args, **kwargs):
        return self._refusals_as_messages(request, super().changeform_view, *args, **kwargs)

    def delete_view(self, request, *args, **kwargs):
        return self._refusals_as_messages(request, super().delete_view, *args, **kwargs)

    def changelist_view(self, request, *args, **kwargs):
        return self._refusals_as_messages(request, super().changelist_view, *args, **kwargs)

    def _refusals_as_messages(self, request, view, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    @staticmethod
    def actor(request) -> Actor:
        """Who the services record for an admin action."""
        return Actor.for_user(request.user)


class ReadOnlyAdminMixin:
    """Records: nobody adds, changes or deletes them in the admin, not even a superuser."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyScopedAdmin(ReadOnlyAdminMixin, WorkspaceScopedAdmin):
    """A record's page: scoped to the person's workspaces, read-only."""


class PartOfParentInline:
    """An inline whose rows are part of their parent (a rule's triggers, an experiment's arms):
    whoever may edit the parent (or add one) edits them, and their pickers are scoped like the parent's."""

    def _parent_admin(self) -> WorkspaceScopedAdmin:
        return self.admin_site._registry[self.parent_model]

    def has_view_permission(self, request, obj=None):
        return self._parent_admin().has_view_permission(request, obj)

    def has_add_permission(self, request, obj=None):
        return self._may_edit(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._may_edit(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._may_edit(request, obj)

    def _may_edit(self, request, parent) -> bool:
        parent_admin = self._parent_admin()
        if parent is None:
            return parent_admin.has_add_permission(request)
        return parent_admin.has_change_permission(request, parent)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        return scope_picker(field, db_field, request, self._parent_admin().edit_perm)


def scope_picker(field, db_field, request, perm: str):
    """Limit a foreign-key picker to objects of workspaces where the user has `perm`."""
    lookup = _WORKSPACE_LOOKUPS.get(db_field.related_model._meta.label)
    if lookup is not None and field is not None and not request.user.is_superuser:
        ids = admin_workspace_ids(request.user, perm)
        field.queryset = field.queryset.filter(**{f"{lookup}__in": ids})
    return field


def adopt_saved(obj, saved) -> None:
    """Make the admin's unsaved instance the row a service created, for Django's add flow and inlines."""
    obj.pk = saved.pk
    obj.refresh_from_db()
    obj._state.adding = False


def changed_values(form) -> dict:
    """The fields a person edited on an admin form, with their new values: what an update service takes."""
    return {name: form.cleaned_data[name] for name in form.changed_data}


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
