import pytest

from accounts.roles import Role
from audit.actors import Actor
from tests.factories import CampaignFactory, CreativeFactory, SegmentFactory


@pytest.fixture
def campaign(workspace):
    return CampaignFactory(workspace=workspace, name="Spring sale")


@pytest.fixture
def segment(campaign):
    return SegmentFactory(campaign=campaign, name="Mobile FR", external_id="adset-1")


@pytest.fixture
def creative(campaign):
    return CreativeFactory(campaign=campaign, name="Banner A")


@pytest.fixture
def other_segment(other_workspace):
    """A segment of another workspace, which callers of `workspace` must never reach."""
    return SegmentFactory(campaign__workspace=other_workspace, external_id="adset-1")


@pytest.fixture
def marketer_actor(member):
    return Actor.for_user(member(Role.MARKETER))
