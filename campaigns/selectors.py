"""Reads of campaigns and metrics. Callers pass the workspace ids they are allowed to see."""

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.db.models import F, Sum

from .metrics import VIRTUAL_DENOMINATORS, DerivedMetric, get_metric
from .models import MetricFact

# group_by -> the MetricFact lookup that names the group.
GROUPINGS = {"segment": "segment_id", "campaign": "campaign_id", "channel": "campaign__channel"}
_MINUTES_PER_DAY = Decimal(1440)


def metric_timeseries(
    *,
    workspace_ids: Iterable[int],
    metric: str,
    group_by: str,
    start: datetime,
    end: datetime,
    campaign_ids: Iterable[int] | None = None,
    segment_ids: Iterable[int] | None = None,
) -> list[dict]:
    """One point per (group, bucket) in [start, end): summed numerator and denominator, and the metric.

    Aggregated in SQL. For `spend_pace` the denominator is the daily budget of each segment
    (group_by=segment) or campaign (campaign, channel) that reported in the bucket, pro-rated to
    the bucket's length: spend / (daily_budget * bucket_minutes / 1440).
    """
    definition = get_metric(metric)
    if group_by not in GROUPINGS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPINGS)}")
    facts = _facts(workspace_ids, start, end, campaign_ids, segment_ids).annotate(group=F(GROUPINGS[group_by]))
    sums = {"numerator": Sum(definition.numerator)}
    if definition.denominator not in VIRTUAL_DENOMINATORS:
        sums["denominator"] = Sum(definition.denominator)
    rows = facts.values("group", "bucket_start").annotate(**sums).order_by("group", "bucket_start")
    budgets = _prorated_budgets(facts, group_by) if "denominator" not in sums else None
    return [_point(definition, row, budgets) for row in rows]


def _facts(workspace_ids, start, end, campaign_ids, segment_ids):
    facts = MetricFact.objects.filter(workspace_id__in=list(workspace_ids), bucket_start__gte=start,
                                      bucket_start__lt=end)
    if campaign_ids is not None:
        facts = facts.filter(campaign_id__in=list(campaign_ids))
    if segment_ids is not None:
        facts = facts.filter(segment_id__in=list(segment_ids))
    return facts


def _prorated_budgets(facts, group_by: str) -> dict[tuple, Decimal]:
    """Sum, per (group, bucket), of the pro-rated daily budget of each budget holder that reported.

    A holder appears once per bucket however many fact rows (creatives, variants) it has.
    """
    holder, budget = ("segment_id", "segment__daily_budget") if group_by == "segment" else (
        "campaign_id", "campaign__daily_budget")
    holders = facts.values_list("group", "bucket_start", holder, budget, "workspace__metric_bucket_minutes")
    totals: dict[tuple, Decimal] = defaultdict(Decimal)
    for group, bucket, _, daily_budget, minutes in holders.distinct().order_by():
        totals[(group, bucket)] += daily_budget * minutes / _MINUTES_PER_DAY
    return totals


def _point(definition: DerivedMetric, row: dict, budgets: dict | None) -> dict:
    numerator = float(row["numerator"] or 0)
    if budgets is not None:
        denominator = float(budgets.get((row["group"], row["bucket_start"]), 0))
    else:
        denominator = float(row["denominator"] or 0)
    return {
        "group": row["group"],
        "bucket_start": row["bucket_start"],
        "numerator": numerator,
        "denominator": denominator,
        "value": definition.value(numerator, denominator),
    }
