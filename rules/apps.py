from django.apps import AppConfig
from django.db.models.signals import post_migrate


class RulesConfig(AppConfig):
    name = "rules"
    verbose_name = "Rules and changes"

    def ready(self):
        from . import receivers
        from .schedules import ensure_beat_schedule

        receivers.connect()
        post_migrate.connect(ensure_beat_schedule, sender=self, dispatch_uid="rules.ensure_beat_schedule")
