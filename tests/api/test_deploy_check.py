"""`manage.py check --deploy` is clean when production is configured by environment values only."""

import os
import secrets
import subprocess
import sys

from django.conf import settings

_CHECK = (
    "import django; django.setup(); from django.core.management import call_command; "
    "call_command('check', '--deploy', '--fail-level', 'WARNING')"
)


def _production_env(var_dir) -> dict:
    # Settings are read at import, so production values need a process of their own.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "API_THROTTLE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="rulesplatform.settings",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        DJANGO_ALLOWED_HOSTS="rules.example.com",
        RULESPLATFORM_VAR_DIR=str(var_dir),
    )
    return env


def test_check_deploy__production_environment__reports_nothing(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _CHECK], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=300,
        env=_production_env(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in (result.stdout + result.stderr)


def test_check_deploy__debug_on__is_caught(tmp_path):
    # The test above could pass vacuously if --deploy checks did not run: prove they bite.
    result = subprocess.run(
        [sys.executable, "-c", _CHECK], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=300,
        env={**_production_env(tmp_path), "DJANGO_DEBUG": "true"},
    )
    assert result.returncode != 0
    assert "security.W018" in result.stderr + result.stdout
