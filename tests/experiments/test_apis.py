"""REST API of experiments: roles per action, four eyes, scoping (404), power analysis, results with charts."""

import pytest

from accounts.roles import Role
from experiments.models import Experiment
from experiments.services import experiment_analyse
from tests.experiments.builders import (
    DAY,
    WORKER,
    audience_experiment,
    daily_workspace,
    launch,
    people,
    simulate,
    today,
    two_arm_campaign,
)
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db

EXPERIMENTS = "/api/v1/experiments/"


@pytest.fixture
def space():
    workspace = daily_workspace()
    campaign, control, treated = two_arm_campaign(workspace)
    return workspace, campaign, control, treated


@pytest.fixture
def as_role(space, client_for):
    def make(role):
        user = MembershipFactory(workspace=space[0], role=role).user
        return client_for(user), user

    return make


def _body(space, **fields):
    workspace, campaign, control, treated = space
    return {"workspace": workspace.pk, "campaign": campaign.pk, "name": "New audience", "kind": "audience",
            "primary_metric": "ctr", "guardrails": [{"metric": "bounce_rate", "max_harm_pct": 10}],
            "variants": [{"key": "control", "name": "Control", "is_control": True, "segment": control.pk},
                         {"key": "new", "name": "New audience", "segment": treated.pk, "weight": "1"}],
            **fields}


def _draft(space, creator):
    workspace, campaign, control, treated = space
    return audience_experiment(workspace, campaign, control, treated, creator=creator)


@pytest.mark.parametrize(("role", "status"), [(Role.MARKETER, 201), (Role.ADMIN, 201), (Role.APPROVER, 403),
                                              (Role.INTEGRATOR, 403)])
def test_create__needs_the_edit_permission(space, as_role, role, status):
    client, user = as_role(role)

    response = client.post(EXPERIMENTS, _body(space), format="json")

    assert response.status_code == status, response.json()
    if status == 201:
        body = response.json()
        assert (body["status"], body["created_by"]) == ("draft", user.pk)
        assert [v["key"] for v in body["variants"]] == ["control", "new"]


def test_create__invalid_arms__answers_400_with_details_by_field(space, as_role):
    client, _ = as_role(Role.MARKETER)
    body = _body(space)
    body["variants"][1]["is_control"] = True

    response = client.post(EXPERIMENTS, body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "variants" in response.json()["error"]["details"]


def test_create__in_another_workspace__answers_404(space, as_role, other_workspace):
    client, _ = as_role(Role.MARKETER)

    response = client.post(EXPERIMENTS, _body(space, workspace=other_workspace.pk), format="json")

    assert response.status_code == 404


def test_retrieve__shows_the_power_analysis_before_launch(space, as_role):
    client, user = as_role(Role.MARKETER)
    experiment = _draft(space, user)
    simulate(space[0], start=today() - 7 * DAY, days=7)

    analysis = client.get(f"{EXPERIMENTS}{experiment.pk}/").json()["power_analysis"]

    assert analysis["unit"] == "impressions" and 0.03 < analysis["baseline"] < 0.07
    assert analysis["sample_per_arm"] > 10_000 and analysis["expected_days"] >= 1


def test_experiments_of_another_workspace__answer_404(space, as_role):
    other = daily_workspace()
    campaign, control, treated = two_arm_campaign(other)
    theirs = audience_experiment(other, campaign, control, treated, creator=people(other)[0])
    client, _ = as_role(Role.ADMIN)

    assert client.get(EXPERIMENTS).json()["count"] == 0
    for path in ("", "results/"):
        assert client.get(f"{EXPERIMENTS}{theirs.pk}/{path}").status_code == 404
    for verb in ("approve", "start", "stop", "deploy"):
        assert client.post(f"{EXPERIMENTS}{theirs.pk}/{verb}/", {}, format="json").status_code == 404


def test_approve__four_eyes_and_the_launch_right(space, as_role):
    creator_client, creator = as_role(Role.ADMIN)
    experiment = _draft(space, creator)
    marketer_client, _ = as_role(Role.MARKETER)
    approver_client, approver = as_role(Role.APPROVER)
    url = f"{EXPERIMENTS}{experiment.pk}/approve/"

    own = creator_client.post(url, {"reason": "mine"}, format="json")
    assert (own.status_code, own.json()["error"]["code"]) == (403, "cannot_approve_own_experiment")
    assert marketer_client.post(url, {}, format="json").status_code == 403

    response = approver_client.post(url, {"reason": "Looks sound"}, format="json")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["approved_by"]) == ("approved", approver.pk)


def test_start_and_stop__by_the_marketer_once_approved(space, as_role):
    client, marketer = as_role(Role.MARKETER)
    experiment = _draft(space, marketer)
    integrator_client, _ = as_role(Role.INTEGRATOR)
    start = f"{EXPERIMENTS}{experiment.pk}/start/"

    assert client.post(start, {}, format="json").status_code == 409  # not approved yet
    approver_client, _ = as_role(Role.APPROVER)
    approver_client.post(f"{EXPERIMENTS}{experiment.pk}/approve/", {}, format="json")
    assert integrator_client.post(start, {}, format="json").status_code == 403
    assert client.post(start, {}, format="json").json()["status"] == "running"

    stopped = client.post(f"{EXPERIMENTS}{experiment.pk}/stop/", {"reason": "Enough"}, format="json").json()
    assert (stopped["status"], stopped["end_reason"]) == ("stopped", "Enough")


def test_update__draft_by_marketer__replaces_the_arms(space, as_role):
    client, marketer = as_role(Role.MARKETER)
    experiment = _draft(space, marketer)
    body = _body(space)

    response = client.patch(f"{EXPERIMENTS}{experiment.pk}/", {"variants": body["variants"], "alpha": "0.01"},
                            format="json")

    assert response.status_code == 200, response.json()
    assert sorted(Experiment.objects.get(pk=experiment.pk).variants.values_list("key", flat=True)) == [
        "control", "new"]


def test_results__numbers_of_every_run_and_the_charts_as_svg(space, as_role):
    client, _integrator = as_role(Role.INTEGRATOR)
    workspace = space[0]
    creator, approver = people(workspace)
    experiment = launch(_draft(space, creator), approver=approver, at=today() - 3 * DAY)
    simulate(workspace, start=today() - 3 * DAY, days=3)  # identical arms: the analysis goes on
    for day in (2, 3):
        experiment_analyse(actor=WORKER, experiment=experiment, now=today() - 3 * DAY + day * DAY)

    body = client.get(f"{EXPERIMENTS}{experiment.pk}/results/").json()

    assert len(body["history"]) == 2 and body["latest"]["id"] == body["history"][-1]["id"]
    assert {v["key"] for v in body["latest"]["variants"]} == {"control", "treated"}
    assert body["charts"]["effects"].startswith("<svg") and "Treated" in body["charts"]["effects"]
    assert body["charts"]["lift_over_time"].startswith("<svg")


def test_deploy__needs_the_decide_right(space, as_role):
    client, marketer = as_role(Role.MARKETER)
    experiment = _draft(space, marketer)

    assert client.post(f"{EXPERIMENTS}{experiment.pk}/deploy/", {}, format="json").status_code == 403
    approver_client, _ = as_role(Role.APPROVER)
    response = approver_client.post(f"{EXPERIMENTS}{experiment.pk}/deploy/", {}, format="json")
    assert response.status_code == 409  # nothing to deploy yet
