"""Reads that decide what a caller may see: every query in the project is scoped through here."""

from django.db.models import QuerySet

from .models import ApiToken, Membership, Workspace


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
