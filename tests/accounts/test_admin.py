"""The admin: who may enter, what each role sees, and that writes go through the services."""

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from accounts.models import ApiToken, Membership
from accounts.roles import Role
from accounts.services import hash_token_key
from audit.models import AuditEvent
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def _log_in(client, user):
    return client.post(reverse("admin:login"), {"username": user.username, "password": PASSWORD,
                                                "next": reverse("admin:index")})


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- who may enter ---------------------------------------------------------------------------

@pytest.mark.parametrize("role", [Role.MARKETER, Role.APPROVER, Role.ADMIN])
def test_admin_login__people_roles__are_let_in_even_without_is_staff(client, member, role):
    user = member(role, user__is_staff=False)
    response = _log_in(client, user)
    assert response.status_code == 302 and response["Location"] == reverse("admin:index")
    assert client.get(reverse("admin:index")).status_code == 200


def test_admin_login__integrator__is_refused_even_if_staff(client, member):
    integrator = member(Role.INTEGRATOR, user__is_staff=True)

    response = _log_in(client, integrator)

    assert response.status_code == 200
    assert "admin access" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_admin__integrator_with_a_session__is_sent_back_to_login(client, member):
    client.force_login(member(Role.INTEGRATOR))
    response = client.get(reverse("admin:accounts_membership_changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_admin_login__staff_without_any_membership__is_refused(client, db):
    assert _log_in(client, UserFactory(is_staff=True)).status_code == 200


def test_admin_login__superuser_without_membership__is_let_in(client, superuser):
    assert _log_in(client, superuser).status_code == 302


# --- what each role sees ---------------------------------------------------------------------

def _changelist_rows(client, model: str) -> set:
    response = client.get(reverse(f"admin:accounts_{model}_changelist"))
    assert response.status_code == 200
    return {obj.pk for obj in response.context["cl"].result_list}


def test_admin__marketer__sees_only_rows_of_their_workspace(client, workspace, other_workspace, member):
    marketer = member(Role.MARKETER)
    MembershipFactory(workspace=other_workspace)
    client.force_login(marketer)

    assert _changelist_rows(client, "workspace") == {workspace.pk}
    assert _changelist_rows(client, "membership") == set(
        Membership.objects.filter(workspace=workspace).values_list("pk", flat=True)
    )
    foreign = reverse("admin:accounts_workspace_change", args=[other_workspace.pk])
    assert client.get(foreign).status_code == 302  # "does not exist": redirected to the index


def test_admin__integrator_here_and_marketer_elsewhere__sees_only_the_marketer_workspace(
    client, workspace, other_workspace, member
):
    user = member(Role.INTEGRATOR)
    MembershipFactory(user=user, workspace=other_workspace, role=Role.MARKETER)
    client.force_login(user)
    assert _changelist_rows(client, "workspace") == {other_workspace.pk}


def test_admin__marketer__reads_but_cannot_change_workspace_settings(client, workspace, member):
    client.force_login(member(Role.MARKETER))
    url = reverse("admin:accounts_workspace_change", args=[workspace.pk])
    assert client.get(url).status_code == 200
    assert client.post(url, {"name": "Renamed"}).status_code == 403
    assert client.get(reverse("admin:accounts_membership_add")).status_code == 403


@pytest.mark.parametrize("role", [Role.MARKETER, Role.APPROVER])
def test_admin__non_admin__cannot_see_api_tokens(client, member, role):
    client.force_login(member(role))
    assert client.get(reverse("admin:accounts_apitoken_changelist")).status_code == 403


def test_admin__header__names_the_workspaces_and_roles(client, member):
    client.force_login(member(Role.APPROVER))
    assert "Acme: Approver" in client.get(reverse("admin:index")).content.decode()


# --- writes through services -----------------------------------------------------------------

def test_admin__workspace_admin_edits_guardrails__through_the_audited_service(client, workspace, admin_user):
    client.force_login(admin_user)
    url = reverse("admin:accounts_workspace_change", args=[workspace.pk])
    form = client.get(url).context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    data["guardrail_max_step_pct"] = "12.50"

    response = client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    event = AuditEvent.objects.get(action="workspace.update")
    assert event.after["guardrail_max_step_pct"] == "12.50"
    assert event.actor_user_id == admin_user.pk


def test_admin__workspace_admin_adds_a_member_by_username__audited(client, workspace, admin_user):
    newcomer = UserFactory(username="newcomer")
    client.force_login(admin_user)

    response = client.post(reverse("admin:accounts_membership_add"), {
        "workspace": workspace.pk, "user": "newcomer", "role": Role.APPROVER, "approval_level": 1,
    })

    assert response.status_code == 302
    assert Membership.objects.get(user=newcomer).role == Role.APPROVER
    assert AuditEvent.objects.filter(action="membership.create", actor_user_id=admin_user.pk).exists()


def test_admin__removing_the_last_admin__is_refused_with_a_message(client, admin_user):
    own = Membership.objects.get(user=admin_user)
    client.force_login(admin_user)

    response = client.post(reverse("admin:accounts_membership_delete", args=[own.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert any("at least one admin" in m for m in _messages(response))
    assert Membership.objects.filter(pk=own.pk).exists()


def test_admin__token_creation__shows_the_key_once_and_stores_its_hash(client, workspace, admin_user, member):
    integrator = member(Role.INTEGRATOR)
    client.force_login(admin_user)

    response = client.post(reverse("admin:accounts_apitoken_add"),
                           {"workspace": workspace.pk, "user": integrator.username, "name": "ETL"}, follow=True)

    token = ApiToken.objects.get()
    [key_message] = [m for m in _messages(response) if "shown this once" in m]
    raw_key = key_message.rsplit(" ", 1)[1]
    assert token.key_hash == hash_token_key(raw_key) and token.user == integrator
    assert raw_key not in client.get(reverse("admin:accounts_apitoken_change", args=[token.pk])).content.decode()


def test_admin__revoke_action__revokes_through_the_service(client, workspace, admin_user, issue_token):
    token, _ = issue_token(admin_user)
    client.force_login(admin_user)

    client.post(reverse("admin:accounts_apitoken_changelist"),
                {"action": "revoke", "_selected_action": [token.pk]})

    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEvent.objects.get(action="api_token.revoke").reason == "revoked in the admin"
