"""Admin: the read-only, scoped audit log, and the History & diff page of a versioned object."""


import pytest
from django.test import Client

from accounts import services as account_services
from accounts.roles import Role
from audit.models import AuditEvent
from campaigns.models import Campaign
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_audit_event_admin__lists_only_the_users_workspaces(admin_user, edited_campaign, other_workspace,
                                                            system_actor):
    account_services.workspace_update(actor=system_actor, workspace=other_workspace, currency="USD")

    response = _client(admin_user).get("/admin/audit/auditevent/")

    assert response.status_code == 200
    shown = {event.workspace_id for event in response.context["cl"].result_list}
    assert shown == {edited_campaign.workspace_id}


def test_audit_event_admin__offers_no_change_or_delete_even_to_a_superuser(superuser, edited_campaign):
    event = AuditEvent.objects.first()
    client = _client(superuser)

    page = client.get(f"/admin/audit/auditevent/{event.pk}/change/")
    delete = client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"})
    edit = client.post(f"/admin/audit/auditevent/{event.pk}/change/", {"reason": "forged"})

    assert page.status_code == 200 and b"Save" not in page.content
    assert delete.status_code == 403
    assert edit.status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).reason == event.reason


def test_history_page__lists_versions_and_diffs_the_two_newest(admin_user, edited_campaign):
    response = _client(admin_user).get(f"/admin/campaigns/campaign/{edited_campaign.pk}/history/")

    assert response.status_code == 200
    assert [row["info"].reason for row in response.context["rows"]] == ["more budget", "rename"]
    assert response.context["diff"]["fields"] == [{"field": "daily_budget", "from": "1000.0000", "to": "2500.0000"}]
    assert b"Restore as a new version" in response.content


def test_history_page__of_another_workspaces_object__is_404(edited_campaign, other_workspace):
    outsider = MembershipFactory(workspace=other_workspace, role=Role.ADMIN).user

    assert _client(outsider).get(f"/admin/campaigns/campaign/{edited_campaign.pk}/history/").status_code == 404


def test_history_page__restore__makes_a_new_version_and_reports_it(admin_user, edited_campaign):
    url = f"/admin/campaigns/campaign/{edited_campaign.pk}/history/"
    client = _client(admin_user)
    oldest = client.get(url).context["rows"][-1]["version"]

    response = client.post(url, {"version": oldest.pk, "reason": "undo both"}, follow=True)

    assert "restored as a new version" in str(list(response.context["messages"])[0])
    assert Campaign.objects.get(pk=edited_campaign.pk).name == "Spring sale"
    assert len(response.context["rows"]) == 3


def test_history_page__restore_refused__shows_the_reason(member, edited_campaign):
    url = f"/admin/campaigns/campaign/{edited_campaign.pk}/history/"
    client = _client(member(Role.MARKETER))
    oldest = client.get(url).context["rows"][-1]["version"]

    response = client.post(url, {"version": oldest.pk, "reason": "mine"}, follow=True)

    assert "not allowed" in str(list(response.context["messages"])[0])
    assert len(response.context["rows"]) == 2
