"""Throttles keyed on the credential that calls, for endpoints that take bulk writes."""

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from .permissions import token_of


class MetricPushThrottle(SimpleRateThrottle):
    """Limits metric pushes per API token (per user for sessions), at the `metric_push` rate.

    Keyed on the token rather than the user so that one integrator's runaway job cannot
    starve the other tokens of the same user; revoking the token stops it at once anyway.
    Use it beside the global throttles: `throttle_classes = [*api_settings.DEFAULT_THROTTLE_CLASSES,
    MetricPushThrottle]` or `get_throttles()`.
    """

    scope = "metric_push"

    def get_rate(self):
        # Read at call time, not at import (DRF's default), so that the settings in force apply.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request, view):
        token = token_of(request)
        if token is not None:
            ident = f"token-{token.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}
