from decimal import Decimal

import pytest

from rules import services as rule_services


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
