"""Experiments keep versions with their arms, and an old version can be restored (as a new version)."""

from decimal import Decimal

import pytest

from accounts.roles import Role
from audit.actors import Actor
from audit.exceptions import RestoreError
from audit.rollback import version_restore
from audit.selectors import object_history, version_children, version_fields
from experiments.models import Experiment
from experiments.services import experiment_update
from tests.experiments.builders import (
    arms,
    launch,
    today,
    two_arms,
)
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def edited():
    workspace, marketer, approver, _campaign, control, treated = setup = two_arms()
    experiment = setup.draft()
    variants = arms(control, treated)
    variants[1]["weight"] = Decimal("3")
    experiment_update(actor=Actor.for_user(marketer), experiment=experiment, variants=variants,
                      minimum_detectable_effect_pct=Decimal("5"), reason="Smaller effect, more traffic to B")
    admin = MembershipFactory(workspace=workspace, role=Role.ADMIN).user
    return experiment, admin, approver


def test_versions__hold_the_settings_and_the_arms(edited):
    experiment, *_ = edited
    newest, first = object_history(Experiment, experiment.pk, workspace_ids=None)

    assert version_fields(first)["minimum_detectable_effect_pct"] == Decimal("10")
    assert version_children(newest)["variants"]["treated"]["weight"] == Decimal("3")
    assert version_children(first)["variants"]["treated"]["weight"] == Decimal("1")
    assert "status" not in version_fields(first)  # life cycle is state, not configuration


def test_restore__old_version__brings_back_settings_and_arms_as_a_new_version(edited):
    experiment, admin, _approver = edited
    first = list(object_history(Experiment, experiment.pk, workspace_ids=None))[-1]

    version_restore(actor=Actor.for_user(admin), version=first, reason="Back to the plan")

    experiment.refresh_from_db()
    assert experiment.minimum_detectable_effect_pct == Decimal("10")
    assert experiment.variants.get(key="treated").weight == Decimal("1")
    assert object_history(Experiment, experiment.pk, workspace_ids=None).count() == 3


def test_restore__running_experiment__is_refused(edited):
    experiment, admin, approver = edited
    launch(experiment, approver=approver, at=today())
    first = list(object_history(Experiment, experiment.pk, workspace_ids=None))[-1]

    with pytest.raises(RestoreError, match="running experiment cannot be edited"):
        version_restore(actor=Actor.for_user(admin), version=first, reason="Too late")
