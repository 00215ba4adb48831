"""The approval queue: what waits for me (levels I decide, never my own changes), with why.

Read by the admin's queue page and by GET /api/v1/approvals/queue/. Each item carries what a
decision needs: the evaluation's numbers for the target (values, baselines, statistics),
requested vs capped value and the cap report, the policy's checks, a risk grade, the age,
the SLA and expiry left, and whether the caller may approve it or only escalate it.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Q, QuerySet

from accounts.models import ApiToken, Workspace
from accounts.selectors import memberships_of

from .binding import content_hash
from .changes import AWAITING_DECISION
from .decisions import evaluation_segment_rows
from .models import ApprovalPolicy, Change
from .policy import EVERY_LEVEL, Authority, ChangeSize, change_size, membership_authority, policy_for_change

RISK_HIGH_RATIO = Decimal(2)


@dataclass(frozen=True)
class QueueItem:
    change: Change
    content_hash: str
    explanation: dict | None
    evaluation_summary: str
    size: ChangeSize
    risk: str
    age: timedelta
    sla_left: timedelta | None
    expires_in: timedelta | None
    limit_problems: list[str]
    may_escalate: bool

    @property
    def may_approve(self) -> bool:
        return not self.limit_problems

    @property
    def explanation_rows(self) -> list[dict]:
        """The shape of admin/rules/_decisions.html."""
        return [{"decision": self.explanation}] if self.explanation else []


def authorities_of(user, *, token: ApiToken | None = None) -> dict[int, Authority]:
    """Workspace id -> what the caller decides there, for every workspace where they decide anything."""
    if user.is_superuser and token is None:
        # Platform operators decide everywhere, as they do everything in the admin.
        return {pk: Authority(EVERY_LEVEL) for pk in Workspace.objects.values_list("pk", flat=True)}
    found = {m.workspace_id: membership_authority(m) for m in memberships_of(user, token=token)}
    return {workspace_id: authority for workspace_id, authority in found.items() if authority.level}


def changes_awaiting(user, *, token: ApiToken | None = None) -> QuerySet[Change]:
    """What waits for this person, as one query: changes awaiting a decision at a level they decide,
    neither requested by them nor made by their rule."""
    return _awaiting(user, authorities_of(user, token=token))


def _awaiting(user, authorities: dict[int, Authority]) -> QuerySet[Change]:
    decidable = Q(pk__in=[])
    for workspace_id, authority in authorities.items():
        decidable |= Q(workspace_id=workspace_id, approval_level__lte=authority.level)
    return (Change.objects.filter(decidable, status__in=AWAITING_DECISION)
            .exclude(requested_by=user).exclude(rule__owner=user))


def approval_queue(*, user, now: datetime, token: ApiToken | None = None) -> list[QueueItem]:
    authorities = authorities_of(user, token=token)
    if not authorities:
        return []
    changes = (
        _awaiting(user, authorities)
        .select_related("segment__campaign", "creative__campaign", "campaign", "rule", "evaluation", "requested_by")
        .order_by("sla_due_at", "created_at", "pk")
    )
    return [queue_item(change, authority=authorities[change.workspace_id], now=now) for change in changes]


def queue_item(change: Change, *, authority: Authority, now: datetime) -> QueueItem:
    policy = policy_for_change(change)
    size = change_size(change)
    return QueueItem(
        change=change,
        content_hash=content_hash(change),
        explanation=_explanation(change),
        evaluation_summary=change.evaluation.summary if change.evaluation_id else "",
        size=size,
        risk=risk_of(change, size, policy),
        age=now - change.created_at,
        sla_left=change.sla_due_at - now if change.sla_due_at else None,
        expires_in=change.expires_at - now if change.expires_at else None,
        limit_problems=authority.limits_exceeded(size),
        may_escalate=change.approval_level < policy.max_level,
    )


def _explanation(change: Change) -> dict | None:
    """The evaluation's record for the change's segment: decision, reason, every trigger's numbers."""
    if not change.evaluation_id or not change.segment_id:
        return None
    return next(iter(evaluation_segment_rows(change.evaluation, [change.segment_id])), None)


def risk_of(change: Change, size: ChangeSize, policy: ApprovalPolicy) -> str:
    """high: a kind the policy always gates, or twice its auto-apply limit or more; medium: above a
    limit; low: within every limit (e.g. waiting only for the number of approvers)."""
    failed = {entry["check"] for entry in change.policy_report if not entry.get("held")}
    if "gates" in failed:
        return "high"
    ratios = [_ratio(size.pct, policy.auto_apply_max_pct), _ratio(size.amount, policy.auto_apply_max_daily_amount)]
    if max(ratios) >= RISK_HIGH_RATIO:
        return "high"
    return "medium" if failed else "low"


def _ratio(value: Decimal, limit: Decimal) -> Decimal:
    if not value:
        return Decimal(0)
    return value / limit if limit else RISK_HIGH_RATIO
