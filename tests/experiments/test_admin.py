"""The experiments admin: arms inline, services behind every save, power analysis, buttons by role, results."""

import pytest
from django.test import Client
from django.urls import reverse

from accounts.roles import Role
from audit.models import AuditEvent
from experiments.models import Experiment
from experiments.services import experiment_analyse
from tests.experiments.builders import (
    DAY,
    WORKER,
    audience_experiment,
    daily_workspace,
    launch,
    simulate,
    today,
    two_arm_campaign,
)
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:experiments_experiment_add")


@pytest.fixture
def space():
    workspace = daily_workspace()
    return workspace, *two_arm_campaign(workspace)


@pytest.fixture
def browser(space):
    def login(role):
        user = MembershipFactory(workspace=space[0], role=role).user
        client = Client()
        client.force_login(user)
        return client, user

    return login


def _form(space, arms=None, **fields):
    workspace, campaign, control, treated = space
    data = {"workspace": workspace.pk, "campaign": campaign.pk, "name": "Desktop audience", "hypothesis": "",
            "kind": "audience", "primary_metric": "ctr", "guardrails": "[]", "minimum_detectable_effect_pct": "10",
            "alpha": "0.05", "power": "0.8", "method": "sequential", "min_sample_per_arm": 1000,
            "bandit_floor_pct": "10", **fields}
    arms = arms if arms is not None else [
        {"key": "control", "name": "Control", "is_control": "on", "segment": control.pk},
        {"key": "treated", "name": "Treated", "segment": treated.pk},
    ]
    data.update({"variants-TOTAL_FORMS": len(arms), "variants-INITIAL_FORMS": 0, "variants-MIN_NUM_FORMS": 2,
                 "variants-MAX_NUM_FORMS": 1000})
    for i, arm in enumerate(arms):
        data.update({f"variants-{i}-{name}": value for name, value in {"weight": "1", **arm}.items()})
    return data


def test_add__valid__creates_the_experiment_with_its_arms_through_the_service(space, browser):
    client, marketer = browser(Role.MARKETER)

    response = client.post(ADD_URL, _form(space))

    assert response.status_code == 302, response.context["errors"] if response.context else response
    experiment = Experiment.objects.get()
    assert (experiment.status, experiment.created_by, experiment.variants.count()) == ("draft", marketer, 2)
    assert AuditEvent.objects.filter(action="experiment.create", subject_id=str(experiment.pk)).exists()


def test_add__two_controls__shows_the_problem_and_saves_nothing(space, browser):
    client, _ = browser(Role.MARKETER)
    workspace, campaign, control, treated = space
    arms = [{"key": "a", "name": "A", "is_control": "on", "segment": control.pk},
            {"key": "b", "name": "B", "is_control": "on", "segment": treated.pk}]

    response = client.post(ADD_URL, _form(space, arms))

    assert response.status_code == 200
    assert "Exactly one arm is the control." in response.content.decode()
    assert not Experiment.objects.exists()


def test_change_page__shows_the_power_analysis_and_the_approve_button_to_an_approver(space, browser):
    workspace, campaign, control, treated = space
    client, marketer = browser(Role.MARKETER)
    experiment = audience_experiment(workspace, campaign, control, treated, creator=marketer)
    simulate(workspace, start=today() - 7 * DAY, days=7)
    approver_client, _ = browser(Role.APPROVER)
    url = reverse("admin:experiments_experiment_change", args=[experiment.pk])

    marketer_page = client.get(url).content.decode()
    approver_page = approver_client.get(url).content.decode()

    assert "Sample per arm" in marketer_page and "impressions" in marketer_page
    assert "Approve launch" not in marketer_page
    assert "Approve launch" in approver_page


def test_approve_button__by_the_creator__shows_the_refusal(space, browser):
    workspace, campaign, control, treated = space
    client, admin_user = browser(Role.ADMIN)
    experiment = audience_experiment(workspace, campaign, control, treated, creator=admin_user)

    response = client.post(reverse("admin:experiments_experiment_tool", args=[experiment.pk, "approve"]),
                           follow=True)

    assert "someone else must approve its launch" in response.content.decode()
    assert Experiment.objects.get(pk=experiment.pk).status == "draft"


def test_approve_button__by_an_approver__approves(space, browser):
    workspace, campaign, control, treated = space
    _client, marketer = browser(Role.MARKETER)
    experiment = audience_experiment(workspace, campaign, control, treated, creator=marketer)
    approver_client, approver = browser(Role.APPROVER)

    approver_client.post(reverse("admin:experiments_experiment_tool", args=[experiment.pk, "approve"]))

    experiment.refresh_from_db()
    assert (experiment.status, experiment.approved_by) == ("approved", approver)


def test_results_page__renders_the_charts_and_every_run(space, browser):
    workspace, campaign, control, treated = space
    client, marketer = browser(Role.MARKETER)
    _approver_client, approver = browser(Role.APPROVER)
    experiment = audience_experiment(workspace, campaign, control, treated, creator=marketer)
    launch(experiment, approver=approver, at=today() - 2 * DAY)
    simulate(workspace, start=today() - 2 * DAY, days=2)
    experiment_analyse(actor=WORKER, experiment=experiment, now=today())

    page = client.get(reverse("admin:experiments_experiment_results", args=[experiment.pk])).content.decode()

    assert page.count("<div class=\"chart\"><svg") == 2
    assert 'id="arms"' in page and 'id="runs"' in page and "Treated" in page


def test_results_page__another_workspace__answers_404(space, browser):
    other = daily_workspace()
    campaign, control, treated = two_arm_campaign(other)
    theirs = audience_experiment(other, campaign, control, treated,
                                 creator=MembershipFactory(workspace=other, role=Role.MARKETER).user)
    client, _ = browser(Role.ADMIN)

    assert client.get(reverse("admin:experiments_experiment_results", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("admin:experiments_experiment_change", args=[theirs.pk])).status_code == 302


def test_arm_pickers__search_offers_only_segments_of_the_users_workspaces(space, browser):
    workspace, campaign, control, treated = space
    _other_campaign, foreign_a, foreign_b = two_arm_campaign(daily_workspace())
    client, _ = browser(Role.MARKETER)

    response = client.get(reverse("admin:autocomplete"), {
        "app_label": "experiments", "model_name": "variant", "field_name": "segment", "term": "Arm"})

    assert response.status_code == 200
    assert {int(item["id"]) for item in response.json()["results"]} == {control.pk, treated.pk}


def test_add__arm_on_another_workspaces_segment__is_refused_by_the_picker(space, browser):
    workspace, campaign, control, treated = space
    _other_campaign, foreign, _ = two_arm_campaign(daily_workspace())
    client, _ = browser(Role.MARKETER)
    arms = [{"key": "control", "name": "Control", "is_control": "on", "segment": control.pk},
            {"key": "treated", "name": "Treated", "segment": foreign.pk}]

    response = client.post(ADD_URL, _form(space, arms))

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Experiment.objects.exists()
