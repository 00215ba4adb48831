"""Writes for workspaces, memberships and API tokens. Each takes an actor and audits itself."""

import hashlib
import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import TypeVar

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from audit.actors import Actor
from audit.services import audit_record

from .exceptions import Conflict, PermissionDenied
from .models import ApiToken, Membership, Workspace
from .roles import Perm, Role
from .selectors import user_may

TOKEN_PREFIX = "rp"
# Last-used time is informational; writing it on every request would make reads write.
_LAST_USED_RESOLUTION = timedelta(minutes=1)
M = TypeVar("M", bound=models.Model)


def require_perm(actor: Actor, perm: str, workspace_id: int) -> None:
    """Refuse unless the actor's role in the workspace allows `perm`.

    Workers and the system pass; superusers pass as people (as they do in the admin), but
    never through a token: a token acts only inside its own workspace, with its user's role.
    """
    if not actor_may(actor, perm, workspace_id):
        raise PermissionDenied(f"You are not allowed to {Perm(perm).label.lower()} in this workspace.")


def actor_may(actor: Actor, perm: str, workspace_id: int) -> bool:
    if actor.kind in ("worker", "system"):
        return True
    if actor.kind == "token":
        token = ApiToken(pk=actor.token_id, workspace_id=_token_workspace_id(actor.token_id))
        return user_may(actor.user, perm, workspace_id, token=token)
    return actor.user.is_superuser or user_may(actor.user, perm, workspace_id)


def _token_workspace_id(token_id: int | None) -> int | None:
    return ApiToken.objects.filter(pk=token_id, revoked_at__isnull=True).values_list("workspace_id", flat=True).first()


def snapshot(instance, *, exclude: tuple[str, ...] = ()) -> dict:
    """The fields of a model instance as plain data, for audit before/after."""
    return model_to_dict(instance, exclude=list(exclude))


def refuse_unknown_fields(fields: Mapping, allowed: Iterable[str], *, verb: str = "set") -> None:
    """A service's `**fields` may hold only the names it lets callers write."""
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ValidationError({name: [f"This field cannot be {verb} here."] for name in unknown})


def locked_update(instance: M, fields: Mapping, *, public: Callable[[M], dict] = snapshot) -> tuple[M, dict]:
    """Set `fields` on the row, validated, and save it. Returns the saved row and what it held before
    (as `public` shows it, for the audit).

    The row is locked and re-read first: the audit "before" must be what the database held, and two
    concurrent edits must not interleave."""
    instance = type(instance).objects.select_for_update().get(pk=instance.pk)
    before = public(instance)
    for name, value in fields.items():
        setattr(instance, name, value)
    instance.full_clean()
    instance.save()
    return instance, before


@transaction.atomic
def workspace_create(*, actor: Actor, owner=None, **fields) -> Workspace:
    """A new advertiser account. People need to be superusers; `owner` becomes its first admin."""
    if actor.kind not in ("worker", "system") and not (actor.kind == "user" and actor.user.is_superuser):
        raise PermissionDenied("Only platform operators (superusers) create workspaces.")
    workspace = Workspace(**fields)
    workspace.full_clean()
    workspace.save()
    audit_record(actor=actor, action="workspace.create", subject=workspace, after=snapshot(workspace),
                 workspace_id=workspace.pk)
    if owner is not None:
        _membership_add(actor=actor, workspace=workspace, user=owner, role=Role.ADMIN)
    return workspace


@transaction.atomic
def workspace_update(*, actor: Actor, workspace: Workspace, reason: str = "", **fields) -> Workspace:
    require_perm(actor, Perm.MANAGE_WORKSPACE, workspace.pk)
    workspace, before = locked_update(workspace, fields)
    audit_record(actor=actor, action="workspace.update", subject=workspace, before=before,
                 after=snapshot(workspace), reason=reason, workspace_id=workspace.pk)
    return workspace


@transaction.atomic
def membership_create(*, actor: Actor, workspace: Workspace, user, role: str, **fields) -> Membership:
    require_perm(actor, Perm.MANAGE_MEMBERS, workspace.pk)
    return _membership_add(actor=actor, workspace=workspace, user=user, role=role, **fields)


def _membership_add(*, actor: Actor, workspace: Workspace, user, role: str, **fields) -> Membership:
    membership = Membership(workspace=workspace, user=user, role=role, **fields)
    membership.full_clean()
    membership.save()
    audit_record(actor=actor, action="membership.create", subject=membership, after=snapshot(membership))
    return membership


@transaction.atomic
def membership_update(*, actor: Actor, membership: Membership, reason: str = "", **fields) -> Membership:
    require_perm(actor, Perm.MANAGE_MEMBERS, membership.workspace_id)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    before = snapshot(membership)
    for name, value in fields.items():
        setattr(membership, name, value)
    membership.full_clean()
    if before["role"] == Role.ADMIN and membership.role != Role.ADMIN:
        _keep_an_admin(membership)
    membership.save()
    audit_record(actor=actor, action="membership.update", subject=membership, before=before,
                 after=snapshot(membership), reason=reason)
    return membership


@transaction.atomic
def membership_delete(*, actor: Actor, membership: Membership, reason: str = "") -> None:
    require_perm(actor, Perm.MANAGE_MEMBERS, membership.workspace_id)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Role.ADMIN:
        _keep_an_admin(membership)
    audit_record(actor=actor, action="membership.delete", subject=membership, before=snapshot(membership),
                 reason=reason)
    membership.delete()


def _keep_an_admin(leaving: Membership) -> None:
    # Locking the other admins' rows makes two admins demoting each other at once serialise,
    # so the workspace cannot end up with nobody able to manage it.
    others = (
        Membership.objects.select_for_update()
        .filter(workspace_id=leaving.workspace_id, role=Role.ADMIN)
        .exclude(pk=leaving.pk)
    )
    if not list(others):
        raise Conflict("A workspace keeps at least one admin: appoint another admin first.")


def hash_token_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def api_token_create(*, actor: Actor, workspace: Workspace, user, name: str) -> tuple[ApiToken, str]:
    """Returns the token and its raw key; the key is never stored and cannot be shown again."""
    if actor.kind == "token":
        # A leaked token must not be able to mint credentials that outlive its revocation.
        raise PermissionDenied("API tokens are issued by a signed-in person, not by another token.")
    require_perm(actor, Perm.MANAGE_MEMBERS, workspace.pk)
    if not Membership.objects.filter(user=user, workspace=workspace).exists():
        raise PermissionDenied("A token can only be issued to a member of the workspace.")
    prefix = secrets.token_hex(4)
    raw_key = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken(workspace=workspace, user=user, name=name, prefix=prefix, key_hash=hash_token_key(raw_key))
    token.full_clean()
    token.save()
    audit_record(actor=actor, action="api_token.create", subject=token,
                 after={"name": name, "prefix": prefix, "user": user.pk})
    return token, raw_key


@transaction.atomic
def api_token_revoke(*, actor: Actor, token: ApiToken, reason: str = "") -> ApiToken:
    """Workspace admins revoke any token of the workspace; anyone may revoke their own."""
    if not (actor.user_id == token.user_id and actor.kind in ("user", "token")):
        require_perm(actor, Perm.MANAGE_MEMBERS, token.workspace_id)
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(actor=actor, action="api_token.revoke", subject=token, reason=reason,
                     after={"revoked_at": token.revoked_at})
    return token


def api_token_authenticate(raw_key: str) -> ApiToken | None:
    token = (
        ApiToken.objects.select_related("user", "workspace")
        .filter(key_hash=hash_token_key(raw_key), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
