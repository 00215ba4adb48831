"""Celery application (cookiecutter-django layout): settings under the CELERY_ namespace."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rulesplatform.settings")

app = Celery("rulesplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

