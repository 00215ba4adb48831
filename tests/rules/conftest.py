"""Fixtures shared by the rules tests."""

from decimal import Decimal

import pytest

from tests.factories import CampaignFactory, SegmentFactory


@pytest.fixture
def segment(workspace):
    """A segment bidding 1.00, in a campaign of the test's workspace: the target of most changes."""
    return SegmentFactory(campaign=CampaignFactory(workspace=workspace), bid=Decimal("1.00"))
