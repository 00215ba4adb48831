"""Dashboards in the admin: a workspace, one campaign, one segment (each links down to the next).

Every page is scoped to the workspaces the person holds an admin-using role in; anything else
answers 404. The numbers come from `dashboard_selectors` (SQL aggregates), the charts are
matplotlib SVG rendered here and inlined (`campaigns.charts`).

Query parameters: `days` (one of PERIOD_DAYS, default 7) and `metric` (one of CHART_METRICS,
default CPA): the period and the metric charted with its interval and the change markers.
"""

import math
from decimal import Decimal, InvalidOperation

import pandas as pd
from django.contrib import admin
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

from accounts.models import Workspace
from campaigns.charts import ChartSpec, Marker, Series, empty_chart_svg, time_series_svg
from campaigns.metrics import get_metric
from campaigns.models import Campaign, Channel, Segment
from rules.explain import metric_name
from rules.models import Rule

from . import dashboard_selectors as sel

DEFAULT_DAYS = 7
DEFAULT_METRIC = "cpa"
SPEND_SERIES_SHOWN = 6  # more segments than this are summed into "Other" on the spend chart


def dashboards_home(request):
    """The workspaces one may open; straight to the dashboard when there is only one."""
    workspaces = list(Workspace.objects.filter(pk__in=sel.viewable_workspace_ids(request.user)).order_by("name"))
    if len(workspaces) == 1:
        return redirect("dashboards:workspace", workspace_id=workspaces[0].pk)
    context = {**admin.site.each_context(request), "title": "Dashboards", "workspaces": workspaces}
    return TemplateResponse(request, "admin/dashboards/home.html", context)


def workspace_dashboard(request, workspace_id: int):
    workspace = _visible(request, Workspace.objects.all(), lookup="pk", pk=workspace_id)
    view = _View(request, workspace)
    campaigns = list(workspace.campaigns.select_related("workspace").order_by("name"))
    by_campaign = view.frame(group_by="campaign")
    by_channel = view.frame(group_by="channel")
    changes = sel.applied_changes(workspace_ids=[workspace.pk], period=view.period)
    context = {
        **view.context(title=f"Dashboard: {workspace}"),
        "spend_chart": view.spend_chart(by_channel, "Spend by channel", label=_channel_label),
        "metric_chart": view.metric_chart(by_campaign, changes),
        "kpis": view.kpi_rows(by_campaign, {c.pk: c for c in campaigns}, "dashboards:campaign"),
        "impacts": view.impacts(changes),
        "rule_activity": sel.rule_activity(Rule.objects.filter(workspace=workspace), period=view.period),
        "freshness": sel.freshness_of(campaigns, now=view.now),
    }
    return TemplateResponse(request, "admin/dashboards/workspace.html", context)


def campaign_dashboard(request, campaign_id: int):
    campaign = _visible(request, Campaign.objects.select_related("workspace"), pk=campaign_id)
    view = _View(request, campaign.workspace)
    segments = sel.segments_of(campaign)
    by_segment = view.frame(group_by="segment", campaign_ids=[campaign.pk])
    changes = sel.applied_changes(workspace_ids=[campaign.workspace_id], period=view.period,
                                  campaign_ids=[campaign.pk])
    context = {
        **view.context(title=f"Dashboard: {campaign.name}"),
        "campaign": campaign,
        "freshness": sel.campaign_freshness(campaign, now=view.now),
        "spend_chart": view.spend_chart(by_segment, f"Spend by segment ({campaign.get_channel_display()})",
                                        label=lambda pk: segments[pk].name if pk in segments else str(pk)),
        "metric_chart": view.metric_chart(by_segment, changes),
        "kpis": view.kpi_rows(by_segment, segments, "dashboards:segment"),
        "impacts": view.impacts(changes),
        "rule_activity": sel.rule_activity(sel.rules_covering(campaign), period=view.period,
                                           campaign_ids=[campaign.pk]),
    }
    return TemplateResponse(request, "admin/dashboards/campaign.html", context)


def segment_dashboard(request, segment_id: int):
    segment = _visible(request, Segment.objects.select_related("campaign__workspace"), lookup="campaign__workspace",
                       pk=segment_id)
    campaign = segment.campaign
    view = _View(request, campaign.workspace)
    frame = view.frame(group_by="segment", segment_ids=[segment.pk])
    changes = sel.applied_changes(workspace_ids=[campaign.workspace_id], period=view.period,
                                  segment_ids=[segment.pk])
    context = {
        **view.context(title=f"Dashboard: {segment}"),
        "campaign": campaign,
        "segment": segment,
        "freshness": sel.campaign_freshness(campaign, now=view.now),
        "spend_chart": view.spend_chart(frame, "Spend", label=lambda _: segment.name),
        "metric_chart": view.metric_chart(frame, changes),
        "kpis": view.kpi_rows(frame, {segment.pk: segment}, None),
        "impacts": view.impacts(changes),
        "rule_activity": sel.rule_activity(sel.rules_covering(campaign), period=view.period,
                                           segment_ids=[segment.pk]),
    }
    return TemplateResponse(request, "admin/dashboards/segment.html", context)


def _visible(request, queryset, *, lookup: str = "workspace", pk: int):
    """The object if it belongs to a workspace this person may see, else 404 (never 403: no probing)."""
    ids = sel.viewable_workspace_ids(request.user)
    return get_object_or_404(queryset.filter(**{f"{lookup}__in": ids}), pk=pk)


def _channel_label(channel: str) -> str:
    return Channel(channel).label if channel in Channel.values else channel


class _View:
    """What every dashboard page shares: its period and metric, and how it turns frames into parts."""

    def __init__(self, request, workspace: Workspace):
        self.request, self.workspace, self.now = request, workspace, timezone.now()
        self.days = _choice(request.GET.get("days"), sel.PERIOD_DAYS, DEFAULT_DAYS, cast=int)
        self.metric = _choice(request.GET.get("metric"), sel.CHART_METRICS, DEFAULT_METRIC)
        self.period = sel.Period.last_days(self.days, now=self.now, time_zone=workspace.time_zone)

    @property
    def x_limits(self) -> tuple:
        """The period on the charts' axis, in the workspace's local time like their data."""
        return sel.local_time(self.period.start, self.period), sel.local_time(self.period.end, self.period)

    def context(self, *, title: str) -> dict:
        return {
            **admin.site.each_context(self.request), "title": title, "workspace": self.workspace,
            "days": self.days, "period_days": sel.PERIOD_DAYS, "period": self.period,
            "metric": self.metric, "metric_label": metric_name(self.metric),
            "metric_choices": [(m, metric_name(m)) for m in sel.CHART_METRICS],
            "currency": self.workspace.currency,
        }

    def frame(self, *, group_by: str, campaign_ids=None, segment_ids=None) -> pd.DataFrame:
        return sel.counter_frame(workspace_ids=[self.workspace.pk], period=self.period, group_by=group_by,
                                 campaign_ids=campaign_ids, segment_ids=segment_ids)

    # --- charts ---

    def spend_chart(self, frame: pd.DataFrame, title: str, *, label) -> str:
        if frame.empty:
            return mark_safe(empty_chart_svg(title))  # noqa: S308 (our own SVG, text escaped by matplotlib)
        spend = sel.counters_by_step(frame, self.period)["spend"]
        spend = _top_columns(spend, SPEND_SERIES_SHOWN)
        series = [Series(label(group) if group != "other" else "Other", list(spend.index), list(spend[group]))
                  for group in spend.columns]
        spec = ChartSpec(title=title, y_label=f"Spend ({self.workspace.currency})", series=series, stacked=True,
                         bars=True, x_limits=self.x_limits)
        return mark_safe(time_series_svg(spec))  # noqa: S308

    def metric_chart(self, frame: pd.DataFrame, changes) -> str:
        definition = get_metric(self.metric)
        title = f"{metric_name(self.metric)} with its 95% interval, and the changes applied"
        if frame.empty:
            return mark_safe(empty_chart_svg(title))  # noqa: S308
        steps = sel.metric_by_step(frame, self.period, self.metric)
        # Each value is placed mid-step, over the bar of the same step on the spend chart.
        x = list(steps.index + self.period.step / 2)
        series = Series(metric_name(self.metric), x, list(steps.value), list(steps.low), list(steps.high))
        markers = [Marker(sel.local_time(c.applied_at, self.period), _change_label(c)) for c in changes
                   if c.applied_at >= self.period.start]
        spec = ChartSpec(title=title, y_label=_unit_label(definition, self.workspace.currency), series=[series],
                         markers=markers, percent=definition.unit == "%", x_limits=self.x_limits)
        return mark_safe(time_series_svg(spec))  # noqa: S308

    # --- tables ---

    def kpi_rows(self, frame: pd.DataFrame, objects: dict, drill_down: str | None) -> list[dict]:
        if frame.empty:
            return []
        table = sel.kpi_table(frame).sort_values("spend", ascending=False)
        rows = []
        for group, row in table.to_dict("index").items():
            group = group.item() if hasattr(group, "item") else group  # numpy scalar -> int / str
            rows.append({"object": objects.get(group, group), "url": _drill_url(drill_down, group),
                         **{key: _number(value) for key, value in row.items()}})
        return rows

    def impacts(self, changes) -> list[sel.ChangeImpact]:
        return sel.change_impacts(changes, workspace_ids=[self.workspace.pk], metric=self.metric, now=self.now)


def _choice(raw, allowed, default, *, cast=str):
    try:
        value = cast(raw)
    except (TypeError, ValueError):
        return default
    return value if value in allowed else default


def _top_columns(table: pd.DataFrame, shown: int) -> pd.DataFrame:
    """The `shown` largest columns by total, the rest summed into one "other" column."""
    order = table.sum().sort_values(ascending=False).index
    if len(order) <= shown:
        return table[order]
    top = table[order[:shown]].copy()
    top["other"] = table[order[shown:]].sum(axis=1)
    return top


def _change_label(change) -> str:
    """e.g. "Mobile: bid 1.00→0.90" (the target's own name: its campaign is the page's, or in the table)."""
    field = change.get_field_display().lower()
    return f"{change.target.name}: {field} {_short(change.old_value)}→{_short(change.capped_value)}"


def _short(value: str) -> str:
    """Stored values carry 4 decimals ("1.0000"); people read money with 2 unless more are needed."""
    try:
        number = Decimal(value)
    except InvalidOperation:
        return value  # a status ("paused") or a rotation order
    cents = number.quantize(Decimal("0.01"))
    return f"{cents}" if cents == number else f"{number.normalize()}"


def _unit_label(definition, currency: str) -> str:
    return {"%": "%", "currency": currency, "x": "× spend"}.get(definition.unit, definition.unit)


def _drill_url(name: str | None, pk) -> str | None:
    return reverse(name, args=[pk]) if name and isinstance(pk, int) else None


def _number(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
