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

from .caps import ACTIONS_DAY, AppliedStep
from .models import Change
from .targets import parse_value


def applied_steps(*, target_type: str, target_ids: Iterable[int], field: str,
                  since: datetime) -> dict[int, list[AppliedStep]]:
    """Applied changes of one field of these targets after `since`, by target id, oldest first."""
    column = f"{target_type}_id"
    rows = (
        Change.objects.filter(**{f"{column}__in": list(target_ids)}, field=field, status=Change.Status.APPLIED,
                              applied_at__gt=since)
        .order_by("applied_at", "id")
        .values_list(column, "applied_at", "old_value", "capped_value")
    )
    steps: dict[int, list[AppliedStep]] = defaultdict(list)
    for target_id, applied_at, old_value, new_value in rows:
        steps[target_id].append(AppliedStep(applied_at, parse_value(field, old_value), parse_value(field, new_value)))
    return steps


def rule_actions_in_day(*, rule_id: int, now: datetime) -> int:
    """Applied actions of a rule in the 24 hours before `now`; a reallocation batch is one action."""
    counts = Change.objects.filter(
        rule_id=rule_id, status=Change.Status.APPLIED, applied_at__gt=now - ACTIONS_DAY, applied_at__lte=now
    ).aggregate(
        single=Count("id", filter=Q(batch_id="")),
        batches=Count("batch_id", filter=~Q(batch_id=""), distinct=True),
    )
    return counts["single"] + counts["batches"]


def daily_budget_by_channel(*, workspace_id: int, target_type: str) -> dict[str, Decimal]:
    """Daily budgets per channel: of segments (or of campaigns, for campaign targets).

    Only what can spend counts: archived segments and campaigns are left out; paused ones
    stay in, since resuming them needs no budget change.
    """
    if target_type == "campaign":
        rows = (Campaign.objects.filter(workspace_id=workspace_id).exclude(status=DeliveryStatus.ARCHIVED)
                .values("channel").annotate(total=Sum("daily_budget")))
    else:
        rows = (Segment.objects.filter(campaign__workspace_id=workspace_id)
                .exclude(status=DeliveryStatus.ARCHIVED).exclude(campaign__status=DeliveryStatus.ARCHIVED)
                .values("campaign__channel").annotate(total=Sum("daily_budget")))
    key = "channel" if target_type == "campaign" else "campaign__channel"
    return {row[key]: row["total"] or Decimal(0) for row in rows}
