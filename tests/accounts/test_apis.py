"""Every accounts endpoint, per role: who is allowed, who is refused, and what stays invisible."""

import pytest

from accounts.models import ApiToken, Membership, Workspace
from accounts.roles import Perm, Role
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

ALL_ROLES = [Role.MARKETER, Role.APPROVER, Role.ADMIN, Role.INTEGRATOR]
NON_ADMIN_ROLES = [Role.MARKETER, Role.APPROVER, Role.INTEGRATOR]


@pytest.fixture
def foreign_membership(other_workspace):
    return MembershipFactory(workspace=other_workspace, role=Role.ADMIN)


@pytest.fixture
def colleague(member):
    """Another marketer of `workspace`, whose membership the tests act upon."""
    return Membership.objects.get(user=member(Role.MARKETER))


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


# --- /workspaces/ ----------------------------------------------------------------------------

@pytest.mark.parametrize("role", ALL_ROLES)
def test_workspaces_list__any_member__sees_only_their_workspaces(workspace, other_workspace, member, client_for, role):
    assert _ids(client_for(member(role)).get("/api/v1/workspaces/")) == [workspace.pk]


@pytest.mark.parametrize("role", ALL_ROLES)
def test_workspace_retrieve__another_workspace__answers_404(other_workspace, member, client_for, role):
    response = client_for(member(role)).get(f"/api/v1/workspaces/{other_workspace.pk}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_workspace_update__by_admin__changes_guardrails(workspace, admin_user, client_for):
    response = client_for(admin_user).patch(f"/api/v1/workspaces/{workspace.pk}/", {"guardrail_max_step_pct": "7.5"})
    assert response.status_code == 200
    assert response.json()["guardrail_max_step_pct"] == "7.50"
    workspace.refresh_from_db()
    assert str(workspace.guardrail_max_step_pct) == "7.50"


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_workspace_update__by_non_admin__answers_403(workspace, member, client_for, role):
    response = client_for(member(role)).patch(f"/api/v1/workspaces/{workspace.pk}/", {"name": "Mine now"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_workspace_update__invalid_values__answers_400_with_field_details(workspace, admin_user, client_for):
    response = client_for(admin_user).patch(
        f"/api/v1/workspaces/{workspace.pk}/", {"time_zone": "Mars/Olympus", "metric_bucket_minutes": 7}
    )
    assert response.status_code == 400
    assert set(response.json()["error"]["details"]) == {"time_zone", "metric_bucket_minutes"}


@pytest.mark.parametrize("role", ALL_ROLES)
def test_workspace_create__by_a_member__answers_403(member, client_for, role):
    response = client_for(member(role)).post("/api/v1/workspaces/", {"name": "Initech"})
    assert response.status_code == 403
    assert not Workspace.objects.filter(name="Initech").exists()


def test_workspace_create__by_superuser__makes_them_its_admin(superuser, client_for):
    response = client_for(superuser).post("/api/v1/workspaces/", {"name": "Initech", "currency": "USD"})
    assert response.status_code == 201
    assert Membership.objects.get(workspace_id=response.json()["id"], user=superuser).role == Role.ADMIN


def test_workspaces_list__ordering_and_filtering__apply(workspace, other_workspace, member, client_for):
    user = member(Role.MARKETER)
    Workspace.objects.filter(pk=other_workspace.pk).update(currency="USD")
    MembershipFactory(user=user, workspace=other_workspace)
    client = client_for(user)
    assert _ids(client.get("/api/v1/workspaces/?ordering=-name")) == [other_workspace.pk, workspace.pk]
    assert _ids(client.get("/api/v1/workspaces/?currency=USD")) == [other_workspace.pk]
    paged = client.get("/api/v1/workspaces/?page_size=1").json()
    assert (paged["count"], len(paged["results"]), paged["next"] is not None) == (2, 1, True)


# --- /memberships/ ---------------------------------------------------------------------------

@pytest.mark.parametrize("role", ALL_ROLES)
def test_memberships_list__any_member__sees_only_their_workspaces(workspace, foreign_membership, member, client_for,
                                                                  role):
    ids = _ids(client_for(member(role)).get("/api/v1/memberships/"))
    assert foreign_membership.pk not in ids
    assert set(ids) == set(Membership.objects.filter(workspace=workspace).values_list("pk", flat=True))


@pytest.mark.parametrize("role", ALL_ROLES)
def test_membership_retrieve__another_workspace__answers_404(foreign_membership, member, client_for, role):
    assert client_for(member(role)).get(f"/api/v1/memberships/{foreign_membership.pk}/").status_code == 404


def test_membership_create__by_admin__adds_the_person(workspace, admin_user, client_for):
    newcomer = UserFactory(username="newcomer")
    response = client_for(admin_user).post("/api/v1/memberships/", {
        "workspace": workspace.pk, "user": "newcomer", "role": "approver", "approval_level": 1,
    })
    assert response.status_code == 201, response.content
    assert response.json()["user"] == "newcomer"
    assert Membership.objects.get(user=newcomer, workspace=workspace).role == Role.APPROVER


def test_membership_create__twice_for_the_same_person__answers_400(workspace, admin_user, colleague, client_for):
    response = client_for(admin_user).post("/api/v1/memberships/", {
        "workspace": workspace.pk, "user": colleague.user.username, "role": "approver",
    })
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_membership_create__by_non_admin__answers_403(workspace, member, client_for, role):
    UserFactory(username="newcomer")
    response = client_for(member(role)).post("/api/v1/memberships/", {
        "workspace": workspace.pk, "user": "newcomer", "role": "admin",
    })
    assert response.status_code == 403
    assert not Membership.objects.filter(user__username="newcomer").exists()


def test_membership_update__by_admin__changes_role_but_never_person_or_workspace(
    workspace, other_workspace, admin_user, colleague, client_for
):
    response = client_for(admin_user).patch(f"/api/v1/memberships/{colleague.pk}/", {
        "role": "approver", "approval_level": 2, "workspace": other_workspace.pk, "user": admin_user.username,
    })
    assert response.status_code == 200
    person = colleague.user_id
    colleague.refresh_from_db()
    assert (colleague.role, colleague.approval_level) == (Role.APPROVER, 2)
    assert (colleague.workspace_id, colleague.user_id) == (workspace.pk, person)


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_membership_update__by_non_admin__answers_403(member, colleague, client_for, role):
    response = client_for(member(role)).patch(f"/api/v1/memberships/{colleague.pk}/", {"role": "admin"})
    assert response.status_code == 403
    colleague.refresh_from_db()
    assert colleague.role == Role.MARKETER


def test_membership_delete__by_admin__removes_it(admin_user, colleague, client_for):
    assert client_for(admin_user).delete(f"/api/v1/memberships/{colleague.pk}/").status_code == 204
    assert not Membership.objects.filter(pk=colleague.pk).exists()


def test_membership_delete__of_the_last_admin__answers_409(admin_user, client_for):
    own = Membership.objects.get(user=admin_user)
    response = client_for(admin_user).delete(f"/api/v1/memberships/{own.pk}/")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_membership_delete__by_non_admin__answers_403(member, colleague, client_for, role):
    assert client_for(member(role)).delete(f"/api/v1/memberships/{colleague.pk}/").status_code == 403
    assert Membership.objects.filter(pk=colleague.pk).exists()


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_membership_write__another_workspace_by_its_non_member_admin__answers_404(
    foreign_membership, admin_user, client_for, method
):
    response = getattr(client_for(admin_user), method)(f"/api/v1/memberships/{foreign_membership.pk}/",
                                                       {"role": "marketer"})
    assert response.status_code == 404


# --- /tokens/ --------------------------------------------------------------------------------

def test_token_create__by_admin__returns_the_key_once(workspace, admin_user, member, client_for, token_client):
    integrator = member(Role.INTEGRATOR)
    client = client_for(admin_user)

    created = client.post("/api/v1/tokens/", {"workspace": workspace.pk, "user": integrator.username, "name": "ETL"})

    assert created.status_code == 201, created.content
    body = created.json()
    assert body["key"].startswith(f"rp_{body['prefix']}_")
    assert token_client(body["key"]).get("/api/v1/me/").json()["username"] == integrator.username
    listed = client.get("/api/v1/tokens/").json()["results"]
    assert [t["prefix"] for t in listed] == [body["prefix"]]
    assert "key" not in listed[0] and "key" not in client.get(f"/api/v1/tokens/{body['id']}/").json()
    assert set(listed[0]) >= {"name", "prefix", "created_at", "last_used_at", "revoked_at", "is_active"}


def test_token_create__without_user__issues_it_to_the_caller(workspace, admin_user, client_for):
    response = client_for(admin_user).post("/api/v1/tokens/", {"workspace": workspace.pk, "name": "mine"})
    assert response.status_code == 201
    assert response.json()["user"] == admin_user.username


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_token_create__by_non_admin__answers_403(workspace, member, client_for, role):
    response = client_for(member(role)).post("/api/v1/tokens/", {"workspace": workspace.pk, "name": "mine"})
    assert response.status_code == 403
    assert not ApiToken.objects.exists()


def test_token_create__through_a_token__answers_403(workspace, admin_user, issue_token, token_client):
    _, raw_key = issue_token(admin_user)
    response = token_client(raw_key).post("/api/v1/tokens/", {"workspace": workspace.pk, "name": "spawn"})
    assert response.status_code == 403
    assert ApiToken.objects.count() == 1


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_tokens_list__non_admin__sees_only_their_own(member, admin_user, issue_token, client_for, role):
    user = member(role)
    own, _ = issue_token(user)
    issue_token(admin_user)
    assert _ids(client_for(user).get("/api/v1/tokens/")) == [own.pk]


def test_tokens_list__admin__sees_all_of_the_workspace_and_filters_revoked(
    workspace, other_workspace, admin_user, member, issue_token, client_for
):
    mine, _ = issue_token(admin_user)
    theirs, _ = issue_token(member(Role.INTEGRATOR))
    foreign_user = MembershipFactory(workspace=other_workspace, role=Role.ADMIN).user
    issue_token(foreign_user, workspace=other_workspace)
    client = client_for(admin_user)
    client.post(f"/api/v1/tokens/{theirs.pk}/revoke/")

    assert sorted(_ids(client.get("/api/v1/tokens/"))) == sorted([mine.pk, theirs.pk])
    assert _ids(client.get("/api/v1/tokens/?revoked=true")) == [theirs.pk]
    assert _ids(client.get("/api/v1/tokens/?revoked=false")) == [mine.pk]


def test_token_revoke__by_admin__revokes_with_reason(member, admin_user, issue_token, client_for, token_client):
    token, raw_key = issue_token(member(Role.INTEGRATOR))

    response = client_for(admin_user).post(f"/api/v1/tokens/{token.pk}/revoke/", {"reason": "leaked in a log"})

    assert response.status_code == 200
    assert response.json()["is_active"] is False and response.json()["revoked_at"]
    assert token_client(raw_key).get("/api/v1/me/").status_code == 401


def test_token_revoke__by_its_owner_through_the_token_itself__is_allowed(member, issue_token, token_client):
    token, raw_key = issue_token(member(Role.INTEGRATOR))
    client = token_client(raw_key)
    assert client.post(f"/api/v1/tokens/{token.pk}/revoke/").status_code == 200
    assert client.get("/api/v1/me/").status_code == 401


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_token_revoke__someone_elses_by_non_admin__answers_404(member, admin_user, issue_token, client_for, role):
    token, _ = issue_token(admin_user)
    assert client_for(member(role)).post(f"/api/v1/tokens/{token.pk}/revoke/").status_code == 404
    assert ApiToken.objects.get(pk=token.pk).is_active


def test_token_revoke__another_workspace__answers_404(other_workspace, admin_user, issue_token, client_for):
    foreign_user = MembershipFactory(workspace=other_workspace, role=Role.ADMIN).user
    token, _ = issue_token(foreign_user, workspace=other_workspace)
    assert client_for(admin_user).post(f"/api/v1/tokens/{token.pk}/revoke/").status_code == 404


# --- /me/ ------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ALL_ROLES)
def test_me__lists_each_membership_with_its_permissions(workspace, member, client_for, role):
    user = member(role)
    body = client_for(user).get("/api/v1/me/").json()
    assert body["username"] == user.username and body["token"] is None
    [membership] = body["memberships"]
    assert (membership["workspace"], membership["workspace_name"], membership["role"]) == (workspace.pk, "Acme", role)
    assert Perm.VIEW in membership["permissions"]
    assert (Perm.USE_ADMIN in membership["permissions"]) is (role != Role.INTEGRATOR)
    assert (Perm.MANAGE_MEMBERS in membership["permissions"]) is (role == Role.ADMIN)


def test_me__through_a_token__names_the_token(member, issue_token, token_client):
    token, raw_key = issue_token(member(Role.INTEGRATOR))
    body = token_client(raw_key).get("/api/v1/me/").json()
    assert body["token"] == {"id": token.pk, "name": "CI pipeline", "prefix": token.prefix,
                             "workspace": token.workspace_id}


def test_me__integrator_granted_configuration__gains_edit_permissions(member, client_for):
    body = client_for(member(Role.INTEGRATOR, can_manage_config=True)).get("/api/v1/me/").json()
    assert {Perm.EDIT_CAMPAIGNS, Perm.EDIT_RULES} <= set(body["memberships"][0]["permissions"])
