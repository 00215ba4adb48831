"""Errors of the campaigns app; the API maps them to HTTP once (rulesplatform.api.exceptions)."""

from accounts.exceptions import ApplicationError, Conflict


class BatchRejected(ApplicationError):
    """A metrics batch failed validation; nothing of it was written.

    `errors` lists `{"row": i, "field": f, "reason": r}` (row = 0-based position in the
    batch), capped at `MAX_REPORTED_ERRORS`; `error_count` is the total found.
    """

    status = 400

    def __init__(self, message: str, *, errors: list[dict], error_count: int | None = None):
        self.errors = errors
        self.error_count = len(errors) if error_count is None else error_count
        super().__init__(
            message,
            extra={
                "errors": errors,
                "error_count": self.error_count,
                "errors_truncated": self.error_count > len(errors),
            },
        )


class IdempotencyKeyReused(Conflict):
    """The Idempotency-Key was already used for a different payload in this workspace."""
