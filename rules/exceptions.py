"""Named refusals of the change life cycle and its approvals.

Each is an `accounts.exceptions.ApplicationError`, so the API answers it once, with its own
code (`cannot_approve_own_change`, `above_approval_limit`, ...) and status, and the admin
shows its message.
"""

from accounts.exceptions import ApplicationError, Conflict, PermissionDenied


class IllegalTransition(Conflict):
    """A change cannot move from its status to the one asked (rules.changes.TRANSITIONS)."""


class ChangeNotDecidable(Conflict):
    """The change is not waiting for a decision (already approved, applied, rejected, expired...)."""


class ChangeContentChanged(Conflict):
    """The change was revised since the caller looked at it: their decision would bind other content."""


class ApprovalNoLongerValid(Conflict):
    """An approved change's content no longer matches what was approved: it cannot be applied."""


class CannotApproveOwnChange(PermissionDenied):
    """Four eyes: whoever requested a change (or owns the rule that made it) cannot approve it."""


class NotAnApprover(PermissionDenied):
    """The caller decides no approval level in this workspace."""


class AboveApprovalLevel(PermissionDenied):
    """The change waits at a level above the ones the caller decides."""


class AboveApprovalLimit(PermissionDenied):
    """The change is larger than the caller may approve; they may escalate it instead."""


class AlreadyApprovedByYou(Conflict):
    """The same person approving the same content twice does not count as a second pair of eyes."""


class TopLevelReached(Conflict):
    """There is no approval level above this one to escalate to."""


class CommentRequired(ApplicationError):
    """Rejecting, escalating and proposing by hand need a written reason."""


class InvalidManualChange(ApplicationError):
    """A manual change names a field its target does not have, or a value the field cannot take."""


class CircuitOpen(ApplicationError):
    """The connector's circuit breaker is open: the push waits for the cool-down."""

    status = 503


class DeliveryFailed(ApplicationError):
    """A push or notification attempt failed; the task retries it with backoff."""

    status = 502
