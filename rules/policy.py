"""The approval policy: its writes (workspace admins), what it says about a change, and what an
approver may decide.

Routing: a change (or a reallocation batch, judged as one) applies by itself when every check
of its policy holds, and otherwise waits for approval at level 1:
  gates         its kind is not one the policy always sends to approval (pausing a campaign,
                any reallocation, any manual change, ...);
  max_pct       it moves its value by at most `auto_apply_max_pct` %;
  daily_amount  the daily budget it moves, added to what auto-applied changes moved in the
                workspace in the last 24 hours, stays within `auto_apply_max_daily_amount`.
Every check is recorded on the change (`policy_report`), like the caps' report.

Sizes: a bid or budget change's size is |new - old| / old in %; its amount is the daily budget
it moves (bids move a price, not a budget: amount 0). Status and rotation changes have no size:
the policy governs them by their kind (the gates). A batch's size is its largest step and the
budget it moves from one side to the other.

Approvers decide the levels up to their membership's `approval_level` (workspace admins and
platform operators: every level) and changes within their `approval_limit_pct` and
`approval_limit_amount` (blank: no limit).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Q

from accounts.models import ApiToken, Membership, Workspace
from accounts.roles import Perm, Role
from accounts.selectors import membership_in
from accounts.services import locked_update, refuse_unknown_fields, require_perm, snapshot
from audit.actors import Actor
from audit.services import audit_record
from campaigns.models import Campaign, DeliveryStatus

from .models import Approval, ApprovalPolicy, Change
from .targets import is_numeric, parse_value

HUNDRED = Decimal(100)
Gate = ApprovalPolicy.Gate
# Workspace admins and operators decide at every level, however many a policy defines.
EVERY_LEVEL = 10_000
POLICY_FIELDS = ("auto_apply_max_pct", "auto_apply_max_daily_amount", "always_require_approval",
                 "level_sla_minutes", "approvals_required", "pending_expiry_minutes")


# --- writes --------------------------------------------------------------------------------------

@transaction.atomic
def approval_policy_create(*, actor: Actor, workspace: Workspace, campaign: Campaign | None = None,
                           **fields) -> ApprovalPolicy:
    """The workspace's policy (campaign None), or a campaign's, which replaces it for that campaign."""
    require_perm(actor, Perm.MANAGE_WORKSPACE, workspace.pk)
    refuse_unknown_fields(fields, POLICY_FIELDS)
    policy = ApprovalPolicy(workspace=workspace, campaign=campaign, **fields)
    policy.full_clean()
    policy.save()
    audit_record(actor=actor, action="approval_policy.create", subject=policy, after=snapshot(policy))
    return policy


@transaction.atomic
def approval_policy_update(*, actor: Actor, policy: ApprovalPolicy, reason: str = "", **fields) -> ApprovalPolicy:
    """Applies to changes routed from now on; changes already waiting keep their level and deadlines."""
    require_perm(actor, Perm.MANAGE_WORKSPACE, policy.workspace_id)
    refuse_unknown_fields(fields, POLICY_FIELDS)
    policy, before = locked_update(policy, fields)
    audit_record(actor=actor, action="approval_policy.update", subject=policy, before=before,
                 after=snapshot(policy), reason=reason)
    return policy


@transaction.atomic
def approval_policy_delete(*, actor: Actor, policy: ApprovalPolicy, reason: str = "") -> None:
    """Back to the workspace's policy (for a campaign's), or to the defaults."""
    require_perm(actor, Perm.MANAGE_WORKSPACE, policy.workspace_id)
    audit_record(actor=actor, action="approval_policy.delete", subject=policy, before=snapshot(policy),
                 reason=reason)
    policy.delete()


# --- reads ---------------------------------------------------------------------------------------


def policy_for(*, workspace_id: int, campaign_id: int | None) -> ApprovalPolicy:
    """The campaign's policy, else the workspace's, else the defaults (an unsaved policy)."""
    found = ApprovalPolicy.objects.filter(Q(campaign__isnull=True) | Q(campaign_id=campaign_id),
                                          workspace_id=workspace_id)
    return PolicyBook(found).policy_for(workspace_id=workspace_id, campaign_id=campaign_id)


class PolicyBook:
    """The policies of some workspaces, read once, answering `policy_for` from memory."""

    def __init__(self, policies):
        self._found = {(p.workspace_id, p.campaign_id): p for p in policies}

    @classmethod
    def of(cls, workspace_ids) -> "PolicyBook":
        return cls(ApprovalPolicy.objects.filter(workspace_id__in=list(workspace_ids)))

    def policy_for(self, *, workspace_id: int, campaign_id: int | None) -> ApprovalPolicy:
        found = self._found
        return (found.get((workspace_id, campaign_id)) or found.get((workspace_id, None))
                or ApprovalPolicy(workspace_id=workspace_id))


def policy_for_change(change: Change) -> ApprovalPolicy:
    return policy_for(workspace_id=change.workspace_id, campaign_id=campaign_id_of(change))


def campaign_id_of(change: Change) -> int:
    if change.campaign_id is not None:
        return change.campaign_id
    return (change.segment or change.creative).campaign_id


# --- sizes ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChangeSize:
    pct: Decimal
    amount: Decimal

    def describe(self) -> str:
        return f"{self.pct.quantize(Decimal('0.01'))}% / {self.amount.quantize(Decimal('0.01'))} a day"


def change_size(change: Change) -> ChangeSize:
    if not is_numeric(change.field):
        return ChangeSize(Decimal(0), Decimal(0))
    old, new = parse_value(change.field, change.old_value), parse_value(change.field, change.capped_value)
    step = abs(new - old)
    pct = step / old * HUNDRED if old else (HUNDRED if step else Decimal(0))
    amount = step if change.field == Change.Field.DAILY_BUDGET else Decimal(0)
    return ChangeSize(pct, amount)


def group_size(changes: Sequence[Change]) -> ChangeSize:
    """A batch moves budget from some targets to others: its amount is what crosses over once."""
    sizes = [change_size(c) for c in changes]
    raised = sum((s.amount for c, s in zip(changes, sizes, strict=True) if _raises(c)), Decimal(0))
    lowered = sum((s.amount for c, s in zip(changes, sizes, strict=True) if not _raises(c)), Decimal(0))
    return ChangeSize(max((s.pct for s in sizes), default=Decimal(0)), max(raised, lowered))


def _raises(change: Change) -> bool:
    return is_numeric(change.field) and parse_value(change.field, change.capped_value) > parse_value(
        change.field, change.old_value)


def change_gates(change: Change) -> set[str]:
    """The policy kinds a change belongs to (see ApprovalPolicy.Gate)."""
    gates = set()
    if change.field == Change.Field.STATUS:
        if change.capped_value == DeliveryStatus.PAUSED:
            gates.add({"segment": Gate.PAUSE_SEGMENT, "creative": Gate.PAUSE_CREATIVE}.get(
                _target_kind(change), Gate.PAUSE_CAMPAIGN))
        elif change.capped_value == DeliveryStatus.ACTIVE:
            gates.add(Gate.RESUME)
    if change.batch_id:
        gates.add(Gate.REALLOCATION)
    if change.kind == Change.Kind.MANUAL:
        gates.add(Gate.MANUAL)
    return gates


def _target_kind(change: Change) -> str:
    return "segment" if change.segment_id else "creative" if change.creative_id else "campaign"


# --- routing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Routing:
    auto: bool
    report: list[dict]
    size: ChangeSize


def _check(check: str, limit: str, value: str, held: bool, detail: str = "") -> dict:
    return {"check": check, "limit": limit, "value": value, "held": held, "detail": detail}


def route(policy: ApprovalPolicy, changes: Sequence[Change], *, auto_amount_in_day: Decimal) -> Routing:
    """Auto-apply, or wait for approval: every check of the policy, on a change or a batch as one."""
    size = group_size(changes)
    if all(c.kind == Change.Kind.ROLLBACK for c in changes):
        # A rollback restores the value the target held before, and only those with the rollback
        # right may ask for it: the policy does not hold it up.
        return Routing(True, [_check("rollback", "—", "restores an earlier value", True)], size)
    gates = sorted(set().union(*(change_gates(c) for c in changes)) & set(policy.always_require_approval))
    budget_after = auto_amount_in_day + size.amount
    report = [
        _check("gates", ", ".join(policy.always_require_approval) or "—", ", ".join(gates) or "—", not gates,
               f"{', '.join(Gate(g).label.lower() for g in gates)} always needs approval" if gates else ""),
        _check("max_pct", f"{policy.auto_apply_max_pct}%", f"{size.pct.quantize(Decimal('0.01'))}%",
               size.pct <= policy.auto_apply_max_pct),
        _check("daily_amount", f"{policy.auto_apply_max_daily_amount} in 24 h",
               f"{size.amount.quantize(Decimal('0.01'))} (+{auto_amount_in_day.quantize(Decimal('0.01'))} "
               f"auto-applied in 24 h)", size.amount == 0 or budget_after <= policy.auto_apply_max_daily_amount),
    ]
    return Routing(all(entry["held"] for entry in report), report, size)


def auto_applied_amount_in_day(*, workspace_id: int, now: datetime) -> Decimal:
    """Daily budget moved by auto-approved changes applied in the 24 hours before `now`."""
    return auto_applied_amounts_in_day(workspace_ids=[workspace_id], now=now)[workspace_id]


def auto_applied_amounts_in_day(*, workspace_ids, now: datetime) -> dict[int, Decimal]:
    """`auto_applied_amount_in_day` of several workspaces in one query, by workspace id."""
    workspace_ids = list(workspace_ids)
    rows = Change.objects.filter(
        workspace_id__in=workspace_ids, field=Change.Field.DAILY_BUDGET, status=Change.Status.APPLIED,
        applied_at__gt=now - timedelta(days=1), applied_at__lte=now, approvals__decision=Approval.Decision.AUTO,
    ).values_list("workspace_id", "old_value", "capped_value")
    amounts = dict.fromkeys(workspace_ids, Decimal(0))
    for workspace_id, old, new in rows:
        amounts[workspace_id] += applied_amount(old, new)
    return amounts


def applied_amount(old_value: str, new_value: str) -> Decimal:
    """What an applied daily-budget change counts towards the auto-apply daily amount."""
    return abs(Decimal(new_value) - Decimal(old_value))


# --- approvers -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Authority:
    """What one person may decide in one workspace."""

    level: int
    limit_pct: Decimal | None = None
    limit_amount: Decimal | None = None

    def decides_level(self, level: int) -> bool:
        return 0 < level <= self.level

    def limits_exceeded(self, size: ChangeSize) -> list[str]:
        problems = []
        if self.limit_pct is not None and size.pct > self.limit_pct:
            problems.append(f"it moves {size.pct.quantize(Decimal('0.01'))}%, your limit is {self.limit_pct}%")
        if self.limit_amount is not None and size.amount > self.limit_amount:
            problems.append(f"it moves {size.amount.quantize(Decimal('0.01'))} a day, your limit is "
                            f"{self.limit_amount}")
        return problems


NO_AUTHORITY = Authority(level=0)


def authority_of(actor: Actor, workspace_id: int) -> Authority:
    """Workers and the system never decide: approval is a person's act (through the admin or a token)."""
    if actor.kind not in ("user", "token"):
        return NO_AUTHORITY
    token = ApiToken(pk=actor.token_id, workspace_id=_token_workspace(actor)) if actor.kind == "token" else None
    membership = membership_in(actor.user, workspace_id, token=token)
    if membership is None:
        superuser = actor.kind == "user" and actor.user.is_superuser
        return Authority(level=EVERY_LEVEL) if superuser else NO_AUTHORITY
    return membership_authority(membership)


def _token_workspace(actor: Actor) -> int | None:
    return ApiToken.objects.filter(pk=actor.token_id, revoked_at__isnull=True).values_list(
        "workspace_id", flat=True).first()


def membership_authority(membership: Membership) -> Authority:
    if not membership.allows(Perm.DECIDE_CHANGES):
        return NO_AUTHORITY
    level = EVERY_LEVEL if membership.role == Role.ADMIN else membership.approval_level
    return Authority(level, membership.approval_limit_pct, membership.approval_limit_amount)

