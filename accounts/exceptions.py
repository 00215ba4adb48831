"""Domain errors, independent of DRF; mapped to HTTP once, in rulesplatform.api.exceptions."""


class ApplicationError(Exception):
    """Base of every error a user should read. `extra` carries structured details."""

    status = 400

    def __init__(self, message: str, *, extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class PermissionDenied(ApplicationError):
    status = 403


class NotFound(ApplicationError):
    status = 404


class Conflict(ApplicationError):
    status = 409
