from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ExperimentsConfig(AppConfig):
    name = "experiments"
    verbose_name = "Experiments"

    def ready(self):
        from .schedules import ensure_beat_schedule

        post_migrate.connect(ensure_beat_schedule, sender=self, dispatch_uid="experiments.ensure_beat_schedule")
