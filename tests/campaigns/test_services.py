"""Writes to campaigns, segments and creatives: permission, validation, audit, in one transaction."""

from datetime import date
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from accounts.exceptions import PermissionDenied
from accounts.roles import Role
from accounts.services import api_token_create
from audit.actors import Actor
from audit.models import AuditEvent
from campaigns import services
from campaigns.models import Campaign, Creative, Segment

pytestmark = pytest.mark.django_db

SEGMENT_FIELDS = {
    "name": "Desktop DE", "criteria": {"device": "desktop", "geo": "DE"}, "bid": Decimal("1.20"),
    "bid_floor": Decimal("0.50"), "bid_ceiling": Decimal("3.00"), "daily_budget": Decimal("80"),
    "budget_floor": Decimal("20"), "budget_ceiling": Decimal("200"),
}


def _events(action):
    return list(AuditEvent.objects.filter(action=action))


def test_campaign_create__by_a_marketer__saves_and_audits(workspace, marketer_actor):
    campaign = services.campaign_create(
        actor=marketer_actor, workspace=workspace, name="Summer", channel="social",
        daily_budget=Decimal("300"), start_date=date(2026, 6, 1),
    )
    [event] = _events("campaign.create")
    assert event.subject_id == str(campaign.pk)
    assert event.workspace_id == workspace.pk
    assert event.actor_label == marketer_actor.label
    assert event.after["name"] == "Summer"


def test_campaign_update__records_before_and_after(campaign, marketer_actor):
    services.campaign_update(actor=marketer_actor, campaign=campaign, daily_budget=Decimal("1200"), reason="Q2 push")
    campaign.refresh_from_db()
    assert campaign.daily_budget == Decimal("1200")
    [event] = _events("campaign.update")
    assert (Decimal(event.before["daily_budget"]), Decimal(event.after["daily_budget"])) == (1000, 1200)
    assert event.reason == "Q2 push"


def test_campaign_delete__audits_and_cascades_to_segments(segment, marketer_actor):
    services.campaign_delete(actor=marketer_actor, campaign=segment.campaign)
    assert not Segment.objects.exists()
    [event] = _events("campaign.delete")
    assert event.before["name"] == "Spring sale"


@pytest.mark.parametrize("role", [Role.APPROVER, Role.INTEGRATOR])
def test_campaign_create__by_a_role_that_does_not_edit_campaigns__is_refused(workspace, member, role):
    with pytest.raises(PermissionDenied):
        services.campaign_create(actor=Actor.for_user(member(role)), workspace=workspace, name="X",
                                 channel="search", daily_budget=Decimal("1"), start_date=date(2026, 1, 1))
    assert not Campaign.objects.exists()
    assert not AuditEvent.objects.filter(action="campaign.create").exists()


def test_campaign_create__by_a_member_of_another_workspace__is_refused(other_workspace, marketer_actor):
    with pytest.raises(PermissionDenied):
        services.campaign_create(actor=marketer_actor, workspace=other_workspace, name="X", channel="search",
                                 daily_budget=Decimal("1"), start_date=date(2026, 1, 1))


def test_segment_create__by_an_integrator_granted_configuration__works_through_its_token(campaign, member,
                                                                                        admin_actor):
    integrator = member(Role.INTEGRATOR, can_manage_config=True)
    token, _ = api_token_create(actor=admin_actor, workspace=campaign.workspace, user=integrator, name="ci")
    segment = services.segment_create(actor=Actor.for_token(token), campaign=campaign, **SEGMENT_FIELDS)
    [event] = _events("segment.create")
    assert (event.actor_kind, event.subject_id) == ("token", str(segment.pk))


@pytest.mark.parametrize("values, field", [
    ({"bid": Decimal("3.50")}, "__all__"),  # above its ceiling
    ({"daily_budget": Decimal("10")}, "__all__"),  # below its floor
    ({"bid": Decimal("-1"), "bid_floor": Decimal("-2")}, "bid"),
])
def test_segment_create__outside_its_bounds__is_refused_and_not_audited(campaign, marketer_actor, values, field):
    with pytest.raises(ValidationError) as error:
        services.segment_create(actor=marketer_actor, campaign=campaign, **{**SEGMENT_FIELDS, **values})
    assert field in error.value.message_dict
    assert not Segment.objects.exists()
    assert not _events("segment.create")


def test_segment_update__bid_above_ceiling__is_refused_and_nothing_changes(segment, marketer_actor):
    with pytest.raises(ValidationError):
        services.segment_update(actor=marketer_actor, segment=segment, bid=Decimal("9"))
    segment.refresh_from_db()
    assert segment.bid == Decimal("1.00")
    assert not _events("segment.update")


def test_segment_update__moving_to_another_campaign__is_refused(segment, marketer_actor):
    with pytest.raises(ValidationError, match="campaign"):
        services.segment_update(actor=marketer_actor, segment=segment, campaign=segment.campaign)


def test_campaign_update__freshness_fields__are_refused(campaign, marketer_actor):
    with pytest.raises(ValidationError, match="data_quality_flag"):
        services.campaign_update(actor=marketer_actor, campaign=campaign, data_quality_flag="")


def test_campaign_update__an_unknown_field__is_a_programming_error(campaign, marketer_actor):
    with pytest.raises(TypeError, match="budget"):
        services.campaign_update(actor=marketer_actor, campaign=campaign, budget=Decimal("1"))


def test_creative_lifecycle__each_step_audited(campaign, marketer_actor):
    creative = services.creative_create(actor=marketer_actor, campaign=campaign, name="Video 1", headline="Hi")
    services.creative_update(actor=marketer_actor, creative=creative, status="paused")
    services.creative_delete(actor=marketer_actor, creative=creative)
    assert not Creative.objects.exists()
    actions = list(AuditEvent.objects.filter(subject_type="campaigns.creative").values_list("action", flat=True))
    assert actions == ["creative.create", "creative.update", "creative.delete"]


def test_segment_delete__by_an_approver__is_refused(segment, member):
    with pytest.raises(PermissionDenied):
        services.segment_delete(actor=Actor.for_user(member(Role.APPROVER)), segment=segment)
    assert Segment.objects.filter(pk=segment.pk).exists()
