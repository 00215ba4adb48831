"""The OpenAPI schema (whole project) and the Swagger UI page, which must work offline."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings

pytestmark = pytest.mark.django_db

_URL_ATTRIBUTE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def test_schema__whole_project__generates_valid_with_no_warning(tmp_path):
    # A fresh process, as the CLI runs it: warnings from other tests cannot leak in or out.
    out = tmp_path / "schema.yaml"
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", str(out)],
        cwd=settings.BASE_DIR, env={**os.environ, "DJANGO_SETTINGS_MODULE": "rulesplatform.settings_test"},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert "Warning" not in result.stderr
    paths = yaml.safe_load(Path(out).read_text())["paths"]
    assert {"/api/v1/me/", "/api/v1/workspaces/", "/api/v1/tokens/{id}/revoke/"} <= set(paths)


def test_schema__served_without_login__documents_the_error_body(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["components"]["schemas"]["ApiError"]["properties"]["error"]["$ref"].endswith("/ApiErrorDetail")
    revoke = schema["paths"]["/api/v1/tokens/{id}/revoke/"]["post"]["responses"]
    assert {"200", "400", "401", "403", "404", "429"} <= set(revoke)
    assert "ApiToken" in schema["components"]["securitySchemes"]


def test_docs_page__references_only_local_assets_and_they_are_served(client):
    response = client.get("/api/docs/")
    html = response.content.decode()

    assert response.status_code == 200
    assert not re.search(r"https?://|//cdn|unpkg|jsdelivr", html, flags=re.IGNORECASE)
    assets = _URL_ATTRIBUTE.findall(html)
    assert len(assets) >= 3  # stylesheet, Swagger UI bundle, standalone preset
    for url in assets:
        assert url.startswith("/static/"), url
        assert client.get(url).status_code == 200, url
