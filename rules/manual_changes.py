"""Changes proposed by people (marketers in the admin or through the API): the same caps, the same policy.

A person's change passes the caps of rules.caps with the workspace's guardrails as limits (a
person has no rule of their own): the target's bounds, the guardrail's largest step, its
hourly window over every applied change of the target (whoever made them), and the channel
share for budget raises. Cooldowns and actions per day are a rule's settings: a person's
change counts towards a rule's, not the other way round. Then the approval policy routes it,
and it applies at once when the policy auto-approves it.
"""

import uuid
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone

from accounts.roles import Perm
from accounts.services import require_perm
from audit.actors import Actor
from campaigns.models import Campaign, Creative, DeliveryStatus, Segment

from .caps import (
    WORKSPACE,
    WORKSPACE_WINDOW_MINUTES,
    CapInputs,
    Capped,
    ChannelBudget,
    Limit,
    Limits,
    WindowLimit,
    cap_change,
)
from .changes import change_propose, changes_apply_approved
from .exceptions import CommentRequired, InvalidManualChange
from .history import applied_steps, daily_budget_by_channel
from .models import Change
from .targets import QUANTUM, Target, Value, bounds, format_value, is_numeric, read_value, target_type

Field = Change.Field
# What a person may set, per kind of target.
MANUAL_FIELDS: dict[type, frozenset[str]] = {
    Segment: frozenset({Field.BID, Field.DAILY_BUDGET, Field.STATUS}),
    Campaign: frozenset({Field.DAILY_BUDGET, Field.STATUS}),
    Creative: frozenset({Field.STATUS, Field.ROTATION_ORDER}),
}
SETTABLE_STATUSES = (DeliveryStatus.ACTIVE, DeliveryStatus.PAUSED)


@transaction.atomic
def change_propose_manual(*, actor: Actor, target: Target, field: str, value, reason: str,
                          now: datetime | None = None, idempotency_key: str = "") -> Change:
    """Propose `field := value` on `target`: capped, routed by the policy, applied if auto-approved.

    `idempotency_key` (optional, e.g. an API client's Idempotency-Key) makes a retry return
    the change recorded the first time.
    """
    require_perm(actor, Perm.PROPOSE_CHANGES, target.workspace_id)
    if not (reason or "").strip():
        raise CommentRequired("Say why you propose this change.")
    if field not in MANUAL_FIELDS[type(target)]:
        raise InvalidManualChange(f"A {target._meta.verbose_name} has no {field} a person may change.",
                                  extra={"field": field, "allowed": sorted(MANUAL_FIELDS[type(target)])})
    now = now or timezone.now()
    target = type(target).objects.select_for_update().get(pk=target.pk)
    current, requested = read_value(target, field), parse_requested(field, value)
    capped = cap_for_person(target=target, field=field, current=current, requested=requested, now=now)
    key = f"manual:{target.workspace_id}:{idempotency_key}" if idempotency_key else f"manual:{uuid.uuid4().hex}"
    change, _created = change_propose(
        actor=actor, target=target, field=field, old_value=format_value(current),
        requested_value=format_value(requested), capped_value=format_value(capped.value), cap_report=capped.report,
        idempotency_key=key, kind=Change.Kind.MANUAL, reason=reason.strip(), now=now,
    )
    return changes_apply_approved(actor=actor, changes=[change], now=now)[0]


def parse_requested(field: str, value) -> Value:
    """A person's value for `field`, refused with a readable message when it cannot be set."""
    if is_numeric(field):
        try:
            number = Decimal(str(value)).quantize(QUANTUM)
        except (InvalidOperation, ValueError):
            raise InvalidManualChange(f"“{value}” is not a number.", extra={"value": str(value)}) from None
        if number < 0:
            raise InvalidManualChange("The value cannot be negative.", extra={"value": str(value)})
        return number
    if field == Field.STATUS:
        if value not in SETTABLE_STATUSES:
            raise InvalidManualChange(f"A status is one of {', '.join(SETTABLE_STATUSES)} (archiving is an edit, "
                                      "not a change).", extra={"value": str(value)})
        return str(value)
    try:
        order = int(value)
    except (TypeError, ValueError):
        raise InvalidManualChange(f"“{value}” is not a whole number.", extra={"value": str(value)}) from None
    if order < 0:
        raise InvalidManualChange("The rotation order cannot be negative.", extra={"value": str(value)})
    return order


def cap_for_person(*, target: Target, field: str, current: Value, requested: Value, now: datetime) -> Capped:
    """The caps of rules.caps, with the workspace's guardrails as the limits."""
    limits = workspace_limits(target.campaign.workspace if not isinstance(target, Campaign) else target.workspace)
    kind = target_type(target)
    since = now - timedelta(minutes=limits.history_minutes)
    floor, ceiling = bounds(target, field) if is_numeric(field) else (None, None)
    inputs = CapInputs(
        now=now,
        history=applied_steps(target_type=kind, target_ids=[target.pk], field=field, since=since).get(target.pk, ()),
        floor=floor, ceiling=ceiling,
        channel=_channel_budget(target, kind) if field == Field.DAILY_BUDGET else None,
    )
    return cap_change(current, requested, limits=limits, inputs=inputs)


def workspace_limits(workspace) -> Limits:
    return Limits(
        max_step=Limit(workspace.guardrail_max_step_pct, WORKSPACE),
        windows=(WindowLimit("workspace_hour", Limit(workspace.guardrail_max_change_per_hour_pct, WORKSPACE),
                             WORKSPACE_WINDOW_MINUTES),),
        cooldown_minutes=0,
        actions_per_day=Limit(workspace.guardrail_max_actions_per_rule_per_day, WORKSPACE),
        channel_share=Limit(workspace.guardrail_max_channel_share_pct, WORKSPACE),
    )


def _channel_budget(target: Target, kind: str) -> ChannelBudget:
    campaign = target if isinstance(target, Campaign) else target.campaign
    totals = daily_budget_by_channel(workspace_id=campaign.workspace_id, target_type=kind)
    return ChannelBudget(campaign.channel, totals.get(campaign.channel, Decimal(0)), sum(totals.values(), Decimal(0)))
