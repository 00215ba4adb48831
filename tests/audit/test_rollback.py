"""Restoring an earlier version as a new version: through the domain service, audited, with rights."""

from decimal import Decimal

import pytest

from accounts.roles import ROLE_PERMISSIONS, Perm, Role
from accounts.services import workspace_update
from audit.actors import Actor
from audit.exceptions import RestoreError
from audit.models import AuditEvent
from audit.rollback import version_restore
from audit.selectors import object_history, version_children, version_diff, version_fields, version_info
from campaigns import services as campaign_services
from campaigns.models import Campaign
from rules import services as rule_services
from rules.models import Rule
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


def _history(obj):
    return list(object_history(type(obj), obj.pk, workspace_ids=None))


def test_version_restore__rule_with_triggers__comes_back_exactly_as_a_new_version(make_rule, admin_actor):
    rule = make_rule()
    rule_services.rule_update(
        actor=admin_actor, rule=rule, name="Cut bids harder", action_value=Decimal("-9"),
        triggers=[{"metric": "cvr", "kind": "threshold", "direction": "below", "threshold": Decimal("0.002")}],
    )
    original = _history(rule)[-1]

    version_restore(actor=admin_actor, version=original, reason="The new triggers fired too often")

    restored_rule = Rule.objects.get(pk=rule.pk)
    assert restored_rule.version == 3
    newest = _history(rule)[0]
    diff = version_diff(original, newest)
    assert diff["fields"] == [{"field": "version", "from": 1, "to": 3}]
    assert diff["children"]["triggers"] == {"added": [], "removed": [], "changed": []}
    assert [t.metric for t in restored_rule.triggers.order_by("position")] == ["ctr", "cpa"]
    assert len(version_children(newest)["triggers"]) == 2


def test_version_restore__is_one_new_version_with_two_audit_events(make_rule, admin_actor):
    rule = make_rule()
    rule_services.rule_update(actor=admin_actor, rule=rule, description="changed")
    original = _history(rule)[-1]

    version_restore(actor=admin_actor, version=original, reason="undo")

    history = _history(rule)
    assert len(history) == 3
    info = version_info(history[0])
    assert info.action == "rule.update, version.restore"
    assert info.reason == "undo"
    restore_event = AuditEvent.objects.get(action="version.restore")
    assert restore_event.after["restored_from_version"] == original.pk
    assert restore_event.before["version"] == history[1].pk


def test_version_restore__campaign__restores_the_configured_fields(workspace, admin_actor):
    campaign = CampaignFactory(workspace=workspace, daily_budget=Decimal("1000"))
    campaign_services.campaign_update(actor=admin_actor, campaign=campaign, name="First", reason="a")
    campaign_services.campaign_update(actor=admin_actor, campaign=campaign, daily_budget=Decimal("4000"),
                                      name="Second", reason="b")

    version_restore(actor=admin_actor, version=_history(campaign)[-1], reason="budget typo")

    campaign.refresh_from_db()
    assert (campaign.name, campaign.daily_budget) == ("First", Decimal("1000"))
    assert version_fields(_history(campaign)[0])["daily_budget"] == Decimal("1000")


def test_version_restore__without_a_reason__is_refused(workspace, admin_actor):
    campaign = CampaignFactory(workspace=workspace)
    campaign_services.campaign_update(actor=admin_actor, campaign=campaign, name="First")

    with pytest.raises(RestoreError, match="why"):
        version_restore(actor=admin_actor, version=_history(campaign)[0], reason="  ")


def test_version_restore__by_a_marketer__is_refused(workspace, admin_actor, member):
    campaign = CampaignFactory(workspace=workspace)
    campaign_services.campaign_update(actor=admin_actor, campaign=campaign, name="First")
    marketer = Actor.for_user(member(Role.MARKETER))

    with pytest.raises(RestoreError) as refused:
        version_restore(actor=marketer, version=_history(campaign)[0], reason="try")

    assert refused.value.status == 403
    assert not AuditEvent.objects.filter(action="version.restore").exists()


def test_version_restore__of_an_active_rule__needs_activation_rights(make_rule, admin_actor, member, monkeypatch):
    # Given a role that may roll back but not activate rules (no built-in role is like that),
    monkeypatch.setitem(ROLE_PERMISSIONS, Role.MARKETER, ROLE_PERMISSIONS[Role.MARKETER] | {Perm.ROLLBACK})
    rule = make_rule()
    rule_services.rule_update(actor=admin_actor, rule=rule, description="v2")
    rule_services.rule_activate(actor=admin_actor, rule=rule)
    marketer = Actor.for_user(member(Role.MARKETER))

    with pytest.raises(RestoreError, match="active") as refused:
        version_restore(actor=marketer, version=_history(rule)[-1], reason="back to v1")

    assert refused.value.status == 403
    assert Rule.objects.get(pk=rule.pk).version == 2


def test_version_restore__of_a_paused_rule__by_that_role__is_allowed(make_rule, admin_actor, member, monkeypatch):
    monkeypatch.setitem(ROLE_PERMISSIONS, Role.MARKETER, ROLE_PERMISSIONS[Role.MARKETER] | {Perm.ROLLBACK})
    rule = make_rule()
    rule_services.rule_update(actor=admin_actor, rule=rule, description="v2")

    version_restore(actor=Actor.for_user(member(Role.MARKETER)), version=_history(rule)[-1], reason="back to v1")

    assert Rule.objects.get(pk=rule.pk).description == ""


def test_version_restore__of_a_deleted_object__is_refused(workspace, admin_actor):
    campaign = CampaignFactory(workspace=workspace)
    campaign_services.campaign_update(actor=admin_actor, campaign=campaign, name="First")
    version = _history(campaign)[0]
    Campaign.objects.filter(pk=campaign.pk).delete()

    with pytest.raises(RestoreError) as refused:
        version_restore(actor=admin_actor, version=version, reason="bring back")

    assert refused.value.code == "object_gone"


def test_version_restore__workspace_guardrails__come_back(workspace, admin_actor):
    workspace_update(actor=admin_actor, workspace=workspace, guardrail_max_step_pct=Decimal("15"), reason="a")
    workspace_update(actor=admin_actor, workspace=workspace, guardrail_max_step_pct=Decimal("40"), reason="b")

    version_restore(actor=admin_actor, version=_history(workspace)[-1], reason="40% was too loose")

    workspace.refresh_from_db()
    assert workspace.guardrail_max_step_pct == Decimal("15")
