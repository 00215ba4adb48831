"""Errors of the audit app a person should read.

`audit` imports no app of ours, so it cannot raise `accounts.exceptions.ApplicationError`;
callers (the API, the admin) turn a `RestoreError` into their own error body, using
`status` and `code`.
"""


class RestoreError(Exception):
    def __init__(self, message: str, *, code: str = "restore_refused", status: int = 400, extra=None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.extra = extra or {}
