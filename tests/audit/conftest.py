from decimal import Decimal

import pytest

from campaigns import services as campaign_services
from rules import services as rule_services
from tests.factories import CampaignFactory


@pytest.fixture
def make_rule(workspace, admin_user, admin_actor):
    """make_rule(**fields) -> a draft rule of `workspace` with two triggers, made by its admin."""

    def make(**fields):
        defaults = {
            "name": "Cut bids on weak CTR",
            "action": "bid_pct",
            "action_value": Decimal("-5"),
            "triggers": [
                {"metric": "ctr", "kind": "threshold", "direction": "below", "threshold": Decimal("0.01")},
                {"metric": "cpa", "kind": "threshold", "direction": "above", "threshold": Decimal("40")},
            ],
        }
        return rule_services.rule_create(
            actor=admin_actor, workspace=workspace, owner=admin_user, **{**defaults, **fields}
        )

    return make


@pytest.fixture
def edited_campaign(workspace, admin_actor):
    """A campaign of `workspace` with three versions: created, renamed, given more budget."""
    campaign = CampaignFactory(workspace=workspace, name="Spring")
    campaign_services.campaign_update(actor=admin_actor, campaign=campaign, name="Spring sale", reason="rename")
    campaign_services.campaign_update(actor=admin_actor, campaign=campaign, daily_budget=Decimal("2500"),
                                      reason="more budget")
    return campaign
