"""Celery tasks of the experiments app: thin, taking ids, coping with experiments that ended or vanished.

  analyse_running_experiments   beat (experiments.schedules): one analysis task per running experiment;
  analyse_experiment            analyses one experiment now, keeps the result and acts on it;
  rebalance_bandits             beat: one bandit cycle task per running bandit experiment;
  rebalance_experiment          one bandit cycle.

Both per-experiment services lock the experiment and do nothing once it stopped, and bandit
changes carry idempotency keys per cycle, so a retried or duplicated task is harmless.
"""

from celery import shared_task
from django.db import OperationalError

from audit.actors import Actor

from .bandit import experiment_rebalance
from .models import Experiment
from .selectors import experiments_running
from .services import experiment_analyse

_RETRIED = {"autoretry_for": (OperationalError,), "retry_backoff": True, "retry_backoff_max": 300, "max_retries": 8}


@shared_task(**_RETRIED)
def analyse_running_experiments() -> int:
    ids = list(experiments_running().values_list("pk", flat=True))
    for experiment_id in ids:
        analyse_experiment.delay(experiment_id)
    return len(ids)


@shared_task(**_RETRIED)
def analyse_experiment(experiment_id: int) -> str | None:
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is None:
        return None
    result = experiment_analyse(actor=Actor.worker("analyse_experiment"), experiment=experiment)
    return result.decision if result is not None else None


@shared_task(**_RETRIED)
def rebalance_bandits() -> int:
    ids = list(experiments_running().filter(bandit=True).values_list("pk", flat=True))
    for experiment_id in ids:
        rebalance_experiment.delay(experiment_id)
    return len(ids)


@shared_task(**_RETRIED)
def rebalance_experiment(experiment_id: int) -> int | None:
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is None:
        return None
    cycle = experiment_rebalance(actor=Actor.worker("rebalance_experiment"), experiment=experiment)
    return len(cycle.changes) if cycle is not None else None
