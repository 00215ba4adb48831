"""The experiment life cycle through its services: validation, four eyes, start, stop, audit."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from accounts.exceptions import Conflict, PermissionDenied
from accounts.roles import Role
from audit.actors import Actor
from audit.models import AuditEvent
from campaigns.models import HoldoutAssignment
from experiments.models import Experiment
from experiments.services import (
    CannotApproveOwnExperiment,
    experiment_analyse,
    experiment_approve,
    experiment_create,
    experiment_start,
    experiment_stop,
    experiment_update,
)
from tests.experiments.builders import (
    DAY,
    WORKER,
    arms,
    audience_experiment,
    launch,
    simulate,
    today,
    two_arm_campaign,
    two_arms,
)
from tests.factories import CampaignFactory, CreativeFactory, MembershipFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup():
    return two_arms()


# --- create and edit ---------------------------------------------------------------------------


def test_experiment_create__valid__is_a_draft_with_its_arms_and_an_audit_event(setup):
    experiment = setup.draft()

    assert (experiment.status, experiment.created_by) == ("draft", setup[1])
    assert sorted(experiment.variants.values_list("key", "is_control")) == [("control", True), ("treated", False)]
    event = AuditEvent.objects.get(action="experiment.create")
    assert [v["key"] for v in event.after["variants"]] == ["control", "treated"]


@pytest.mark.parametrize(("fields", "variants_edit", "error_key"), [
    ({"primary_metric": "spend_pace"}, None, "primary_metric"),
    ({"guardrails": [{"metric": "nope", "max_harm_pct": 5}]}, None, "guardrails[0].metric"),
    ({"guardrails": [{"metric": "cpa"}]}, None, "guardrails[0]"),
    ({"bandit": True, "primary_metric": "cpa"}, None, "bandit"),
    ({}, {"is_control": True}, "variants"),
    ({}, {"segment": None}, "variants[1].segment"),
    ({}, {"key": "not a slug"}, "variants[1].key"),
    ({"kind": "bid"}, None, "variants[0].bid"),
])
def test_experiment_create__invalid__lists_the_problem_by_field(setup, fields, variants_edit, error_key):
    workspace, marketer, _approver, campaign, control, treated = setup
    variants = arms(control, treated)
    variants[1].update(variants_edit or {})

    with pytest.raises(ValidationError) as raised:
        experiment_create(actor=Actor.for_user(marketer), workspace=workspace, campaign=campaign,
                          variants=variants, **{"name": "Broken", "kind": "audience", "primary_metric": "ctr",
                                                **fields})
    assert error_key in raised.value.message_dict


def test_experiment_create__segment_of_another_campaign__is_refused(setup):
    workspace, marketer, _approver, campaign, control, _treated = setup
    elsewhere = two_arm_campaign(workspace)[1]

    with pytest.raises(ValidationError) as raised:
        experiment_create(actor=Actor.for_user(marketer), workspace=workspace, campaign=campaign,
                          variants=arms(control, elsewhere), name="Mixed", kind="audience", primary_metric="ctr")
    assert "variants[1].segment" in raised.value.message_dict


def test_experiment_create__creative_experiment_needs_creatives(setup):
    workspace, marketer, _approver, campaign, _control, _treated = setup
    a, b = CreativeFactory(campaign=campaign), CreativeFactory(campaign=campaign)
    variants = [{"key": "a", "name": "A", "is_control": True, "creative": a},
                {"key": "b", "name": "B", "is_control": False, "creative": b}]

    experiment = experiment_create(actor=Actor.for_user(marketer), workspace=workspace, campaign=campaign,
                                   variants=variants, name="Headlines", kind="creative", primary_metric="ctr")

    assert experiment.variants.get(key="b").creative == b


def test_experiment_create__without_edit_rights__is_refused(setup):
    workspace, _marketer, approver, campaign, control, treated = setup

    with pytest.raises(PermissionDenied):
        experiment_create(actor=Actor.for_user(approver), workspace=workspace, campaign=campaign,
                          variants=arms(control, treated), name="Nope", kind="audience", primary_metric="ctr")


def test_experiment_update__approved__goes_back_to_draft_for_a_new_approval(setup):
    experiment = setup.draft()
    experiment_approve(actor=Actor.for_user(setup[2]), experiment=experiment)

    experiment = experiment_update(actor=Actor.for_user(setup[1]), experiment=experiment,
                                   minimum_detectable_effect_pct=Decimal("5"))

    assert (experiment.status, experiment.approved_by) == ("draft", None)


def test_experiment_update__moving_the_control__keeps_one_control(setup):
    experiment = setup.draft()
    variants = arms(setup[4], setup[5])
    variants[0]["is_control"], variants[1]["is_control"] = False, True

    experiment_update(actor=Actor.for_user(setup[1]), experiment=experiment, variants=variants)

    assert experiment.variants.get(is_control=True).key == "treated"


# --- four eyes ---------------------------------------------------------------------------------


def test_experiment_approve__by_its_creator__is_refused_even_for_an_admin(setup):
    workspace, *_ = setup
    admin = MembershipFactory(workspace=workspace, role=Role.ADMIN).user
    experiment = audience_experiment(workspace, setup[3], setup[4], setup[5], creator=admin)

    with pytest.raises(CannotApproveOwnExperiment):
        experiment_approve(actor=Actor.for_user(admin), experiment=experiment)
    assert Experiment.objects.get(pk=experiment.pk).status == "draft"


def test_experiment_approve__by_a_marketer__is_refused(setup):
    experiment = setup.draft()
    other_marketer = MembershipFactory(workspace=setup[0], role=Role.MARKETER).user

    with pytest.raises(PermissionDenied):
        experiment_approve(actor=Actor.for_user(other_marketer), experiment=experiment)


def test_experiment_approve__by_a_worker__is_refused(setup):
    with pytest.raises(PermissionDenied):
        experiment_approve(actor=WORKER, experiment=setup.draft())


def test_experiment_approve__by_another_approver__approves_and_records_the_power_analysis(setup):
    experiment = experiment_approve(actor=Actor.for_user(setup[2]), experiment=setup.draft())

    assert (experiment.status, experiment.approved_by) == ("approved", setup[2])
    event = AuditEvent.objects.get(action="experiment.approve")
    assert set(event.after["power_analysis"]) >= {"sample_per_arm", "expected_days", "baseline"}


def test_experiment_start__not_approved__is_refused(setup):
    with pytest.raises(Conflict):
        experiment_start(actor=Actor.for_user(setup[2]), experiment=setup.draft())


# --- start and stop ----------------------------------------------------------------------------


def test_experiment_start__fixed_horizon__fixes_the_planned_sample_from_the_last_week(setup):
    workspace, *_ = setup
    experiment = setup.draft(method="fixed")
    simulate(workspace, start=today() - 7 * DAY, days=7)

    experiment = launch(experiment, approver=setup[2], at=today())

    assert experiment.status == "running" and experiment.started_at == today()
    assert 20_000 < experiment.planned_sample_per_arm < 60_000  # CTR ~4.6%, MDE 10%


def test_experiment_start__fixed_horizon_without_traffic__is_refused_with_the_reason(setup):
    experiment = setup.draft(method="fixed")
    experiment_approve(actor=Actor.for_user(setup[2]), experiment=experiment)

    with pytest.raises(Conflict, match="no traffic"):
        experiment_start(actor=Actor.for_user(setup[2]), experiment=experiment)


def test_experiment_start__arm_key_used_by_another_running_experiment__is_refused(setup):
    workspace, marketer, approver, campaign, control, treated = setup
    launch(setup.draft(), approver=approver, at=today())
    other_control, other_treated = two_arm_campaign(workspace)[1:]
    other_control.campaign = other_treated.campaign = campaign
    other_control.save()
    other_treated.save()
    second = audience_experiment(workspace, campaign, other_control, other_treated, creator=marketer,
                                 name="Second")
    experiment_approve(actor=Actor.for_user(approver), experiment=second)

    with pytest.raises(Conflict, match="control, treated"):
        experiment_start(actor=Actor.for_user(approver), experiment=second)


def test_experiment_start__bid_arms_not_bidding_their_setting__is_refused(setup):
    workspace, marketer, approver, campaign, control, treated = setup
    experiment = experiment_create(actor=Actor.for_user(marketer), workspace=workspace, campaign=campaign,
                                   variants=arms(control, treated, bid=Decimal("1.00")), name="Bids", kind="bid",
                                   primary_metric="ctr")
    experiment.variants.filter(key="treated").update(bid=Decimal("1.30"))
    experiment_approve(actor=Actor.for_user(approver), experiment=experiment)

    with pytest.raises(Conflict, match="treated"):
        experiment_start(actor=Actor.for_user(approver), experiment=experiment)


def test_experiment_stop__running__stops_with_the_reason_and_audits(setup):
    experiment = launch(setup.draft(), approver=setup[2], at=today())

    experiment = experiment_stop(actor=Actor.for_user(setup[1]), experiment=experiment, reason="Wrong audience")

    assert (experiment.status, experiment.end_reason) == ("stopped", "Wrong audience")
    assert AuditEvent.objects.filter(action="experiment.stop", subject_id=str(experiment.pk)).exists()


def test_experiment_stop__integrator__is_refused(setup):
    experiment = launch(setup.draft(), approver=setup[2], at=today())
    integrator = MembershipFactory(workspace=setup[0], role=Role.INTEGRATOR).user

    with pytest.raises(PermissionDenied):
        experiment_stop(actor=Actor.for_user(integrator), experiment=experiment)


def test_holdout__start_holds_the_control_segment_out_and_stop_releases_it(setup):
    workspace, marketer, approver, campaign, control, treated = setup
    experiment = experiment_create(actor=Actor.for_user(marketer), workspace=workspace, campaign=campaign,
                                   variants=arms(control, treated), name="Incrementality", kind="holdout",
                                   primary_metric="ctr")

    experiment = launch(experiment, approver=approver, at=today())
    assert list(HoldoutAssignment.objects.values_list("segment_id", "holder")) == [
        (control.pk, f"experiment:{experiment.pk}")]

    experiment_stop(actor=Actor.for_user(approver), experiment=experiment)
    assert not HoldoutAssignment.objects.exists()
    assert AuditEvent.objects.filter(action__in=["holdout.assign", "holdout.release"]).count() == 2


def test_experiment_analyse__by_a_person__is_refused(setup):
    experiment = launch(setup.draft(), approver=setup[2], at=today())

    with pytest.raises(PermissionDenied):
        experiment_analyse(actor=Actor.for_user(setup[2]), experiment=experiment)


def test_experiment_analyse__not_running__does_nothing(setup):
    assert experiment_analyse(actor=WORKER, experiment=setup.draft()) is None


def test_experiment_analyse__keeps_every_run_for_the_charts(setup):
    workspace, *_ = setup
    experiment = launch(setup.draft(method="sequential"), approver=setup[2], at=today() - 4 * DAY)
    simulate(workspace, start=today() - 4 * DAY, days=4)

    for day in (2, 3, 4):
        experiment_analyse(actor=WORKER, experiment=experiment, now=today() - 4 * DAY + day * DAY)

    denominators = [r.variants[0]["denominator"] for r in experiment.results.order_by("computed_at")]
    assert len(denominators) == 3 and denominators == sorted(set(denominators))  # cumulative: growing


def test_other_workspace_campaign__is_refused(setup):
    workspace, marketer, _approver, _campaign, control, treated = setup
    foreign = CampaignFactory()

    with pytest.raises(ValidationError) as raised:
        experiment_create(actor=Actor.for_user(marketer), workspace=workspace, campaign=foreign,
                          variants=arms(control, treated), name="Foreign", kind="audience", primary_metric="ctr")
    assert "campaign" in raised.value.message_dict
