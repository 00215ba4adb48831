"""Reads of rules, their scopes, evaluations and changes."""

from datetime import datetime, timedelta

from django.db.models import Q, QuerySet

from campaigns.holdouts import exclude_held_out
from campaigns.models import Campaign, DeliveryStatus, Segment

from .models import Rule


def rules_due(*, now: datetime) -> QuerySet[Rule]:
    """Active rules never evaluated, or whose last evaluation is at least their interval old."""
    active = Rule.objects.filter(status=Rule.Status.ACTIVE)
    # Intervals are few distinct values: one condition per value keeps the test in SQL,
    # portable across databases (no interval arithmetic on columns).
    intervals = active.order_by().values_list("evaluation_interval_minutes", flat=True).distinct()
    due = Q(last_evaluated_at__isnull=True)
    for minutes in intervals:
        due |= Q(evaluation_interval_minutes=minutes, last_evaluated_at__lte=now - timedelta(minutes=minutes))
    return active.filter(due)


def rules_touching(*, workspace_id: int, campaign_ids: list[int]) -> QuerySet[Rule]:
    """Active rules of the workspace whose scope covers at least one of these campaigns."""
    channels = Campaign.objects.filter(workspace_id=workspace_id, pk__in=campaign_ids).values("channel")
    return (
        Rule.objects.filter(workspace_id=workspace_id, status=Rule.Status.ACTIVE)
        .filter(Q(campaigns__isnull=True) | Q(campaigns__in=campaign_ids))
        .filter(Q(channel="") | Q(channel__in=channels))
        .distinct()
    )


def segments_in_scope(rule: Rule) -> QuerySet[Segment]:
    """The live segments a rule looks at: its workspace, campaigns, channel and segment criteria.

    Segments held out by an experiment (campaigns.holdouts) are never in scope: they measure
    what the adjustments are worth, so no rule may adjust them.
    Reads `rule.campaigns.all()`, so a prefetched rule costs no extra query.
    """
    segments = exclude_held_out(Segment.objects.filter(campaign__workspace_id=rule.workspace_id)).exclude(
        Q(status=DeliveryStatus.ARCHIVED) | Q(campaign__status=DeliveryStatus.ARCHIVED)
    )
    campaign_ids = [c.pk for c in rule.campaigns.all()]
    if campaign_ids:
        segments = segments.filter(campaign_id__in=campaign_ids)
    if rule.channel:
        segments = segments.filter(campaign__channel=rule.channel)
    for key, value in (rule.segment_filter or {}).items():
        lookup = f"criteria__{key}__in" if isinstance(value, list) else f"criteria__{key}"
        segments = segments.filter(**{lookup: value})
    return segments.order_by("pk")


def scope_key(rule: Rule) -> tuple:
    """Rules with equal keys look at the same segments: their aggregates are shared."""
    campaign_ids = tuple(sorted(c.pk for c in rule.campaigns.all()))
    criteria = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in rule.segment_filter.items()))
    return rule.workspace_id, campaign_ids, rule.channel, criteria


def rules_for_engine(*, rule_ids: list[int], only_active: bool) -> QuerySet[Rule]:
    rules = Rule.objects.filter(pk__in=rule_ids).select_related("workspace").prefetch_related("triggers", "campaigns")
    return rules.filter(status=Rule.Status.ACTIVE) if only_active else rules
