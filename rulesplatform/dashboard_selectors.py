"""Reads behind the dashboards (workspace → campaign → segment) and the admin's "today" page.

Metric aggregation happens in SQL through `campaigns.selectors.metric_timeseries` (one row per group
and bucket); what is done here works on those aggregated rows, column-wise with pandas, never row by
row over metric facts. Callers pass the workspace ids the person may see (`viewable_workspace_ids`).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from django.db.models import Count, Max, Q
from django.urls import reverse
from django.utils import timezone

from accounts.models import Workspace
from accounts.roles import Perm
from accounts.selectors import admin_workspace_ids
from campaigns.freshness import metrics_freshness
from campaigns.metrics import get_metric
from campaigns.models import Campaign, DeliveryStatus, Segment
from campaigns.selectors import metric_timeseries
from rules.approval_queue import changes_awaiting
from rules.changes import AWAITING_DECISION
from rules.models import Change, Evaluation, Rule

from .dashboard_stats import ratio_delta_interval, wilson_interval

COUNTERS = ("impressions", "clicks", "conversions", "spend", "revenue")
# The three registry metrics whose numerators and denominators together give every counter above.
_FRAME_METRICS = {"ctr": ("clicks", "impressions"), "cpa": ("spend", "conversions"), "roas": ("revenue", "spend")}
# Metrics a dashboard chart can show: those computed from the counters above.
CHART_METRICS = ("cpa", "roas", "cvr", "ctr", "cpc", "cpm")
PERIOD_DAYS = (1, 7, 14, 28)
BEFORE_AFTER = timedelta(hours=24)


def viewable_workspace_ids(user) -> set[int]:
    """Workspaces whose dashboards this person may open: a role that uses the admin (superusers: all)."""
    if user.is_superuser:
        return set(Workspace.objects.values_list("pk", flat=True))
    return admin_workspace_ids(user, Perm.VIEW)


@dataclass(frozen=True)
class Period:
    """[start, end) in whole hours, and the workspace time zone its days are counted in."""

    start: datetime
    end: datetime
    tz: ZoneInfo

    @classmethod
    def last_days(cls, days: int, *, now: datetime, time_zone: str) -> "Period":
        end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)  # includes the filling bucket
        return cls(start=end - timedelta(days=days), end=end, tz=ZoneInfo(time_zone))

    @property
    def step(self) -> timedelta:
        """Chart resolution: hours over a day or two, days beyond (an hourly line over weeks is noise)."""
        return timedelta(hours=1) if self.end - self.start <= timedelta(days=2) else timedelta(days=1)

    @property
    def resample_rule(self) -> str:
        return "h" if self.step == timedelta(hours=1) else "D"


# --- metric frames --------------------------------------------------------------------------------


def counter_frame(*, workspace_ids, period: Period, group_by: str, campaign_ids=None, segment_ids=None
                  ) -> pd.DataFrame:
    """Columns group, bucket_start and COUNTERS: one row per (group, bucket) with any fact."""
    parts = []
    for metric, (numerator, denominator) in _FRAME_METRICS.items():
        rows = metric_timeseries(workspace_ids=workspace_ids, metric=metric, group_by=group_by, start=period.start,
                                 end=period.end, campaign_ids=campaign_ids, segment_ids=segment_ids)
        part = pd.DataFrame(rows, columns=["group", "bucket_start", "numerator", "denominator", "value"])
        parts.append(part.rename(columns={"numerator": numerator, "denominator": denominator})
                     .drop(columns="value").set_index(["group", "bucket_start"]))
    # spend comes twice (CPA's numerator, ROAS's denominator): the same sums, kept once.
    frame = pd.concat([parts[0], parts[1], parts[2].drop(columns="spend")], axis=1).fillna(0.0)
    return frame.reset_index()[["group", "bucket_start", *COUNTERS]]


def metric_values(totals: pd.DataFrame, metric: str) -> pd.Series:
    """The registry metric computed column-wise from summed counters (NaN where its denominator is 0)."""
    definition = get_metric(metric)
    numerator, denominator = totals[definition.numerator], totals[definition.denominator]
    return (definition.scale * numerator / denominator.where(denominator > 0)).astype(float)


def kpi_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per group: totals, CVR and CTR with Wilson intervals, CPA and ROAS with delta-method intervals."""
    moments = frame.assign(
        spend_sq=frame.spend**2, conversions_sq=frame.conversions**2, revenue_sq=frame.revenue**2,
        spend_conversions=frame.spend * frame.conversions, revenue_spend=frame.revenue * frame.spend,
    ).groupby("group")
    table = moments.sum(numeric_only=True)
    table["buckets"] = moments.size()
    table["cvr"] = metric_values(table, "cvr")
    table["cvr_low"], table["cvr_high"] = wilson_interval(table.conversions, table.clicks)
    table["ctr"] = metric_values(table, "ctr")
    table["ctr_low"], table["ctr_high"] = wilson_interval(table.clicks, table.impressions)
    table["cpa"], table["cpa_low"], table["cpa_high"] = ratio_delta_interval(
        table.buckets, table.conversions, table.spend, table.conversions_sq, table.spend_sq, table.spend_conversions)
    table["roas"], table["roas_low"], table["roas_high"] = ratio_delta_interval(
        table.buckets, table.spend, table.revenue, table.spend_sq, table.revenue_sq, table.revenue_spend)
    return table.drop(columns=["spend_sq", "conversions_sq", "revenue_sq", "spend_conversions", "revenue_spend"])


def scope_total(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame summed over its groups per bucket, as one group named "total"."""
    summed = frame.groupby("bucket_start", as_index=False)[list(COUNTERS)].sum()
    return summed.assign(group="total")


def local_steps(frame: pd.DataFrame, period: Period) -> pd.Series:
    """Each bucket's chart step (hour or day) as naive local time in the workspace's zone.

    Naive local times keep days whole across daylight-saving changes, and read on the chart's axis
    as the workspace's clock; change markers go through `local_time` to sit on the same axis.
    """
    local = pd.to_datetime(frame.bucket_start, utc=True).dt.tz_convert(period.tz).dt.tz_localize(None)
    return local.dt.floor(period.resample_rule)


def local_time(moment: datetime, period: Period) -> datetime:
    return moment.astimezone(period.tz).replace(tzinfo=None)


def period_steps(period: Period) -> pd.DatetimeIndex:
    start = pd.Timestamp(local_time(period.start, period)).floor(period.resample_rule)
    return pd.date_range(start, local_time(period.end, period), freq=period.resample_rule, inclusive="left")


def counters_by_step(frame: pd.DataFrame, period: Period) -> pd.DataFrame:
    """Counters indexed by chart step, one column level per group: every step present (missing = 0)."""
    steps = local_steps(frame, period)
    table = frame.assign(step=steps).groupby(["step", "group"])[list(COUNTERS)].sum().unstack("group")
    return table.reindex(period_steps(period), fill_value=0.0).fillna(0.0)


def metric_by_step(frame: pd.DataFrame, period: Period, metric: str) -> pd.DataFrame:
    """The scope's `metric` per chart step with its interval (columns value, low, high; NaN = none).

    Intervals come from the buckets inside each step, as in `kpi_table` (CPC and CPM get none).
    """
    total = scope_total(frame)
    table = kpi_table(total.assign(group=local_steps(total, period)))
    if metric in ("cpa", "roas", "cvr", "ctr"):
        result = table[[metric, f"{metric}_low", f"{metric}_high"]].set_axis(["value", "low", "high"], axis=1)
    else:
        result = pd.DataFrame({"value": metric_values(table, metric), "low": np.nan, "high": np.nan})
    return result.reindex(period_steps(period))


# --- changes and their before / after ----------------------------------------------------------


def _change_scope(campaign_ids=None, segment_ids=None) -> Q:
    if segment_ids is not None:
        return Q(segment_id__in=list(segment_ids))
    if campaign_ids is not None:
        ids = list(campaign_ids)
        return Q(campaign_id__in=ids) | Q(segment__campaign_id__in=ids) | Q(creative__campaign_id__in=ids)
    return Q()


def applied_changes(*, workspace_ids, period: Period, campaign_ids=None, segment_ids=None, limit: int = 30
                    ) -> list[Change]:
    """The latest changes applied in the period within the scope, newest first."""
    return list(
        Change.objects.filter(workspace_id__in=list(workspace_ids), status=Change.Status.APPLIED,
                              applied_at__gte=period.start, applied_at__lt=period.end)
        .filter(_change_scope(campaign_ids, segment_ids))
        .select_related("rule", "segment__campaign", "creative__campaign", "campaign")
        .order_by("-applied_at", "-id")[:limit]
    )


@dataclass(frozen=True)
class ChangeImpact:
    change: Change
    metric: str
    before: float | None
    after: float | None
    hours_after: float  # the "after" side is cut at now: a change of an hour ago has one hour of data

    @property
    def delta_pct(self) -> float | None:
        if self.before in (None, 0) or self.after is None or np.isnan(self.before) or np.isnan(self.after):
            return None
        return 100 * (self.after - self.before) / self.before


def change_impacts(changes: list[Change], *, workspace_ids, metric: str, now: datetime,
                   window: timedelta = BEFORE_AFTER) -> list[ChangeImpact]:
    """`metric` of each change's target over `window` before and after it was applied.

    A segment's change is measured on that segment; a creative's or campaign's on its campaign.
    Two aggregate queries in all (segments, campaigns), whatever the number of changes.
    """
    if not changes:
        return []
    start = min(c.applied_at for c in changes) - window
    end = min(max(c.applied_at for c in changes) + window, now + timedelta(hours=1))
    series = {
        "segment": _target_series({c.segment_id for c in changes if c.segment_id}, "segment", workspace_ids,
                                  metric, start, end),
        "campaign": _target_series({_campaign_id(c) for c in changes if not c.segment_id}, "campaign",
                                   workspace_ids, metric, start, end),
    }
    return [_impact(c, series, metric, window, now) for c in changes]


def _campaign_id(change: Change) -> int:
    return change.campaign_id or change.creative.campaign_id


def _target_series(ids: set[int], group_by: str, workspace_ids, metric: str, start, end) -> pd.DataFrame:
    columns = ["group", "bucket_start", "numerator", "denominator", "value"]
    if not ids:
        return pd.DataFrame(columns=columns)
    key = {"segment": "segment_ids", "campaign": "campaign_ids"}[group_by]
    rows = metric_timeseries(workspace_ids=workspace_ids, metric=metric, group_by=group_by, start=start, end=end,
                             **{key: ids})
    frame = pd.DataFrame(rows, columns=columns)
    frame["bucket_start"] = pd.to_datetime(frame.bucket_start, utc=True)
    return frame


def _impact(change: Change, series: dict, metric: str, window: timedelta, now: datetime) -> ChangeImpact:
    kind, group = ("segment", change.segment_id) if change.segment_id else ("campaign", _campaign_id(change))
    frame = series[kind]
    frame = frame[frame.group == group]
    at = pd.Timestamp(change.applied_at)
    definition = get_metric(metric)

    def value_between(start, end) -> float | None:
        rows = frame[(frame.bucket_start >= start) & (frame.bucket_start < end)]
        return definition.value(rows.numerator.sum(), rows.denominator.sum())

    after_end = min(at + window, pd.Timestamp(now))
    return ChangeImpact(
        change=change, metric=metric, before=value_between(at - window, at), after=value_between(at, after_end),
        hours_after=max((after_end - at).total_seconds() / 3600, 0.0),
    )


# --- rules, freshness --------------------------------------------------------------------------


def rules_covering(campaign: Campaign):
    """Rules (any status) of the campaign's workspace whose scope takes in this campaign."""
    return (
        Rule.objects.filter(workspace_id=campaign.workspace_id)
        .filter(Q(campaigns__isnull=True) | Q(campaigns=campaign))
        .filter(Q(channel="") | Q(channel=campaign.channel))
        .distinct()
    )


def rule_activity(rules, *, period: Period, campaign_ids=None, segment_ids=None) -> list[dict]:
    """Per rule: runs and firings in the period, its changes applied in the period within the scope,
    and those of the scope waiting for a decision now."""
    rule_ids = list(rules.values_list("pk", flat=True))
    runs = {
        row["rule"]: row
        for row in Evaluation.objects.filter(rule_id__in=rule_ids, window_end__gte=period.start,
                                             window_end__lt=period.end)
        .values("rule").annotate(
            runs=Count("id"), fired=Count("id", filter=Q(outcome=Evaluation.Outcome.FIRED)),
            stale=Count("id", filter=Q(outcome=Evaluation.Outcome.SKIPPED_STALE)), last_fired=Max(
                "window_end", filter=Q(outcome=Evaluation.Outcome.FIRED)),
        ).order_by()
    }
    changes = {
        row["rule"]: row
        for row in Change.objects.filter(rule_id__in=rule_ids)
        .filter(Q(status=Change.Status.APPLIED, applied_at__gte=period.start, applied_at__lt=period.end)
                | Q(status__in=AWAITING_DECISION))
        .filter(_change_scope(campaign_ids, segment_ids))
        .values("rule").annotate(
            applied=Count("id", filter=Q(status=Change.Status.APPLIED)),
            waiting=Count("id", filter=Q(status__in=AWAITING_DECISION)),
        ).order_by()
    }
    empty = {"runs": 0, "fired": 0, "stale": 0, "last_fired": None, "applied": 0, "waiting": 0}
    return [
        {"rule": rule, **empty, **{k: v for k, v in {**runs.get(rule.pk, {}), **changes.get(rule.pk, {})}.items()
                                   if k != "rule"}}
        for rule in Rule.objects.filter(pk__in=rule_ids).order_by("name")
    ]


@dataclass(frozen=True)
class Freshness:
    campaign: Campaign
    state: str  # "fresh", "stale", "flagged" or "no data"
    age_minutes: int | None
    limit_minutes: int

    @property
    def is_fresh(self) -> bool:
        return self.state == "fresh"


def campaign_freshness(campaign: Campaign, *, now: datetime) -> Freshness:
    """The test the engine applies before acting (campaigns.freshness): flagged, never fed, or too old."""
    found = metrics_freshness(received_at=campaign.metrics_received_at, latest_bucket=campaign.metrics_latest_bucket,
                              quality_flag=campaign.data_quality_flag, workspace=campaign.workspace, now=now)
    return Freshness(campaign, found.state, found.age_minutes, found.limit_minutes)


def freshness_of(campaigns, *, now: datetime) -> list[Freshness]:
    return [campaign_freshness(c, now=now) for c in campaigns]


# --- the "today" page -----------------------------------------------------------------------------


def stale_feeds(workspace_ids, *, now: datetime) -> list[Freshness]:
    """Live campaigns whose data a rule would refuse to act on: flagged, never fed, or past the limit."""
    campaigns = (Campaign.objects.filter(workspace_id__in=list(workspace_ids))
                 .exclude(status=DeliveryStatus.ARCHIVED).select_related("workspace").order_by("workspace", "name"))
    return [f for f in freshness_of(campaigns, now=now) if not f.is_fresh]


def rules_fired_since(workspace_ids, *, since: datetime) -> list[dict]:
    """Rules with at least one firing since `since`: how often, and when last."""
    return list(
        Evaluation.objects.filter(workspace_id__in=list(workspace_ids), outcome=Evaluation.Outcome.FIRED,
                                  created_at__gte=since)
        .values("rule", "rule__name", "rule__workspace__name")
        .annotate(fired=Count("id"), last_fired=Max("created_at"))
        .order_by("-last_fired")
    )


def segments_of(campaign: Campaign) -> dict[int, Segment]:
    return {s.pk: s for s in campaign.segments.order_by("name")}


def approval_queue_url() -> str:
    return reverse("admin:rules_approvalrequest_changelist")


def today(user, *, now: datetime | None = None) -> dict:
    """What the admin index shows first: approvals waiting for me, rules that fired, stale feeds."""
    now = now or timezone.now()
    workspace_ids = viewable_workspace_ids(user)
    return {
        "approvals_waiting": changes_awaiting(user).count(),
        "approval_queue_url": approval_queue_url(),
        "fired_rules": rules_fired_since(workspace_ids, since=now - timedelta(hours=24)),
        "stale_feeds": stale_feeds(workspace_ids, now=now),
        "workspaces": Workspace.objects.filter(pk__in=workspace_ids).order_by("name"),
    }
