"""The periodic tasks of the rules app, kept in the database (django-celery-beat).

They are created once, after migrations, and never overwritten: an operator may change a
schedule or disable a task in the admin (Periodic tasks), and the change sticks.
"""

from django.db import connections
from django_celery_beat.models import IntervalSchedule, PeriodicTask

BEAT_TASKS = (
    # (name shown in the admin, task, every N minutes)
    ("Rules: evaluate due rules", "rules.tasks.evaluate_due_rules", 1),
)
# The approval workflow's clock (rules.approvals): SLA escalation and expiry of waiting changes, and
# the pushes of applied changes whose task was lost (rules.pushes).
GOVERNANCE_BEAT_TASKS = (
    ("Approvals: escalate changes past their SLA", "rules.tasks.escalate_overdue_changes", 1),
    ("Approvals: expire changes waiting too long", "rules.tasks.expire_waiting_changes", 5),
    ("Pushes: send again those whose task was lost", "rules.tasks.resend_lost_pushes", 5),
)


# Housekeeping of the engine's reads: the daily rollups of metric facts (campaigns.rollups).
ROLLUP_BEAT_TASKS = (
    ("Metrics: roll up the days that are over", "rules.tasks.refresh_metric_days", 15),
)


def ensure_beat_schedule(*, using: str = "default", **kwargs) -> None:
    """post_migrate receiver: create the periodic tasks that do not exist yet."""
    create_missing_periodic_tasks(BEAT_TASKS + GOVERNANCE_BEAT_TASKS + ROLLUP_BEAT_TASKS, using=using)


def create_missing_periodic_tasks(beat_tasks, *, using: str = "default") -> None:
    """Create each (name, task, every N minutes) whose name is not in the database yet (other apps use it too)."""
    if PeriodicTask._meta.db_table not in connections[using].introspection.table_names():
        return  # a partial migrate that stopped before django_celery_beat's tables
    for name, task, minutes in beat_tasks:
        if PeriodicTask.objects.using(using).filter(name=name).exists():
            continue
        every = (IntervalSchedule.objects.using(using).filter(every=minutes, period=IntervalSchedule.MINUTES).first()
                 or IntervalSchedule.objects.using(using).create(every=minutes, period=IntervalSchedule.MINUTES))
        PeriodicTask.objects.using(using).get_or_create(name=name, defaults={"task": task, "interval": every})
