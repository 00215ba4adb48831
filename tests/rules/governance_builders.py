"""Approval policies, approvers and pending changes for the governance tests."""

from decimal import Decimal

from accounts.roles import Role
from rules.changes import change_propose
from rules.models import ApprovalPolicy, Change
from tests.factories import MembershipFactory
from tests.rules.facts import NOW, SYSTEM


def permissive_policy(workspace, **fields) -> ApprovalPolicy:
    """Every change auto-applies: for tests of the change pipeline itself, not of approvals."""
    return policy(workspace, auto_apply_max_pct=Decimal("9999"), auto_apply_max_daily_amount=Decimal("999999999"),
                  always_require_approval=[], **fields)


def policy(workspace, **fields) -> ApprovalPolicy:
    return ApprovalPolicy.objects.create(workspace=workspace, **fields)


def approver(workspace, *, level: int = 1, role: str = Role.APPROVER, **fields):
    return MembershipFactory(workspace=workspace, role=role, approval_level=level, **fields).user


def propose_bid(segment, new_bid: str, *, key: str = "test:bid", actor=SYSTEM, now=NOW, **fields) -> Change:
    """A change of the segment's bid to `new_bid`, routed by the workspace's policy."""
    change, _created = change_propose(
        actor=actor, target=segment, field=Change.Field.BID, old_value=f"{segment.bid:.4f}",
        requested_value=new_bid, capped_value=new_bid, cap_report=[], idempotency_key=key, now=now, **fields,
    )
    return change
