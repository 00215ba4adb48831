"""Building experiments for tests: arm segments, experiments through the services, simulated traffic.

Experiments run on daily buckets (`metric_bucket_minutes=1440`) so that a fortnight of simulated
traffic is a few rows per segment. Arms are segments of one search campaign with the same
targeting; an arm's `audience` criterion (which the simulator's market ignores) lets an
incident plant an effect on one arm only.
"""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from django.utils import timezone

from accounts.models import Workspace
from accounts.roles import Role
from audit.actors import Actor
from campaigns.models import Campaign, Segment
from campaigns.simulator import Incident, bucket_range, simulate_and_ingest
from experiments.models import Experiment
from experiments.services import experiment_approve, experiment_create, experiment_start
from tests.factories import CampaignFactory, MembershipFactory, SegmentFactory, WorkspaceFactory

DAY = timedelta(days=1)
WORKER = Actor.worker("tests")


def today() -> datetime:
    return timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)


def daily_workspace(**fields):
    return WorkspaceFactory(metric_bucket_minutes=1440, time_zone="UTC", **fields)


def arm_segment(campaign, audience: str, *, daily_budget: Decimal = Decimal("5000"), **fields):
    """A desktop search segment large enough (~25k impressions a day) for the statistics to bite."""
    defaults = {"criteria": {"device": "desktop", "geo": "FR", "audience": audience}, "bid": Decimal("1.00"),
                "daily_budget": daily_budget, "budget_floor": Decimal("10"), "budget_ceiling": Decimal("20000")}
    return SegmentFactory(campaign=campaign, name=f"Arm {audience} {campaign.pk}", **{**defaults, **fields})


def two_arm_campaign(workspace, **segment_fields):
    campaign = CampaignFactory(workspace=workspace)
    return campaign, arm_segment(campaign, "a", **segment_fields), arm_segment(campaign, "b", **segment_fields)


def arms(control_segment, variant_segment, **extra) -> list[dict]:
    return [
        {"key": "control", "name": "Control", "is_control": True, "segment": control_segment, **extra},
        {"key": "treated", "name": "Treated", "is_control": False, "segment": variant_segment, **extra},
    ]


def people(workspace) -> tuple:
    """A marketer who creates and an approver who launches, in `workspace`."""
    marketer = MembershipFactory(workspace=workspace, role=Role.MARKETER).user
    approver = MembershipFactory(workspace=workspace, role=Role.APPROVER).user
    return marketer, approver


def audience_experiment(workspace, campaign, control_segment, variant_segment, *, creator, **fields):
    fields = {"name": f"Audience test {campaign.pk}", "kind": "audience", "primary_metric": "ctr",
              "minimum_detectable_effect_pct": Decimal("10"), **fields}
    return experiment_create(actor=Actor.for_user(creator), workspace=workspace, campaign=campaign,
                             variants=arms(control_segment, variant_segment), **fields)


def launch(experiment, *, approver, at: datetime):
    experiment = experiment_approve(actor=Actor.for_user(approver), experiment=experiment, now=at)
    return experiment_start(actor=Actor.for_user(approver), experiment=experiment, now=at)


def simulate(workspace, *, start: datetime, days: int, seed: int = 1, incidents=()):
    starts = bucket_range(start, start + days * DAY, bucket_minutes=workspace.metric_bucket_minutes)
    return simulate_and_ingest(workspace=workspace, bucket_starts=starts, seed=seed, incidents=incidents)


def on_arm(audience: str, name: str, **effects) -> Incident:
    """An incident hitting one arm's segment only: a planted effect."""
    return Incident(name, {"audience": audience}, effects)


class TwoArms(NamedTuple):
    """A daily workspace with a marketer and an approver, and a campaign with two arm segments."""

    workspace: Workspace
    marketer: Any
    approver: Any
    campaign: Campaign
    control: Segment
    treated: Segment

    def draft(self, **fields) -> Experiment:
        """An audience experiment on the two arms, created by the marketer."""
        return audience_experiment(self.workspace, self.campaign, self.control, self.treated, creator=self.marketer,
                                   **fields)

    def running(self, *, days: int, incidents=(), **fields) -> Experiment:
        """A draft launched `days` ago by the approver, with those days of simulated traffic since."""
        started = today() - days * DAY
        experiment = launch(self.draft(**fields), approver=self.approver, at=started)
        simulate(self.workspace, start=started, days=days, incidents=incidents)
        return experiment


def two_arms(**segment_fields) -> TwoArms:
    workspace = daily_workspace()
    marketer, approver = people(workspace)
    return TwoArms(workspace, marketer, approver, *two_arm_campaign(workspace, **segment_fields))
