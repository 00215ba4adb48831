"""Dashboards of a workspace, a campaign and a segment: charts, intervals, changes, scoping, SQL."""

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.roles import Role
from rules.aggregates import floor_to_bucket
from rulesplatform.dashboard_stats import wilson_interval
from tests.factories import CampaignFactory, MembershipFactory, SegmentFactory
from tests.rules.facts import add_buckets
from tests.ui.builders import HOURS, hourly

pytestmark = pytest.mark.django_db


def _page(client, name, pk, **params):
    response = client.get(reverse(f"dashboards:{name}", args=[pk]), params)
    assert response.status_code == 200
    return response


def _card(page: str, card_id: str) -> str:
    """The HTML of one card of the page (charts and tables have ids)."""
    match = re.search(rf'<(div|table) [^>]*id="{card_id}".*?</\1>', page, re.S)
    assert match, card_id
    return match.group(0)


def test_workspace_dashboard__charts_spend_by_channel_and_marks_the_applied_change(data, workspace, browser_as):
    page = _page(browser_as(Role.MARKETER), "workspace", workspace.pk).content.decode()
    spend = _card(page, "spend-chart")
    assert "<svg" in spend and "Spend by channel" in spend and "Search" in spend and "Social" in spend
    metric = _card(page, "metric-chart")
    assert "<svg" in metric and "Mobile: bid 1.00→0.90" in metric  # the change's marker on the CPA chart


def test_workspace_dashboard__tables_link_down_and_show_freshness(data, workspace, other_workspace, browser_as):
    theirs = CampaignFactory(workspace=other_workspace, name="Their campaign")
    page = _page(browser_as(Role.MARKETER), "workspace", workspace.pk).content.decode()
    kpis = _card(page, "kpis")
    assert reverse("dashboards:campaign", args=[data.search.pk]) in kpis
    assert reverse("dashboards:campaign", args=[data.social.pk]) in kpis
    timeline = _card(page, "change-timeline")
    assert "Bid 1.0000 → 0.9000" in timeline and reverse("dashboards:segment", args=[data.mobile.pk]) in timeline
    freshness = _card(page, "freshness")
    assert re.search(r"Search brand</a></td>\s*<td class=\"fresh-fresh\">fresh", freshness)
    assert re.search(r"Social prospecting</a></td>\s*<td class=\"fresh-stale\">stale", freshness)
    assert "Mobile CPA guard" in _card(page, "rule-activity")
    assert theirs.name not in page


def test_campaign_dashboard__segments_with_their_intervals(data, browser_as):
    response = _page(browser_as(Role.MARKETER), "campaign", data.search.pk)
    rows = {row["object"].name: row for row in response.context["kpis"]}
    mobile = rows["Mobile"]
    # 48 hours at 1 conversion and 24 at 2, 10 spent and 50 clicks every hour.
    assert (mobile["spend"], mobile["conversions"], mobile["clicks"]) == (720, 96, 3600)
    assert mobile["cpa"] == pytest.approx(7.5)
    assert mobile["cpa_low"] < 7.5 < mobile["cpa_high"]
    low, high = wilson_interval([96], [3600])
    assert (mobile["cvr_low"], mobile["cvr_high"]) == pytest.approx((low[0], high[0]))
    assert mobile["url"] == reverse("dashboards:segment", args=[data.mobile.pk])
    # Desktop's CPA is the same every hour: its interval has no width.
    assert rows["Desktop"]["cpa_low"] == pytest.approx(8) == pytest.approx(rows["Desktop"]["cpa_high"])


def test_segment_dashboard__measures_the_metric_before_and_after_each_change(data, browser_as):
    response = _page(browser_as(Role.MARKETER), "segment", data.mobile.pk, metric="cpa")
    [impact] = response.context["impacts"]
    assert impact.change == data.change
    assert (impact.before, impact.after, impact.delta_pct) == pytest.approx((10.0, 5.0, -50.0))
    assert impact.hours_after == pytest.approx(24)
    page = response.content.decode()
    assert "Mobile: bid 1.00→0.90" in _card(page, "metric-chart")
    assert "+0.0%" not in _card(page, "change-timeline") and "-50.0%" in _card(page, "change-timeline")


@pytest.mark.parametrize(("params", "expected"), [
    ({"days": "1", "metric": "ctr"}, (1, "ctr")),
    ({"days": "999", "metric": "drop table"}, (7, "cpa")),
    ({}, (7, "cpa")),
])
def test_dashboard__period_and_metric__come_from_the_query_with_safe_defaults(data, workspace, browser_as, params,
                                                                               expected):
    response = _page(browser_as(Role.MARKETER), "workspace", workspace.pk, **params)
    assert (response.context["days"], response.context["metric"]) == expected


@pytest.mark.parametrize("name", ["workspace", "campaign", "segment"])
def test_dashboards__of_another_workspace__answer_404(data, other_workspace, name):
    outsider = MembershipFactory(workspace=other_workspace, role=Role.ADMIN).user
    client = Client()
    client.force_login(outsider)
    pk = {"workspace": data.search.workspace_id, "campaign": data.search.pk, "segment": data.mobile.pk}[name]
    assert client.get(reverse(f"dashboards:{name}", args=[pk])).status_code == 404


@pytest.mark.parametrize("role", [Role.INTEGRATOR, None])
def test_dashboards__integrator_or_anonymous__are_sent_to_the_admin_login(data, workspace, browser_as, role):
    client = browser_as(role) if role else Client()
    response = client.get(reverse("dashboards:workspace", args=[workspace.pk]))
    assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))


def test_dashboards_home__with_one_workspace__goes_straight_to_it(data, workspace, browser_as):
    response = browser_as(Role.MARKETER).get(reverse("dashboards:home"))
    assert response.status_code == 302
    assert response.url == reverse("dashboards:workspace", args=[workspace.pk])


def test_workspace_dashboard__queries_do_not_grow_with_facts_or_segments(data, workspace, browser_as):
    client = browser_as(Role.MARKETER)
    url = reverse("dashboards:workspace", args=[workspace.pk])
    client.get(url)  # warm the session and content types

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        return len(queries)

    before = count()
    end = floor_to_bucket(data.now, workspace.metric_bucket_minutes)
    for name in ("Tablet", "Smart TV", "Watch"):
        extra = SegmentFactory(campaign=data.search, name=name)
        add_buckets(extra, hourly(HOURS, impressions=100, clicks=5, conversions=1, spend=3, revenue=9), end=end)
    assert client.get(url).context["kpis"][0]["spend"] == 720 + 576 + 3 * 3 * HOURS  # the new facts count
    assert count() == before
