"""One error body for the whole API, and the single mapping of domain errors to HTTP.

Every error answers {"error": {"code": ..., "message": ..., "details": ...}}.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from accounts.exceptions import ApplicationError


def error_body(code: str, message: str, details=None) -> dict:
    return {"error": {"code": code, "message": message, "details": details if details is not None else {}}}


def _domain_error_response(exc: ApplicationError) -> Response:
    code = type(exc).__name__[0].lower() + "".join(
        f"_{c.lower()}" if c.isupper() else c for c in type(exc).__name__[1:]
    )
    return Response(error_body(code, exc.message, exc.extra), status=exc.status)


def api_exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        return _domain_error_response(exc)
    if isinstance(exc, DjangoValidationError):
        exc = drf_exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    elif isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        response.data = error_body("invalid", "The request was not valid.", response.data)
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = error_body(str(code), str(detail))
    if response.status_code == status.HTTP_429_TOO_MANY_REQUESTS and getattr(exc, "wait", None):
        response.data["error"]["details"] = {"retry_after_seconds": exc.wait}
    return response
