"""Bandit mode: Thompson sampling re-weights the arms; budget follows, capped and conserved, through the pipeline."""

from decimal import Decimal

import numpy as np
import pytest

from audit.models import AuditEvent
from campaigns.models import Segment
from experiments.bandit import bandit_batch_id, experiment_rebalance
from experiments.models import Experiment
from experiments.services import experiment_analyse
from rules.models import Change
from tests.experiments.builders import (
    DAY,
    WORKER,
    on_arm,
    today,
    two_arms,
)

pytestmark = pytest.mark.django_db
BUDGET = Decimal("2000")


@pytest.fixture
def bandit():
    arms = two_arms(daily_budget=BUDGET)
    experiment = arms.running(days=3, incidents=[on_arm("b", "better", ctr=1.3)], method="bayesian", bandit=True,
                              bandit_floor_pct=Decimal("10"))
    return experiment, arms.control, arms.treated


def test_rebalance__better_arm__gets_the_weight_and_capped_budget_with_the_total_conserved(bandit):
    experiment, control, treated = bandit

    cycle = experiment_rebalance(actor=WORKER, experiment=experiment, now=today(), rng=np.random.default_rng(1))

    assert cycle.weights == {"control": Decimal("0.1000"), "treated": Decimal("0.9000")}  # the floor holds
    assert dict(experiment.variants.values_list("key", "weight")) == cycle.weights
    control.refresh_from_db()
    treated.refresh_from_db()
    # Asked: 2000 -> 400 and 2000 -> 3600; the workspace's 10%/hour guardrail moves 200.
    assert (control.daily_budget, treated.daily_budget) == (Decimal("1800"), Decimal("2200"))
    assert {(c.kind, c.status, c.batch_id) for c in cycle.changes} == {
        (Change.Kind.EXPERIMENT, Change.Status.APPLIED, bandit_batch_id(experiment, today()))}
    assert AuditEvent.objects.filter(action="experiment.reweight").exists()


def test_rebalance__same_cycle_twice__changes_nothing_more(bandit):
    experiment, control, _treated = bandit
    experiment_rebalance(actor=WORKER, experiment=experiment, now=today())

    experiment_rebalance(actor=WORKER, experiment=experiment, now=today())

    assert Change.objects.filter(kind=Change.Kind.EXPERIMENT).count() == 2
    assert Segment.objects.get(pk=control.pk).daily_budget == Decimal("1800")


def test_rebalance__next_cycle_within_the_hour__is_blocked_by_the_caps(bandit):
    experiment, control, _treated = bandit
    experiment_rebalance(actor=WORKER, experiment=experiment, now=today())

    cycle = experiment_rebalance(actor=WORKER, experiment=experiment, now=today() + DAY / 96)  # 15 minutes on

    assert {c.status for c in cycle.changes} == {Change.Status.BLOCKED}
    # The hour's 10% was used by the first cycle: the rolling window leaves nothing to move.
    assert all(any(e["cap"] == "workspace_hour" and e["bound"] for e in c.cap_report) for c in cycle.changes)
    assert Segment.objects.get(pk=control.pk).daily_budget == Decimal("1800")


def test_rebalance__not_a_bandit__does_nothing(bandit):
    experiment, *_ = bandit
    Experiment.objects.filter(pk=experiment.pk).update(bandit=False)

    assert experiment_rebalance(actor=WORKER, experiment=experiment, now=today()) is None


def test_analyse__bandit__skips_the_srm_check_since_its_split_moves(bandit):
    experiment, *_ = bandit
    experiment_rebalance(actor=WORKER, experiment=experiment, now=today())

    result = experiment_analyse(actor=WORKER, experiment=experiment, now=today())

    assert result.srm_p_value is None and not result.srm_blocked
