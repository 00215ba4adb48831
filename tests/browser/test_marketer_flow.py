"""A marketer's day in a real browser: build a rule with two triggers, preview it, fail to activate it;
an approver activates it; its change waits in the approval queue and is approved; the dashboard
shows the change on its chart."""

from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.roles import Role
from rules.engine import evaluate_rules
from rules.models import ApprovalPolicy, Change, Rule
from tests.browser.conftest import log_in
from tests.factories import MembershipFactory
from tests.ui.builders import SYSTEM, build_dashboard_data

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def people(workspace):
    marketer = MembershipFactory(workspace=workspace, role=Role.MARKETER, user__username="mia").user
    approver = MembershipFactory(workspace=workspace, role=Role.APPROVER, approval_level=2,
                                 user__username="arno").user
    return marketer, approver


def test_marketer_builds_a_rule_an_approver_activates_it_and_approves_its_change(workspace, people, open_browser, shot):
    build_dashboard_data(workspace)
    # The workspace admin's policy: changes above 5% wait for an approver.
    ApprovalPolicy.objects.create(workspace=workspace, auto_apply_max_pct=Decimal("5"))
    marketer_page = open_browser()
    log_in(marketer_page, "mia")
    shot(marketer_page, "today page")

    _build_rule(marketer_page)
    shot(marketer_page, "rule saved with its summary")
    summary = marketer_page.inner_text("#rule-summary")
    assert summary.endswith(
        "If CTR of any mobile segment is below 8.00% over the last hour and its CVR rises by 20% or more over the "
        "last hour vs the previous 2 days, raise its bid by 10%, at most 10% per hour.")

    marketer_page.click("text=Preview (dry run)")
    marketer_page.wait_for_selector("#segment-decisions")
    shot(marketer_page, "preview")
    assert "Mobile" in marketer_page.inner_text("#segment-decisions")

    marketer_page.go_back()
    assert marketer_page.locator("button", has_text="Activate").count() == 0
    rule = Rule.objects.get(name="Mobile CTR and CPA")
    assert rule.status == Rule.Status.DRAFT

    approver_page = open_browser()
    log_in(approver_page, "arno")
    approver_page.goto(f"/admin/rules/rule/{rule.pk}/change/")
    approver_page.click("button:has-text('Activate')")
    approver_page.wait_for_selector("text=activate done")
    shot(approver_page, "approver activated the rule")
    rule.refresh_from_db()
    assert rule.status == Rule.Status.ACTIVE

    # The worker's run, as beat would start it: the 10% bid change exceeds the policy's 5% auto-apply limit.
    evaluate_rules(rule_ids=[rule.pk], now=timezone.now(), source="schedule", actor=SYSTEM)
    change = Change.objects.get(rule=rule)
    assert change.status == Change.Status.PENDING

    approver_page.goto("/admin/")
    assert approver_page.inner_text("#today-approvals .count") == "1"
    approver_page.click("#today-approvals >> text=Open the approval queue")
    approver_page.wait_for_selector(f"#approval-{change.pk}")
    shot(approver_page, "approval queue")
    approver_page.fill(f"#approval-{change.pk} .approval-actions input[name=comment] >> nth=0", "CTR low, CVR up")
    approver_page.click(f"input[name=approve-{change.pk}]")
    approver_page.wait_for_selector("#approval-queue-empty")
    shot(approver_page, "change approved")
    change.refresh_from_db()
    assert change.status == Change.Status.APPLIED

    approver_page.goto("/admin/")
    approver_page.click("#today-dashboards >> text=Acme")
    shot(approver_page, "workspace dashboard")
    approver_page.click("#kpis >> text=Search brand")
    approver_page.click("#kpis >> text=Mobile")
    approver_page.click("#dashboard-controls >> text=1 day")
    marker = f"Mobile: bid {_money(change.old_value)}→{_money(change.capped_value)}"
    assert approver_page.locator("#metric-chart svg text", has_text=marker).count() == 1
    assert "Bid 0.9000 → 0.9900" in approver_page.inner_text("#change-timeline")
    shot(approver_page, "segment dashboard shows the change")


def _money(value: str) -> str:
    return f"{float(value):.2f}"


def _build_rule(page) -> None:
    page.goto("/admin/rules/rule/add/")
    page.fill("#id_name", "Mobile CTR and CPA")
    page.fill("#id_segment_filter", '{"device": "mobile"}')
    page.select_option("#id_action", "bid_pct")
    page.fill("#id_action_value", "10")
    _fill_trigger(page, 0, metric="ctr", kind="threshold", direction="below", threshold="0.08")
    page.click(".add-row a")
    _fill_trigger(page, 1, metric="cvr", kind="relative_change", direction="above", threshold="20",
                  baseline_minutes="2880")
    page.click("input[name=_continue]")
    page.wait_for_selector("#rule-summary")


def _fill_trigger(page, index: int, *, metric, kind, direction, threshold, baseline_minutes=None) -> None:
    prefix = f"#id_triggers-{index}-"
    page.select_option(prefix + "metric", metric)
    page.select_option(prefix + "kind", kind)
    page.select_option(prefix + "direction", direction)
    page.fill(prefix + "threshold", threshold)
    page.fill(prefix + "min_sample", "0")
    if baseline_minutes:
        page.fill(prefix + "baseline_minutes", baseline_minutes)
