"""Deploying a decision: capped, audited changes of kind EXPERIMENT, through the approval policy."""

from decimal import Decimal

import pytest

from accounts.exceptions import Conflict, PermissionDenied
from audit.actors import Actor
from audit.models import AuditEvent
from campaigns.models import Segment
from experiments.deploy import deployment_batch_id, deployment_record
from experiments.models import Experiment
from experiments.services import experiment_analyse, experiment_create, experiment_deploy
from rules.models import ApprovalPolicy, Change
from tests.experiments.builders import (
    WORKER,
    daily_workspace,
    on_arm,
    people,
    today,
    two_arm_campaign,
    two_arms,
)
from tests.factories import CreativeFactory

pytestmark = pytest.mark.django_db
BUDGET = Decimal("2000")


def _concluded(*, auto_deploy: bool, policy_gates=None):
    """A sequential audience experiment whose variant wins clearly (CTR x 1.3), analysed once."""
    arms = two_arms(daily_budget=BUDGET)
    if policy_gates is not None:
        ApprovalPolicy.objects.create(workspace=arms.workspace, always_require_approval=policy_gates)
    experiment = arms.running(days=5, incidents=[on_arm("b", "better", ctr=1.3)], method="sequential",
                              auto_deploy=auto_deploy)
    experiment_analyse(actor=WORKER, experiment=experiment, now=today())
    experiment = Experiment.objects.get(pk=experiment.pk)
    assert (experiment.status, experiment.winner.key) == ("concluded", "treated")
    return experiment, arms.control, arms.treated, arms.approver, arms.marketer


def _changes(experiment) -> dict[tuple[int, str], Change]:
    changes = Change.objects.filter(batch_id=deployment_batch_id(experiment))
    return {(c.segment_id, c.field): c for c in changes}


def test_deploy__auto__pauses_the_loser_and_moves_capped_budget_to_the_winner():
    experiment, control, treated, *_ = _concluded(auto_deploy=True)

    changes = _changes(experiment)
    assert set(changes) == {(control.pk, "status"), (control.pk, "daily_budget"), (treated.pk, "daily_budget")}
    assert {c.kind for c in changes.values()} == {Change.Kind.EXPERIMENT}
    assert {c.status for c in changes.values()} == {Change.Status.APPLIED}
    cut, raised = changes[(control.pk, "daily_budget")], changes[(treated.pk, "daily_budget")]
    # Asked: all of the loser's budget above its floor; the workspace's 10%/hour guardrail bound it.
    assert cut.requested_value == "10.0000" and cut.capped_value == "1800.0000"
    assert raised.capped_value == "2200.0000"
    assert any(entry["cap"] == "workspace_hour" and entry["bound"] for entry in cut.cap_report)
    control.refresh_from_db()
    treated.refresh_from_db()
    assert (control.status, control.daily_budget, treated.daily_budget) == ("paused", Decimal("1800"),
                                                                             Decimal("2200"))
    assert experiment.deployment == "deployed"
    assert AuditEvent.objects.filter(action="change.apply", after__change__in=[c.pk for c in changes.values()]
                                     ).count() == 3
    assert AuditEvent.objects.filter(action="experiment.deploy", subject_id=str(experiment.pk)).exists()


def test_deploy__auto_off__is_proposed_and_waits_for_an_approver():
    experiment, control, treated, approver, marketer = _concluded(auto_deploy=False)

    assert experiment.deployment == "pending"
    assert {c.status for c in _changes(experiment).values()} == {Change.Status.PROPOSED}
    assert Segment.objects.get(pk=control.pk).status == "active"

    with pytest.raises(PermissionDenied):
        experiment_deploy(actor=Actor.for_user(marketer), experiment=experiment)
    experiment = experiment_deploy(actor=Actor.for_user(approver), experiment=experiment, reason="Ship it")

    assert experiment.deployment == "deployed"
    assert {c.status for c in _changes(experiment).values()} == {Change.Status.APPLIED}
    assert Segment.objects.get(pk=control.pk).status == "paused"
    with pytest.raises(Conflict):
        experiment_deploy(actor=Actor.for_user(approver), experiment=experiment)


def test_deploy__policy_requires_approval_for_pausing__waits_pending_even_with_auto_deploy():
    experiment, control, *_ = _concluded(auto_deploy=True, policy_gates=["pause_segment"])

    assert experiment.deployment == "pending"
    assert {c.status for c in _changes(experiment).values()} == {Change.Status.PENDING}
    assert Segment.objects.get(pk=control.pk).status == "active"


def test_deploy__recorded_twice__creates_nothing_new():
    experiment, *_ = _concluded(auto_deploy=False)
    before = Change.objects.count()

    deployment_record(actor=WORKER, experiment=experiment, now=today())

    assert Change.objects.count() == before


def test_deploy__creative_experiment__pauses_the_losing_creative():
    workspace = daily_workspace()
    marketer, _approver = people(workspace)
    campaign, _control, _treated = two_arm_campaign(workspace)
    old, new = CreativeFactory(campaign=campaign), CreativeFactory(campaign=campaign)
    experiment = experiment_create(
        actor=Actor.for_user(marketer), workspace=workspace, campaign=campaign, name="Headline", kind="creative",
        primary_metric="ctr", auto_deploy=True,
        variants=[{"key": "old", "name": "Old", "is_control": True, "creative": old},
                  {"key": "new", "name": "New", "is_control": False, "creative": new}],
    )
    Experiment.objects.filter(pk=experiment.pk).update(status="concluded", winner=experiment.variants.get(key="new"))
    experiment = Experiment.objects.get(pk=experiment.pk)

    [change] = deployment_record(actor=WORKER, experiment=experiment, now=today())

    assert (change.creative_id, change.field, change.capped_value, change.status) == (old.pk, "status", "paused",
                                                                                       "applied")
    new.refresh_from_db()
    assert new.status == "active"
