"""The id of the request (or task) being served, so audit events can be correlated."""

from contextvars import ContextVar

current_request_id: ContextVar[str] = ContextVar("current_request_id", default="")
