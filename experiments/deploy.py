"""Deploying a decision: the winner keeps serving, the losers are paused and their budget moves to it.

Per kind of experiment:
  creative           the losing arms' creatives are paused;
  bid, audience      the losing arms' segments are paused and their budget (down to each one's
                     floor) moves to the winning arm's segment, capped and conserved
                     (`ChangePlanner.move_budget`);
  holdout            nothing to change: the holdout ends when the experiment does, and the
                     held-out segment rejoins the adjustments.
The changes form one batch, applied all or nothing; with auto-deploy off (or when the approval
policy says so) they wait, proposed, for an approver (`experiments.services.experiment_deploy`).
"""

from datetime import datetime
from decimal import Decimal

from audit.actors import Actor
from campaigns.models import Creative, DeliveryStatus, Segment
from rules.models import Change

from .changes import WAITING_STATUSES, ChangePlanner, PlannedChange, batch_prefix, record_changes
from .models import Experiment, Variant

Kind = Experiment.Kind


def deployment_batch_id(experiment: Experiment) -> str:
    return f"{batch_prefix(experiment)}deploy"


def deployment_plan(experiment: Experiment, winner: Variant, *, now: datetime) -> list[PlannedChange]:
    losers = [v for v in experiment.variants.all() if v.pk != winner.pk]
    planner = ChangePlanner(experiment, now)
    if experiment.kind == Kind.CREATIVE:
        creatives = Creative.objects.filter(pk__in=[v.creative_id for v in losers], status=DeliveryStatus.ACTIVE)
        return [_pause(planner, experiment, creative) for creative in creatives.order_by("pk")]
    if experiment.kind in (Kind.BID, Kind.AUDIENCE):
        return _segments_plan(planner, experiment, winner, losers)
    return []


def _segments_plan(planner: ChangePlanner, experiment: Experiment, winner: Variant,
                   losers: list[Variant]) -> list[PlannedChange]:
    segments = {s.pk: s for s in Segment.objects.filter(pk__in=[v.segment_id for v in [winner, *losers]])
                .select_related("campaign")}
    giving = [segments[v.segment_id] for v in losers if segments[v.segment_id].status == DeliveryStatus.ACTIVE]
    planned = [_pause(planner, experiment, segment) for segment in giving]
    givers = [(s, s.daily_budget - s.budget_floor) for s in giving if s.daily_budget > s.budget_floor]
    if givers:
        asked = sum((amount for _, amount in givers), Decimal(0))
        planned += planner.move_budget(givers, [(segments[winner.segment_id], asked)],
                                       lambda segment, what: _reason(experiment, f"{segment.name} {what}"))
    return planned


def _pause(planner: ChangePlanner, experiment: Experiment, target) -> PlannedChange:
    return planner.change(target, Change.Field.STATUS, target.status, DeliveryStatus.PAUSED,
                          _reason(experiment, f"pause the losing arm's {target._meta.verbose_name} {target.name}"))


def _reason(experiment: Experiment, what: str) -> str:
    winner = experiment.winner
    return f"Experiment “{experiment.name}” deploys {winner.name if winner else 'its winner'}: {what}"


def deployment_record(*, actor: Actor, experiment: Experiment, now: datetime) -> list[Change]:
    """Record the winner's deployment; submitted (routed by the approval policy, applied if approved)
    at once only with auto-deploy. Otherwise it waits, proposed, for `experiment_deploy`."""
    planned = deployment_plan(experiment, experiment.winner, now=now)
    return record_changes(actor=actor, experiment=experiment, planned=planned,
                          batch_id=deployment_batch_id(experiment), submit=experiment.auto_deploy, now=now)


def deployment_state(changes: list[Change]) -> str:
    """What the experiment shows for its deployment, from its changes' statuses."""
    if not changes:
        return Experiment.Deployment.NONE
    if any(c.status in WAITING_STATUSES for c in changes):
        return Experiment.Deployment.PENDING
    return Experiment.Deployment.DEPLOYED
