from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiToken
from accounts.roles import Role
from accounts.services import api_token_revoke
from audit.actors import Actor
from audit.models import AuditEvent
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def test_token__valid_bearer_key__authenticates_as_its_user(member, issue_token, token_client):
    integrator = member(Role.INTEGRATOR)
    _, raw_key = issue_token(integrator)

    response = token_client(raw_key).get("/api/v1/me/")

    assert response.status_code == 200
    assert response.json()["username"] == integrator.username


def test_token__token_keyword__is_accepted_too(member, issue_token, api_client):
    _, raw_key = issue_token(member(Role.INTEGRATOR))
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {raw_key}")
    assert api_client.get("/api/v1/me/").status_code == 200


def test_token__revoked__answers_401(member, issue_token, token_client):
    token, raw_key = issue_token(member(Role.INTEGRATOR))
    api_token_revoke(actor=Actor.system("tests"), token=token)

    response = token_client(raw_key).get("/api/v1/workspaces/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "authentication_failed"


@pytest.mark.parametrize("header", ["Bearer rp_deadbeef_not-a-real-key", "Bearer", "Bearer two parts"])
def test_token__unknown_or_malformed__answers_401(api_client, db, header):
    api_client.credentials(HTTP_AUTHORIZATION=header)
    response = api_client.get("/api/v1/workspaces/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_token__of_an_inactive_user__answers_401(member, issue_token, token_client):
    integrator = member(Role.INTEGRATOR)
    _, raw_key = issue_token(integrator)
    integrator.is_active = False
    integrator.save()
    assert token_client(raw_key).get("/api/v1/me/").status_code == 401


def test_token__use__records_last_used_at_at_minute_resolution(member, issue_token, token_client):
    token, raw_key = issue_token(member(Role.INTEGRATOR))
    assert token.last_used_at is None
    client = token_client(raw_key)

    client.get("/api/v1/me/")
    first_use = ApiToken.objects.get(pk=token.pk).last_used_at
    client.get("/api/v1/me/")
    # A second call within the minute does not write again: reads stay reads.
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first_use
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now() - timedelta(minutes=5))
    client.get("/api/v1/me/")

    assert first_use is not None
    assert ApiToken.objects.get(pk=token.pk).last_used_at > timezone.now() - timedelta(seconds=30)


def test_token__of_a_member_of_two_workspaces__sees_only_its_own_workspace(
    workspace, other_workspace, member, issue_token, token_client, client_for
):
    user = member(Role.ADMIN)
    MembershipFactory(user=user, workspace=other_workspace, role=Role.ADMIN)
    other_membership = MembershipFactory(workspace=other_workspace, role=Role.MARKETER)
    _, raw_key = issue_token(user, workspace=workspace)
    client = token_client(raw_key)

    assert [w["id"] for w in client.get("/api/v1/workspaces/").json()["results"]] == [workspace.pk]
    assert client.get(f"/api/v1/workspaces/{other_workspace.pk}/").status_code == 404
    assert client.patch(f"/api/v1/workspaces/{other_workspace.pk}/", {"name": "X"}).status_code == 404
    assert client.get(f"/api/v1/memberships/{other_membership.pk}/").status_code == 404
    assert {m["workspace"] for m in client.get("/api/v1/me/").json()["memberships"]} == {workspace.pk}
    created = client.post("/api/v1/memberships/", {"workspace": other_workspace.pk,
                                                   "user": other_membership.user.username, "role": "marketer"})
    assert created.status_code == 400 and "workspace" in created.json()["error"]["details"]
    # The same person signed in (session) sees both: the narrowing comes from the token.
    assert client_for(user).get("/api/v1/workspaces/").json()["count"] == 2


def test_token__writes__are_audited_as_the_token(workspace, member, issue_token, token_client):
    admin = member(Role.ADMIN)
    token, raw_key = issue_token(admin)

    response = token_client(raw_key).patch(f"/api/v1/workspaces/{workspace.pk}/", {"freshness_limit_minutes": 60})

    assert response.status_code == 200
    event = AuditEvent.objects.get(action="workspace.update")
    assert (event.actor_kind, event.actor_label, event.actor_user_id) == ("token", f"token:{token.prefix}", admin.pk)
