"""The schedule: beat entries made on migrate (edits survive), and the tasks that analyse and re-weight."""

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from experiments.models import Experiment
from experiments.schedules import BEAT_TASKS, ensure_beat_schedule
from experiments.tasks import analyse_experiment, analyse_running_experiments, rebalance_bandits
from tests.experiments.builders import (
    audience_experiment,
    two_arm_campaign,
    two_arms,
)

pytestmark = pytest.mark.django_db


def test_beat_schedule__is_created_by_migrate_and_an_admin_edit_survives_the_next_migrate():
    for name, task, minutes in BEAT_TASKS:
        periodic = PeriodicTask.objects.get(name=name)
        assert (periodic.task, periodic.interval.every, periodic.interval.period) == (task, minutes, "minutes")
    name = BEAT_TASKS[0][0]
    PeriodicTask.objects.filter(name=name).update(
        enabled=False, interval=IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES))

    ensure_beat_schedule()

    periodic = PeriodicTask.objects.get(name=name)
    assert (periodic.enabled, periodic.interval.every) == (False, 5)
    assert PeriodicTask.objects.filter(name__startswith="Experiments:").count() == len(BEAT_TASKS)


def _running(*, bandit: bool = False):
    return two_arms().running(days=2, bandit=bandit)


def test_analyse_running_experiments__analyses_each_running_experiment(eager_tasks):
    running = _running()
    draft = audience_experiment(running.workspace, *two_arm_campaign(running.workspace),
                                creator=running.created_by, name="Draft")

    assert analyse_running_experiments.delay().get() == 1

    assert running.results.count() == 1 and not draft.results.exists()


def test_analyse_experiment__vanished_or_stopped__does_nothing(eager_tasks):
    assert analyse_experiment.delay(987_654).get() is None
    running = _running()
    Experiment.objects.filter(pk=running.pk).update(status="stopped")

    assert analyse_experiment.delay(running.pk).get() is None
    assert not running.results.exists()


def test_rebalance_bandits__runs_a_cycle_for_bandit_experiments_only(eager_tasks):
    bandit, plain = _running(bandit=True), _running()

    assert rebalance_bandits.delay().get() == 1

    assert bandit.variants.get(key="control").weight != 1
    assert plain.variants.get(key="control").weight == 1
