"""One error body for the whole API, and the single mapping of domain errors to HTTP.

Every error answers {"error": {"code": ..., "message": ..., "details": ...}}: DRF's own
exceptions (400, 401, 403, 404, 405, 406, 415, 429), Django's (Http404, PermissionDenied,
ValidationError), domain errors (accounts.exceptions.ApplicationError and subclasses),
and, through the URLconf's handler404/handler500, addresses under /api/ that match no route.
"""

import re

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from accounts.exceptions import ApplicationError

API_PATH_PREFIX = "/api/"


def error_body(code: str, message: str, details=None) -> dict:
    return {"error": {"code": code, "message": message, "details": details if details is not None else {}}}


def error_code_for(exc: ApplicationError) -> str:
    """`Conflict` -> "conflict", `CannotApproveOwnChange` -> "cannot_approve_own_change"."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def api_exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        set_rollback()
        return Response(error_body(error_code_for(exc), exc.message, exc.extra), status=exc.status)
    exc = _as_drf_exception(exc)
    response = exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: Django answers 500 (handler500 below for /api/).
    response.data = _body_for(exc, response.data)
    return response


def _as_drf_exception(exc):
    if isinstance(exc, DjangoValidationError):
        return drf_exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    if isinstance(exc, Http404):
        return drf_exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return drf_exceptions.PermissionDenied()
    return exc


def _body_for(exc, data) -> dict:
    if isinstance(exc, drf_exceptions.ValidationError):
        details = data if isinstance(data, dict) else {"non_field_errors": data}
        return error_body("invalid", "The request was not valid.", details)
    detail = data.get("detail") if isinstance(data, dict) else None
    if detail is None:  # an APIException raised with a structured detail
        return error_body(exc.default_code, str(exc.default_detail), data)
    details = {"retry_after_seconds": exc.wait} if isinstance(exc, drf_exceptions.Throttled) and exc.wait else {}
    return error_body(str(getattr(detail, "code", None) or exc.default_code), str(detail), details)


def is_api_request(request) -> bool:
    return request.path.startswith(API_PATH_PREFIX)


def not_found_view(request, exception=None):
    """handler404: JSON under /api/, Django's page elsewhere."""
    if is_api_request(request):
        return JsonResponse(error_body("not_found", "No API endpoint at this address."), status=404)
    return defaults.page_not_found(request, exception)


def server_error_view(request):
    """handler500: JSON under /api/ (no internals leak), Django's page elsewhere."""
    if is_api_request(request):
        return JsonResponse(error_body("server_error", "An unexpected error occurred; it has been logged."), status=500)
    return defaults.server_error(request)
