import pytest
from django.core.cache import cache
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from accounts.roles import Role
from accounts.throttling import MetricPushThrottle

pytestmark = pytest.mark.django_db


class _PushView(APIView):
    throttle_classes = [MetricPushThrottle]

    def post(self, request):
        return Response(status=202)


@pytest.fixture
def push(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                                                          "metric_push": "2/min"}}
    cache.clear()
    view = _PushView.as_view()

    def send(raw_key: str) -> int:
        request = APIRequestFactory().post("/push/", {}, format="json", HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        return view(request).status_code

    yield send
    cache.clear()


def test_metric_push_throttle__counts_per_token(member, issue_token, push):
    integrator = member(Role.INTEGRATOR)
    _, first_key = issue_token(integrator, name="job A")
    _, second_key = issue_token(integrator, name="job B")

    first = [push(first_key) for _ in range(3)]
    second = push(second_key)

    # One runaway job is cut off; the same person's other token still pushes.
    assert first == [202, 202, 429]
    assert second == 202
