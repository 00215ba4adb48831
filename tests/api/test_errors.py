"""The one error body, {"error": {"code", "message", "details"}}, for every kind of failure."""

import json

import pytest
from django.core.cache import cache
from rest_framework.throttling import UserRateThrottle

from accounts.roles import Role

pytestmark = pytest.mark.django_db


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def test_error__unauthenticated__401_with_www_authenticate(api_client):
    response = api_client.get("/api/v1/workspaces/")
    _error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Bearer"


def test_error__validation__400_with_field_details(workspace, admin_user, client_for):
    response = client_for(admin_user).patch(f"/api/v1/workspaces/{workspace.pk}/", {"currency": "EURO"})
    error = _error(response, 400, "invalid")
    assert list(error["details"]) == ["currency"]


def test_error__malformed_json__400_parse_error(admin_user, client_for):
    response = client_for(admin_user).generic(
        "POST", "/api/v1/memberships/", "{not json", content_type="application/json"
    )
    _error(response, 400, "parse_error")


def test_error__role_refusal__403(workspace, member, client_for):
    response = client_for(member(Role.MARKETER)).patch(f"/api/v1/workspaces/{workspace.pk}/", {"name": "X"})
    _error(response, 403, "permission_denied")


def test_error__another_workspaces_object__404(other_workspace, admin_user, client_for):
    _error(client_for(admin_user).get(f"/api/v1/workspaces/{other_workspace.pk}/"), 404, "not_found")


def test_error__no_such_route_under_api__404_in_the_same_shape(admin_user, client_for):
    _error(client_for(admin_user).get("/api/v1/no-such-thing/"), 404, "not_found")


def test_error__outside_api__keeps_django_html_404(client, db):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_error__method_not_allowed__405(workspace, admin_user, client_for):
    response = client_for(admin_user).delete(f"/api/v1/workspaces/{workspace.pk}/")
    error = _error(response, 405, "method_not_allowed")
    assert "DELETE" in error["message"]


def test_error__domain_conflict__409(admin_user, client_for):
    from accounts.models import Membership

    own = Membership.objects.get(user=admin_user)
    _error(client_for(admin_user).delete(f"/api/v1/memberships/{own.pk}/"), 409, "conflict")


@pytest.fixture
def two_requests_a_minute(monkeypatch):
    # DRF binds the rates to the throttle class at import, so the class is where to lower them.
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "2/min"})
    cache.clear()
    yield
    cache.clear()


def test_error__throttled_by_the_global_user_rate__429_with_retry_after(admin_user, client_for,
                                                                       two_requests_a_minute):
    client = client_for(admin_user)

    statuses = [client.get("/api/v1/me/").status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    response = client.get("/api/v1/workspaces/")
    error = _error(response, 429, "throttled")
    assert int(response["Retry-After"]) > 0
    assert error["details"]["retry_after_seconds"] > 0


def test_error__unexpected_failure_under_api__500_without_internals(rf):
    from rulesplatform.api.exceptions import server_error_view

    response = server_error_view(rf.get("/api/v1/workspaces/"))

    assert response.status_code == 500
    assert json.loads(response.content)["error"]["code"] == "server_error"
