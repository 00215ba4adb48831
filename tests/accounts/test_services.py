from decimal import Decimal

import pytest

from accounts.exceptions import Conflict, PermissionDenied
from accounts.models import ApiToken, Membership, Workspace
from accounts.roles import Role
from accounts.services import (
    api_token_create,
    api_token_revoke,
    membership_create,
    membership_delete,
    membership_update,
    workspace_create,
    workspace_update,
)
from audit.actors import Actor
from audit.models import AuditEvent
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

NON_ADMIN_ROLES = [Role.MARKETER, Role.APPROVER, Role.INTEGRATOR]


def _events(action: str):
    return AuditEvent.objects.filter(action=action)


# --- workspaces ------------------------------------------------------------------------------

def test_workspace_create__by_superuser__audits_and_makes_the_owner_admin(superuser):
    owner = UserFactory()

    workspace = workspace_create(actor=Actor.for_user(superuser), owner=owner, name="Initech", currency="USD")

    assert Membership.objects.get(workspace=workspace, user=owner).role == Role.ADMIN
    event = _events("workspace.create").get()
    assert (event.subject_id, event.actor_label, event.after["currency"]) == (str(workspace.pk), "root", "USD")
    assert _events("membership.create").filter(workspace_id=workspace.pk).exists()


@pytest.mark.parametrize("role", [Role.ADMIN, *NON_ADMIN_ROLES])
def test_workspace_create__by_a_member_who_is_not_superuser__is_refused(member, role):
    with pytest.raises(PermissionDenied):
        workspace_create(actor=Actor.for_user(member(role)), name="Initech")
    assert not Workspace.objects.filter(name="Initech").exists()


def test_workspace_update__by_admin__records_before_and_after(workspace, admin_actor):
    workspace_update(actor=admin_actor, workspace=workspace, reason="tighter", guardrail_max_step_pct=Decimal("5"))

    workspace.refresh_from_db()
    assert workspace.guardrail_max_step_pct == Decimal("5")
    event = _events("workspace.update").get()
    assert (event.before["guardrail_max_step_pct"], event.after["guardrail_max_step_pct"]) == ("20.00", "5")
    assert event.reason == "tighter"


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_workspace_update__by_non_admin__is_refused_and_not_audited(workspace, member, role):
    with pytest.raises(PermissionDenied):
        workspace_update(actor=Actor.for_user(member(role)), workspace=workspace, name="Renamed")
    workspace.refresh_from_db()
    assert workspace.name == "Acme"
    assert not _events("workspace.update").exists()


def test_workspace_update__invalid_time_zone__is_refused(workspace, admin_actor):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        workspace_update(actor=admin_actor, workspace=workspace, time_zone="Mars/Olympus")


def test_workspace_update__admin_of_another_workspace__is_refused(workspace, other_workspace):
    outsider = MembershipFactory(workspace=other_workspace, role=Role.ADMIN).user
    with pytest.raises(PermissionDenied):
        workspace_update(actor=Actor.for_user(outsider), workspace=workspace, name="Hijacked")


# --- memberships -----------------------------------------------------------------------------

def test_membership_create__by_admin__audits_the_new_row(workspace, admin_actor):
    newcomer = UserFactory()

    membership = membership_create(actor=admin_actor, workspace=workspace, user=newcomer, role=Role.APPROVER,
                                   approval_level=1)

    event = _events("membership.create").get()
    assert event.workspace_id == workspace.pk
    assert event.after["role"] == Role.APPROVER
    assert event.subject_id == str(membership.pk)


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_membership_create__by_non_admin__is_refused(workspace, member, role):
    with pytest.raises(PermissionDenied):
        membership_create(actor=Actor.for_user(member(role)), workspace=workspace, user=UserFactory(),
                          role=Role.ADMIN)
    assert not _events("membership.create").exists()


def test_membership_update__by_admin__audits_old_and_new_role(workspace, member, admin_actor):
    membership = Membership.objects.get(user=member(Role.MARKETER))

    membership_update(actor=admin_actor, membership=membership, role=Role.APPROVER, approval_level=2)

    event = _events("membership.update").get()
    assert (event.before["role"], event.after["role"], event.after["approval_level"]) == ("marketer", "approver", 2)


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_membership_update__self_promotion_by_non_admin__is_refused(workspace, member, role):
    user = member(role)
    membership = Membership.objects.get(user=user)
    with pytest.raises(PermissionDenied):
        membership_update(actor=Actor.for_user(user), membership=membership, role=Role.ADMIN)
    membership.refresh_from_db()
    assert membership.role == role


def test_membership_delete__by_admin__audits_the_removed_row(workspace, member, admin_actor):
    membership = Membership.objects.get(user=member(Role.INTEGRATOR))

    membership_delete(actor=admin_actor, membership=membership, reason="left the agency")

    assert not Membership.objects.filter(pk=membership.pk).exists()
    event = _events("membership.delete").get()
    assert (event.before["role"], event.reason) == ("integrator", "left the agency")


def test_membership_delete__of_the_last_admin__is_refused(workspace, admin_user, admin_actor):
    only_admin = Membership.objects.get(user=admin_user)
    with pytest.raises(Conflict):
        membership_delete(actor=admin_actor, membership=only_admin)
    with pytest.raises(Conflict):
        membership_update(actor=admin_actor, membership=only_admin, role=Role.MARKETER)
    assert Membership.objects.get(pk=only_admin.pk).role == Role.ADMIN


def test_membership_update__demoting_an_admin_while_another_remains__is_allowed(workspace, member, admin_actor):
    second_admin = Membership.objects.get(user=member(Role.ADMIN))
    membership_update(actor=admin_actor, membership=second_admin, role=Role.MARKETER)
    assert Membership.objects.get(pk=second_admin.pk).role == Role.MARKETER


# --- API tokens ------------------------------------------------------------------------------

def test_api_token_create__stores_only_a_hash_of_the_key(workspace, member, admin_actor):
    integrator = member(Role.INTEGRATOR)

    token, raw_key = api_token_create(actor=admin_actor, workspace=workspace, user=integrator, name="ETL")

    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert raw_key not in {str(value) for value in stored.values()}
    assert raw_key.split("_", 2)[2] not in str(stored)  # the secret part
    assert stored["key_hash"] != raw_key and len(stored["key_hash"]) == 64
    assert raw_key.startswith(f"rp_{token.prefix}_")
    event = _events("api_token.create").get()
    assert raw_key not in str(event.after) and event.workspace_id == workspace.pk


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_api_token_create__by_non_admin__is_refused(workspace, member, role):
    user = member(role)
    with pytest.raises(PermissionDenied):
        api_token_create(actor=Actor.for_user(user), workspace=workspace, user=user, name="mine")
    assert not ApiToken.objects.exists()


def test_api_token_create__for_a_non_member__is_refused(workspace, admin_actor):
    with pytest.raises(PermissionDenied, match="member"):
        api_token_create(actor=admin_actor, workspace=workspace, user=UserFactory(), name="stranger")


def test_api_token_create__through_another_token__is_refused(workspace, admin_user, admin_actor):
    token, _ = api_token_create(actor=admin_actor, workspace=workspace, user=admin_user, name="admin bot")
    with pytest.raises(PermissionDenied, match="another token"):
        api_token_create(actor=Actor.for_token(token), workspace=workspace, user=admin_user, name="spawn")


def test_api_token_revoke__by_admin__audits_once_and_is_idempotent(workspace, member, admin_actor):
    token, _ = api_token_create(actor=admin_actor, workspace=workspace, user=member(Role.INTEGRATOR), name="ETL")

    first = api_token_revoke(actor=admin_actor, token=token, reason="leaked")
    second = api_token_revoke(actor=admin_actor, token=token)

    assert first.revoked_at is not None and second.revoked_at == first.revoked_at
    assert _events("api_token.revoke").get().reason == "leaked"


def test_api_token_revoke__by_its_owner__is_allowed(workspace, member, admin_actor):
    integrator = member(Role.INTEGRATOR)
    token, _ = api_token_create(actor=admin_actor, workspace=workspace, user=integrator, name="ETL")

    api_token_revoke(actor=Actor.for_user(integrator), token=token)

    assert not ApiToken.objects.get(pk=token.pk).is_active


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_api_token_revoke__of_someone_elses_token_by_non_admin__is_refused(workspace, member, admin_actor, role):
    token, _ = api_token_create(actor=admin_actor, workspace=workspace, user=member(Role.INTEGRATOR), name="ETL")
    with pytest.raises(PermissionDenied):
        api_token_revoke(actor=Actor.for_user(member(role)), token=token)
    assert ApiToken.objects.get(pk=token.pk).is_active
