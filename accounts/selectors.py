"""Reads that decide what a caller may see: every query in the project is scoped through here."""

from django.db.models import Q, QuerySet

from .models import ApiToken, Membership, Workspace
from .roles import Perm


def memberships_of(user, *, token: ApiToken | None = None) -> QuerySet[Membership]:
    """The memberships through which this caller acts; a token narrows them to its workspace."""
    if user is None or not user.is_authenticated:
        return Membership.objects.none()
    memberships = Membership.objects.filter(user=user).select_related("workspace")
    if token is not None:
        memberships = memberships.filter(workspace_id=token.workspace_id)
    return memberships


def workspace_ids_for(user, perm: str, *, token: ApiToken | None = None) -> set[int]:
    return {m.workspace_id for m in memberships_of(user, token=token) if m.allows(perm)}


def workspaces_for(user, perm: str, *, token: ApiToken | None = None) -> QuerySet[Workspace]:
    return Workspace.objects.filter(pk__in=workspace_ids_for(user, perm, token=token))


def membership_in(user, workspace_id: int, *, token: ApiToken | None = None) -> Membership | None:
    return memberships_of(user, token=token).filter(workspace_id=workspace_id).first()


def user_may(user, perm: str, workspace_id: int, *, token: ApiToken | None = None) -> bool:
    membership = membership_in(user, workspace_id, token=token)
    return membership is not None and membership.allows(perm)


def admin_workspace_ids(user, perm: str) -> set[int]:
    """Workspaces whose rows this person may handle in the admin: `perm` there, and a role that uses the admin.

    An integrator membership never opens the admin, even beside a marketer membership elsewhere.
    """
    return {
        m.workspace_id for m in memberships_of(user) if m.allows(Perm.USE_ADMIN) and m.allows(perm)
    }


def may_use_admin(user) -> bool:
    if not (user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or bool(admin_workspace_ids(user, Perm.USE_ADMIN))


def api_tokens_visible_to(user, *, token: ApiToken | None = None) -> QuerySet[ApiToken]:
    """Every token of the workspaces this caller manages, and the caller's own tokens elsewhere."""
    if user is None or not user.is_authenticated:
        return ApiToken.objects.none()
    managed = workspace_ids_for(user, Perm.MANAGE_MEMBERS, token=token)
    member_of = workspace_ids_for(user, Perm.VIEW, token=token)
    return ApiToken.objects.filter(
        Q(workspace_id__in=managed) | Q(user=user, workspace_id__in=member_of)
    ).select_related("workspace", "user")
