"""Reads the caps need: applied changes of targets, a rule's recent actions, budgets per channel.

Each is one query for a whole evaluation (never one per target), and each returns plain
values for the pure functions of `rules.caps`.
"""

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, Q, Sum

from campaigns.models import Campaign, DeliveryStatus, Segment
from rulesplatform.id_arrays import id_in

from .caps import ACTIONS_DAY, AppliedStep
from .models import Change
from .targets import parse_value


def applied_steps(*, target_type: str, target_ids: Iterable[int], field: str,
                  since: datetime) -> dict[int, list[AppliedStep]]:
    """Applied changes of one field of these targets after `since`, by target id, oldest first."""
    column = f"{target_type}_id"
    rows = (
        Change.objects.filter(id_in(column, target_ids), field=field, status=Change.Status.APPLIED,
                              applied_at__gt=since)
        .order_by("applied_at", "id")
        .values_list(column, "applied_at", "old_value", "capped_value")
    )
    steps: dict[int, list[AppliedStep]] = defaultdict(list)
    for target_id, applied_at, old_value, new_value in rows:
        steps[target_id].append(AppliedStep(applied_at, parse_value(field, old_value), parse_value(field, new_value)))
    return steps


def rules_actions_in_day(*, rule_ids: Iterable[int], now: datetime) -> dict[int, int]:
    """Applied actions of each rule in the 24 hours before `now`, by rule id (rules with none left out);
    a reallocation batch is one action."""
    rows = (
        Change.objects.filter(rule_id__in=list(rule_ids), status=Change.Status.APPLIED,
                              applied_at__gt=now - ACTIONS_DAY, applied_at__lte=now)
        .values("rule_id")
        .annotate(single=Count("id", filter=Q(batch_id="")),
                  batches=Count("batch_id", filter=~Q(batch_id=""), distinct=True))
    )
    return {row["rule_id"]: row["single"] + row["batches"] for row in rows}


def daily_budget_by_channel(*, workspace_id: int, target_type: str) -> dict[str, Decimal]:
    """Daily budgets per channel: of segments (or of campaigns, for campaign targets).

    Only what can spend counts: archived segments and campaigns are left out; paused ones
    stay in, since resuming them needs no budget change.
    """
    return daily_budgets_by_channel(workspace_ids=[workspace_id], target_type=target_type)[workspace_id]


def daily_budgets_by_channel(*, workspace_ids: Iterable[int], target_type: str) -> dict[int, dict[str, Decimal]]:
    """`daily_budget_by_channel` of several workspaces in one query, by workspace id."""
    workspace_ids = list(workspace_ids)
    if target_type == "campaign":
        rows = (Campaign.objects.filter(workspace_id__in=workspace_ids).exclude(status=DeliveryStatus.ARCHIVED)
                .values_list("workspace_id", "channel").annotate(total=Sum("daily_budget")))
    else:
        rows = (Segment.objects.filter(campaign__workspace_id__in=workspace_ids)
                .exclude(status=DeliveryStatus.ARCHIVED).exclude(campaign__status=DeliveryStatus.ARCHIVED)
                .values_list("campaign__workspace_id", "campaign__channel").annotate(total=Sum("daily_budget")))
    totals: dict[int, dict[str, Decimal]] = {pk: {} for pk in workspace_ids}
    for workspace_id, channel, total in rows:
        totals[workspace_id][channel] = total or Decimal(0)
    return totals


def counts_in_channel_totals(target) -> bool:
    """Whether the target's daily budget is in `daily_budget_by_channel` (it can spend)."""
    campaign = target if isinstance(target, Campaign) else target.campaign
    return DeliveryStatus.ARCHIVED not in {target.status, campaign.status}
