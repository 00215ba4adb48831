"""DRF glue over accounts.roles: the API asks these, these ask `role_allows`."""

from rest_framework import permissions

from audit.actors import Actor

from .roles import Perm
from .scoping import scope_queryset, workspace_id_of
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


def request_actor(request) -> Actor:
    """The actor services record for an API request: the token when one authenticated it."""
    token = token_of(request)
    return Actor.for_token(token) if token is not None else Actor.for_user(request.user)


def scope_to_caller(queryset, request, *, workspace_lookup: str = "workspace", perm: str = Perm.VIEW):
    """`scope_queryset` for an API request: the caller's workspaces, narrowed to its token's."""
    return scope_queryset(queryset, user=request.user, workspace_lookup=workspace_lookup, perm=perm,
                          token=token_of(request))
