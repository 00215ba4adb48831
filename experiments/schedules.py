"""The periodic tasks of the experiments app, kept in the database (django-celery-beat).

Created once, after migrations, and never overwritten (an operator's edit in the admin sticks),
by the same helper as the rules' schedule.
"""

from rules.schedules import create_missing_periodic_tasks

BEAT_TASKS = (
    # (name shown in the admin, task, every N minutes)
    ("Experiments: analyse running experiments", "experiments.tasks.analyse_running_experiments", 15),
    ("Experiments: bandit cycle", "experiments.tasks.rebalance_bandits", 60),
)


def ensure_beat_schedule(*, using: str = "default", **kwargs) -> None:
    """post_migrate receiver: create the periodic tasks that do not exist yet."""
    create_missing_periodic_tasks(BEAT_TASKS, using=using)
