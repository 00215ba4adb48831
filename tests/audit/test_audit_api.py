"""/api/v1/audit/events/ and /api/v1/versions/: scoped reads, diffs and restores."""

from decimal import Decimal

import pytest

from accounts import services as account_services
from accounts.roles import Role
from audit.actors import Actor
from audit.models import AuditEvent
from campaigns import services as campaign_services
from campaigns.models import Campaign
from rules import services as rule_services
from rules.changes import change_apply, change_propose
from rules.models import Change
from tests.factories import CampaignFactory, MembershipFactory, SegmentFactory

pytestmark = pytest.mark.django_db


def _versions(client, obj, label):
    response = client.get("/api/v1/versions/", {"model": label, "object_id": obj.pk})
    assert response.status_code == 200, response.data
    return response.data["results"]


def test_audit_events__list__shows_only_the_callers_workspaces(client_for, admin_user, edited_campaign,
                                                               other_workspace, system_actor):
    CampaignFactory(workspace=other_workspace)
    account_services.workspace_update(actor=system_actor, workspace=other_workspace, currency="USD")

    response = client_for(admin_user).get("/api/v1/audit/events/", {"action": "campaign.update"})

    assert response.status_code == 200
    assert [e["reason"] for e in response.data["results"]] == ["more budget", "rename"]
    assert {e["workspace_id"] for e in response.data["results"]} == {edited_campaign.workspace_id}


def test_audit_events__of_another_workspace__answer_404(client_for, admin_user, other_workspace, system_actor):
    account_services.workspace_update(actor=system_actor, workspace=other_workspace, currency="USD")
    foreign = AuditEvent.objects.get(workspace_id=other_workspace.pk)

    assert client_for(admin_user).get(f"/api/v1/audit/events/{foreign.pk}/").status_code == 404


def test_versions__list__carries_actor_reason_and_time(client_for, admin_user, edited_campaign):
    versions = _versions(client_for(admin_user), edited_campaign, "campaigns.campaign")

    assert [v["reason"] for v in versions] == ["more budget", "rename"]
    assert versions[0]["actor_label"] == admin_user.username
    assert versions[0]["action"] == "campaign.update"
    assert (versions[0]["model"], versions[0]["object_id"]) == ("campaigns.campaign", str(edited_campaign.pk))
    assert versions[0]["created_at"]


def test_versions__of_another_workspace__are_not_listed(client_for, edited_campaign, other_workspace):
    outsider = MembershipFactory(workspace=other_workspace, role=Role.ADMIN).user

    assert _versions(client_for(outsider), edited_campaign, "campaigns.campaign") == []


def test_versions__unknown_model__is_a_validation_error(client_for, admin_user):
    response = client_for(admin_user).get("/api/v1/versions/", {"model": "auth.user", "object_id": 1})

    assert response.status_code == 400
    assert response.data["error"]["code"] == "invalid"


def test_versions__diff__shows_field_by_field_changes(client_for, admin_user, edited_campaign):
    client = client_for(admin_user)
    newest, oldest = _versions(client, edited_campaign, "campaigns.campaign")

    response = client.get("/api/v1/versions/diff/", {"from": oldest["id"], "to": newest["id"]})

    assert response.status_code == 200
    assert response.data["fields"] == [{"field": "daily_budget", "from": "1000.0000", "to": "2500.0000"}]


def test_versions__diff_of_a_rule__includes_its_triggers(client_for, admin_user, admin_actor, make_rule):
    rule = make_rule()
    rule_services.rule_update(actor=admin_actor, rule=rule, triggers=[
        {"metric": "ctr", "kind": "threshold", "direction": "below", "threshold": Decimal("0.01")},
    ])
    client = client_for(admin_user)
    newest, oldest = _versions(client, rule, "rules.rule")

    diff = client.get("/api/v1/versions/diff/", {"from": oldest["id"], "to": newest["id"]}).data

    assert [t["fields"]["metric"] for t in diff["children"]["triggers"]["removed"]] == ["cpa"]


def test_versions__detail__shows_the_stored_fields_and_children(client_for, admin_user, make_rule):
    rule = make_rule()
    client = client_for(admin_user)
    [version] = _versions(client, rule, "rules.rule")

    detail = client.get(f"/api/v1/versions/{version['id']}/").data

    assert detail["fields"]["name"] == "Cut bids on weak CTR"
    assert detail["children"]["triggers"]["1"]["metric"] == "cpa"


def test_versions__restore__makes_a_new_version(client_for, admin_user, edited_campaign):
    client = client_for(admin_user)
    oldest = _versions(client, edited_campaign, "campaigns.campaign")[-1]

    response = client.post(f"/api/v1/versions/{oldest['id']}/restore/", {"reason": "budget was a typo"})

    assert response.status_code == 201, response.data
    assert response.data["action"] == "campaign.update, version.restore"
    assert Campaign.objects.get(pk=edited_campaign.pk).daily_budget == Decimal("1000")


def test_versions__restore_by_a_marketer__is_403_with_the_error_body(client_for, member, edited_campaign):
    client = client_for(member(Role.MARKETER))
    oldest = _versions(client, edited_campaign, "campaigns.campaign")[-1]

    response = client.post(f"/api/v1/versions/{oldest['id']}/restore/", {"reason": "mine"})

    assert response.status_code == 403
    assert response.data["error"]["code"] == "permission_denied"


def test_versions__restore_without_reason__is_400(client_for, admin_user, edited_campaign):
    client = client_for(admin_user)
    oldest = _versions(client, edited_campaign, "campaigns.campaign")[-1]

    response = client.post(f"/api/v1/versions/{oldest['id']}/restore/", {})

    assert response.status_code == 400


def test_change_rollback_endpoint__rolls_back_and_refuses_a_moved_target(client_for, admin_user, admin_actor,
                                                                          workspace):
    segment = SegmentFactory(campaign__workspace=workspace, bid=Decimal("1"))
    change, _ = change_propose(
        actor=admin_actor, target=segment, field=Change.Field.BID, old_value="1.0000", requested_value="1.1000",
        capped_value="1.1000", cap_report=[], idempotency_key="manual:api", kind=Change.Kind.MANUAL,
    )
    change_apply(actor=admin_actor, change=change)
    campaign_services.segment_update(actor=admin_actor, segment=segment, bid=Decimal("2"))
    client = client_for(admin_user)

    refused = client.post(f"/api/v1/changes/{change.pk}/rollback/", {"reason": "undo"})
    forced = client.post(f"/api/v1/changes/{change.pk}/rollback/", {"reason": "undo", "force": True})

    assert refused.status_code == 409
    assert refused.data["error"]["details"]["current_value"] == "2.0000"
    assert forced.status_code == 201, forced.data
    assert forced.data["capped_value"] == "1.0000"


def test_change_rollback_endpoint__of_another_workspace__is_404(client_for, other_workspace, admin_user):
    segment = SegmentFactory(campaign__workspace=other_workspace)
    change, _ = change_propose(
        actor=Actor.system("t"), target=segment, field=Change.Field.BID, old_value="1.0000",
        requested_value="1.1000", capped_value="1.1000", cap_report=[], idempotency_key="manual:x",
        kind=Change.Kind.MANUAL,
    )

    assert client_for(admin_user).post(f"/api/v1/changes/{change.pk}/rollback/", {"reason": "x"}).status_code == 404


def test_change_trail_endpoint__lists_the_changes_events(client_for, admin_user, admin_actor, workspace):
    segment = SegmentFactory(campaign__workspace=workspace, bid=Decimal("1"))
    change, _ = change_propose(
        actor=admin_actor, target=segment, field=Change.Field.BID, old_value="1.0000", requested_value="1.1000",
        capped_value="1.1000", cap_report=[], idempotency_key="manual:trail", kind=Change.Kind.MANUAL,
    )
    change_apply(actor=admin_actor, change=change)

    response = client_for(admin_user).get(f"/api/v1/changes/{change.pk}/trail/")

    assert response.status_code == 200
    assert [e["action"] for e in response.data["events"]] == ["change.propose", "change.auto_approve", "change.apply"]
    assert response.data["rule_version_id"] is None
