"""Versions recorded by audit_record: who, why, when; a rule and its triggers as one version."""

from decimal import Decimal

import pytest
from django.db import transaction
from reversion.models import Version

from accounts import services as account_services
from accounts.roles import Role
from audit.actors import Actor
from audit.models import AuditEvent
from audit.selectors import object_history, version_children, version_diff, version_fields, version_info
from audit.services import audit_record
from campaigns import services as campaign_services
from campaigns.models import Campaign
from rules import services as rule_services
from rules.models import Rule
from tests.factories import CampaignFactory, CreativeFactory, MembershipFactory, SegmentFactory

pytestmark = pytest.mark.django_db


def _history(obj):
    return list(object_history(type(obj), obj.pk, workspace_ids=None))


def test_campaign_update__records_one_version_with_actor_reason_and_time(workspace, admin_actor):
    campaign = CampaignFactory(workspace=workspace)

    campaign_services.campaign_update(actor=admin_actor, campaign=campaign, daily_budget=Decimal("1500"),
                                      reason="Spring push")

    [version] = _history(campaign)
    info = version_info(version)
    assert version_fields(version)["daily_budget"] == Decimal("1500")
    assert (info.actor_kind, info.actor_label, info.reason) == ("user", admin_actor.label, "Spring push")
    assert info.action == "campaign.update"
    event = AuditEvent.objects.get(pk=info.event_ids[0])
    assert version.revision.date_created == event.created_at
    assert version.revision.user_id == admin_actor.user_id


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda ws, actor: account_services.workspace_update(
            actor=actor, workspace=ws, guardrail_max_step_pct=Decimal("15"), reason="tighter"), id="workspace"),
        pytest.param(lambda ws, actor: account_services.membership_update(
            actor=actor, membership=MembershipFactory(workspace=ws), approval_level=2), id="membership"),
        pytest.param(lambda ws, actor: campaign_services.segment_update(
            actor=actor, segment=SegmentFactory(campaign__workspace=ws), bid=Decimal("1.2")), id="segment"),
        pytest.param(lambda ws, actor: campaign_services.creative_update(
            actor=actor, creative=CreativeFactory(campaign__workspace=ws), headline="New"), id="creative"),
    ],
)
def test_service_writes__of_each_versioned_model__record_a_version(workspace, admin_actor, write):
    obj = write(workspace, admin_actor)

    assert len(_history(obj)) == 1


def test_worker_and_token_actors__are_named_on_the_version(workspace):
    campaign = CampaignFactory(workspace=workspace)
    with transaction.atomic():
        audit_record(actor=Actor.worker("rules.evaluate"), action="campaign.update", subject=campaign)

    [version] = _history(campaign)
    assert (version_info(version).actor_kind, version_info(version).actor_label) == ("worker", "worker:rules.evaluate")
    assert version.revision.user is None


def test_unversioned_subject__records_an_event_but_no_version(workspace, admin_actor):
    token, _ = account_services.api_token_create(
        actor=admin_actor, workspace=workspace, user=admin_actor.user, name="ci"
    )

    assert AuditEvent.objects.filter(action="api_token.create").exists()
    assert not Version.objects.exists()


def test_rule_update__saves_the_rule_and_its_triggers_as_one_version(make_rule, admin_actor):
    rule = make_rule()
    rule_services.rule_update(
        actor=admin_actor, rule=rule, reason="looser CTR",
        triggers=[{"metric": "ctr", "kind": "threshold", "direction": "below", "threshold": Decimal("0.02")}],
    )

    newest, oldest = _history(rule)
    assert newest.revision_id != oldest.revision_id
    assert version_fields(newest)["version"] == 2
    assert len(version_children(oldest)["triggers"]) == 2
    assert version_children(newest)["triggers"]["0"]["threshold"] == Decimal("0.02")


def test_version_diff__lists_changed_fields_and_trigger_changes(make_rule, admin_actor):
    rule = make_rule()
    rule_services.rule_update(
        actor=admin_actor, rule=rule, action_value=Decimal("-8"),
        triggers=[{"metric": "ctr", "kind": "threshold", "direction": "below", "threshold": Decimal("0.02")}],
    )
    newest, oldest = _history(rule)

    diff = version_diff(oldest, newest)

    assert {"field": "action_value", "from": "-5.0000", "to": "-8.0000"} in diff["fields"]
    assert {"field": "version", "from": 1, "to": 2} in diff["fields"]
    triggers = diff["children"]["triggers"]
    assert triggers["changed"] == [{"id": "0", "changes": [{"field": "threshold", "from": "0.010000",
                                                             "to": "0.020000"}]}]
    assert [t["fields"]["metric"] for t in triggers["removed"]] == ["cpa"]
    assert triggers["added"] == []


def test_version_diff__of_two_objects__is_refused(workspace, admin_actor):
    first, second = CampaignFactory(workspace=workspace), CampaignFactory(workspace=workspace)
    for campaign in (first, second):
        campaign_services.campaign_update(actor=admin_actor, campaign=campaign, name=f"{campaign.name}!")

    with pytest.raises(ValueError, match="same object"):
        version_diff(_history(first)[0], _history(second)[0])


def test_object_history__is_scoped_to_the_readers_workspaces(workspace, other_workspace, admin_actor):
    campaign = CampaignFactory(workspace=workspace)
    campaign_services.campaign_update(actor=admin_actor, campaign=campaign, name="Renamed")

    assert object_history(Campaign, campaign.pk, workspace_ids=[other_workspace.pk]).count() == 0
    assert object_history(Campaign, campaign.pk, workspace_ids=[workspace.pk]).count() == 1


def test_deleted_object__keeps_its_history(workspace, admin_actor):
    campaign = CampaignFactory(workspace=workspace)
    campaign_pk = campaign.pk
    campaign_services.campaign_update(actor=admin_actor, campaign=campaign, name="Renamed")
    campaign_services.campaign_delete(actor=admin_actor, campaign=campaign, reason="ended")

    versions = list(object_history(Campaign, campaign_pk, workspace_ids=[workspace.pk]))
    assert [version_info(v).action for v in versions] == ["campaign.delete", "campaign.update"]


def test_marketer_edit__is_versioned_with_the_marketers_name(workspace, member):
    marketer = member(Role.MARKETER)
    rule_owner = member(Role.ADMIN)
    rule = rule_services.rule_create(
        actor=Actor.for_user(rule_owner), workspace=workspace, owner=rule_owner, name="R", action="alert",
    )
    rule_services.rule_update(actor=Actor.for_user(marketer), rule=rule, description="why not")

    assert version_info(_history(rule)[0]).actor_label == marketer.username
    assert Rule.objects.get(pk=rule.pk).version == 2
