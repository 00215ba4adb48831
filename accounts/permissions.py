"""DRF glue over accounts.roles: the API asks these, these ask `role_allows`."""

from rest_framework import permissions

from .roles import Perm
from .scoping import workspace_id_of
from .selectors import user_may


class WorkspaceRolePermission(permissions.BasePermission):
    """Reads need Perm.VIEW; writes need the view's `write_perm` in the object's workspace.

    Objects outside the caller's workspaces never reach here: the view's queryset is scoped,
    so they answer 404, not 403.
    """

    def has_object_permission(self, request, view, obj):
        perm = Perm.VIEW if request.method in permissions.SAFE_METHODS else view.write_perm
        workspace_id = workspace_id_of(obj, view.workspace_lookup)
        return user_may(request.user, perm, workspace_id, token=token_of(request))


def token_of(request):
    from .models import ApiToken

    return request.auth if isinstance(request.auth, ApiToken) else None
