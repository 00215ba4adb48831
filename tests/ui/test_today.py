"""The admin index as the "today" page: approvals waiting for me, rules that fired, stale feeds."""

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from accounts.roles import Role
from rules.changes import change_propose
from rules.models import ApprovalPolicy, Change
from tests.factories import CampaignFactory, MembershipFactory
from tests.ui.builders import SYSTEM

pytestmark = pytest.mark.django_db

INDEX = reverse("admin:index")


def _pending_bid_change(data) -> Change:
    """A rule's 10% bid change, under a policy that auto-applies only up to 5%: it waits at level 1."""
    ApprovalPolicy.objects.create(workspace=data.rule.workspace, auto_apply_max_pct=Decimal("5"))
    change, _ = change_propose(actor=SYSTEM, target=data.desktop, field=Change.Field.BID, old_value="1.0000",
                               requested_value="1.1000", capped_value="1.1000", cap_report=[],
                               idempotency_key="ui-today-pending", rule=data.rule, rule_version=data.rule.version)
    assert change.status == Change.Status.PENDING
    return change


def test_today__approver__sees_how_many_changes_wait_for_them_with_a_link_to_the_queue(data, browser_as):
    change = _pending_bid_change(data)
    client = browser_as(Role.APPROVER, approval_level=1)
    response = client.get(INDEX)
    assert response.status_code == 200
    assert response.context["approvals_waiting"] == 1
    queue_url = reverse("admin:rules_approvalrequest_changelist")
    assert f'href="{queue_url}"' in response.content.decode()
    # The count is what the queue itself lists.
    assert [item.change for item in client.get(queue_url).context["items"]] == [change]


def test_today__marketer_or_owner_of_the_rule__has_nothing_to_approve(data, browser_as, member):
    _pending_bid_change(data)
    assert browser_as(Role.MARKETER).get(INDEX).context["approvals_waiting"] == 0
    MembershipFactory(user=data.rule.owner, workspace=data.rule.workspace, role=Role.APPROVER, approval_level=1)
    owner = Client()
    owner.force_login(data.rule.owner)
    assert owner.get(INDEX).context["approvals_waiting"] == 0  # four eyes: their rule made it


def test_today__lists_rules_fired_in_24_hours_and_stale_feeds_of_my_workspaces_only(data, other_workspace,
                                                                                      browser_as):
    CampaignFactory(workspace=other_workspace, name="Their stale campaign")
    response = browser_as(Role.MARKETER).get(INDEX)
    assert [(row["rule__name"], row["fired"]) for row in response.context["fired_rules"]] == [("Mobile CPA guard", 1)]
    assert [(f.campaign.name, f.state) for f in response.context["stale_feeds"]] == [("Social prospecting", "stale")]
    page = response.content.decode()
    assert reverse("dashboards:campaign", args=[data.social.pk]) in page
    assert reverse("dashboards:workspace", args=[data.rule.workspace_id]) in page
    assert "Their stale campaign" not in page
