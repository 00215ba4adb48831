"""The approval queue (API and admin) and manual changes: what waits for whom, with why; a person's
change through the same caps and policy."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from accounts.roles import Role
from audit.actors import Actor
from rules.approval_queue import approval_queue, changes_awaiting
from rules.approvals import change_escalate
from rules.exceptions import CommentRequired, InvalidManualChange
from rules.manual_changes import change_propose_manual
from rules.models import Change, Evaluation
from rules.services import evaluation_record
from tests.factories import CampaignFactory, CreativeFactory, SegmentFactory
from tests.rules.facts import NOW, SYSTEM
from tests.rules.governance_builders import approver, policy
from tests.rules.pipeline_builders import reloaded, rule_with_action, run

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture
def segment(workspace):
    policy(workspace, auto_apply_max_pct=D("5"))
    return SegmentFactory(campaign=CampaignFactory(workspace=workspace), bid=D("1.00"))


def rule_change(workspace, segment, *, owner=None):
    """A rule's 10% bid change, waiting at level 1, from an evaluation that kept its numbers."""
    rule = rule_with_action(workspace, "bid_pct", 20, max_step_pct=D("10"), owner=owner)
    decision = {"segment_id": segment.pk, "segment_name": segment.name, "decision": "fired",
                "reason": "CTR 0.8% below 1%",
                "triggers": [{"metric": "ctr", "kind": "threshold", "direction": "below", "value": 0.008,
                              "baseline": 0.012, "p_value": 0.003, "reason": "CTR 0.8% below 1%",
                              "consecutive_count": 1, "consecutive_required": 1}]}
    evaluation = evaluation_record(actor=SYSTEM, rule=rule, window_end=NOW, evaluated_at=NOW,
                                   source=Evaluation.Source.SCHEDULE, outcome=Evaluation.Outcome.FIRED,
                                   summary="Fired for 1 of 1 segments.", inputs={"segments": [decision]})
    [planned] = run(rule, [segment], evaluation=evaluation, now=timezone.now())
    return planned.change


def test_api_queue__shows_what_a_decision_needs(workspace, segment, client_for):
    change = rule_change(workspace, segment)
    decider = approver(workspace, approval_limit_pct=D("5"))

    [item] = client_for(decider).get("/api/v1/approvals/queue/").json()["results"]

    assert item["change"]["id"] == change.pk and item["content_hash"] == item["change"]["content_hash"]
    assert (item["change"]["requested_value"], item["change"]["capped_value"]) == ("1.2000", "1.1000")
    assert [e["cap"] for e in item["change"]["cap_report"] if e["bound"]] == ["max_step"]
    assert item["explanation"]["triggers"][0]["baseline"] == 0.012
    assert item["evaluation_summary"] == "Fired for 1 of 1 segments."
    assert item["risk"] == "high" and item["size_pct"] == "10.00"  # twice the 5% auto-apply limit
    assert 3500 < item["sla_left_seconds"] <= 3600 and item["age_seconds"] >= 0
    assert item["may_approve"] is False and "your limit is 5" in item["limit_problems"][0]
    assert item["may_escalate"] is True


def test_queue__hides_own_changes_and_levels_above_mine(workspace, segment, client_for, member):
    owner = approver(workspace, level=2)
    own = rule_change(workspace, segment, owner=owner)
    other_segment = SegmentFactory(campaign=segment.campaign, bid=D("1.00"))
    requested = change_propose_manual(actor=Actor.for_user(member(Role.MARKETER)), target=other_segment,
                                      field="bid", value="1.10", reason="Push it")
    change_escalate(actor=Actor.for_user(approver(workspace)), change=requested, comment="For level 2")

    def listed(user):
        return [i["change"]["id"] for i in client_for(user).get("/api/v1/approvals/queue/").json()["results"]]

    assert listed(owner) == [requested.pk]  # not the change of their own rule
    assert listed(approver(workspace, level=1)) == [own.pk]  # level 2 is above them
    assert sorted(listed(approver(workspace, level=2))) == sorted([own.pk, requested.pk])


def test_changes_awaiting__is_what_the_queue_lists(workspace, segment, member):
    owner = approver(workspace, level=2)
    own = rule_change(workspace, segment, owner=owner)
    requested = change_propose_manual(actor=Actor.for_user(member(Role.MARKETER)), target=segment, field="bid",
                                      value="1.10", reason="Push it")
    change_escalate(actor=Actor.for_user(approver(workspace)), change=requested, comment="For level 2")

    for person in (owner, approver(workspace, level=1), approver(workspace, level=2), member(Role.MARKETER)):
        queued = [item.change.pk for item in approval_queue(user=person, now=timezone.now())]
        assert sorted(changes_awaiting(person).values_list("pk", flat=True)) == sorted(queued)
    assert list(changes_awaiting(approver(workspace, level=2)).order_by("pk")) == sorted(
        [own, requested], key=lambda change: change.pk)


def test_queue__never_shows_another_workspaces_changes(workspace, other_workspace, segment, client_for):
    rule_change(workspace, segment)

    response = client_for(approver(other_workspace, level=5)).get("/api/v1/approvals/queue/")

    assert response.status_code == 200 and response.json()["results"] == []


def test_api_decision__with_a_stale_content_hash__is_refused_with_409(workspace, segment, client_for, member):
    change = rule_change(workspace, segment)
    seen = client_for(approver(workspace)).get("/api/v1/approvals/queue/").json()["results"][0]["content_hash"]
    client_for(member(Role.MARKETER)).post(f"/api/v1/changes/{change.pk}/revise/",
                                           {"value": "1.0600", "reason": "Smaller"})

    response = client_for(approver(workspace)).post(f"/api/v1/changes/{change.pk}/approve/", {"content_hash": seen})

    assert response.status_code == 409 and response.json()["error"]["code"] == "change_content_changed"


def test_api_decision__errors_are_named(workspace, segment, client_for, other_workspace):
    change = rule_change(workspace, segment)
    decider = client_for(approver(workspace, approval_limit_pct=D("1")))

    assert decider.post(f"/api/v1/changes/{change.pk}/reject/", {}).json()["error"]["code"] == "comment_required"
    refused = decider.post(f"/api/v1/changes/{change.pk}/approve/", {})
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "above_approval_limit")
    outsider = client_for(approver(other_workspace, level=3)).post(f"/api/v1/changes/{change.pk}/approve/", {})
    assert outsider.status_code == 404


def test_admin_queue__lists_the_change_with_its_explanation_and_decides_it(workspace, segment):
    change = rule_change(workspace, segment)
    client = Client()
    client.force_login(approver(workspace))

    page = client.get("/admin/rules/approvalrequest/")
    assert page.status_code == 200
    assert f'id="approval-{change.pk}"' in page.text and "CTR 0.8% below 1%" in page.text
    assert "max_step" in page.text and "risk high" in page.text

    response = client.post(f"/admin/rules/approvalrequest/{change.pk}/decide/approve/",
                           {"content_hash": page.context["items"][0].content_hash})
    assert response.status_code == 302
    assert Change.objects.get(pk=change.pk).status == Change.Status.APPLIED
    assert reloaded(segment)[0].bid == D("1.1000")


# --- manual changes ---------------------------------------------------------------------------------

def test_change_propose_manual__is_capped_by_the_guardrails_and_routed_by_the_policy(workspace, segment, member):
    marketer = Actor.for_user(member(Role.MARKETER))

    change = change_propose_manual(actor=marketer, target=segment, field="bid", value="2.00", reason="Big push",
                                   now=NOW)

    # The guardrails: 20% in one step, then 10% per hour.
    assert (change.kind, change.requested_value, change.capped_value) == ("manual", "2.0000", "1.1000")
    assert [e["cap"] for e in change.cap_report if e["bound"]] == ["max_step", "workspace_hour"]
    assert change.status == Change.Status.PENDING and change.requested_by == marketer.user


def test_change_propose_manual__within_the_policy__applies_at_once(workspace, segment, member):
    change = change_propose_manual(actor=Actor.for_user(member(Role.MARKETER)), target=segment,
                                   field="daily_budget", value="96", reason="Small trim", now=NOW)

    assert change.status == Change.Status.APPLIED and reloaded(segment)[0].daily_budget == D("96.0000")


def test_change_propose_manual__counts_in_the_hourly_window_of_the_target(workspace, segment, member):
    marketer = Actor.for_user(member(Role.MARKETER))
    change_propose_manual(actor=marketer, target=segment, field="bid", value="1.04", reason="a", now=NOW)
    reloaded(segment)

    second = change_propose_manual(actor=marketer, target=segment, field="bid", value="1.15", reason="b",
                                   now=NOW + timedelta(minutes=10))

    assert second.capped_value == "1.1000"  # within 10% of the 1.00 held at the window's start
    assert [e["cap"] for e in second.cap_report if e["bound"]] == ["workspace_hour"]


@pytest.mark.parametrize(("field", "value", "error"), [
    ("rotation_order", "2", InvalidManualChange),  # a segment has no rotation order
    ("bid", "cheap", InvalidManualChange),
    ("bid", "-1", InvalidManualChange),
    ("status", "archived", InvalidManualChange),
])
def test_change_propose_manual__invalid__is_refused(workspace, segment, member, field, value, error):
    with pytest.raises(error):
        change_propose_manual(actor=Actor.for_user(member(Role.MARKETER)), target=segment, field=field,
                              value=value, reason="x")


def test_change_propose_manual__needs_a_reason(workspace, segment, member):
    with pytest.raises(CommentRequired):
        change_propose_manual(actor=Actor.for_user(member(Role.MARKETER)), target=segment, field="bid",
                              value="1.01", reason=" ")


def test_api_manual_change__creative_status_and_idempotency_key(workspace, segment, client_for, member):
    creative = CreativeFactory(campaign=segment.campaign)
    client = client_for(member(Role.MARKETER))
    body = {"target_type": "creative", "target_id": creative.pk, "field": "status", "value": "paused",
            "reason": "Worn out"}

    first = client.post("/api/v1/manual-changes/", body, HTTP_IDEMPOTENCY_KEY="k-1")
    again = client.post("/api/v1/manual-changes/", body, HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == 201 and first.json()["status"] == "applied"
    assert again.json()["id"] == first.json()["id"] and Change.objects.count() == 1


def test_api_manual_change__on_another_workspaces_target__answers_404(workspace, other_workspace, client_for,
                                                                     member):
    foreign = SegmentFactory(campaign=CampaignFactory(workspace=other_workspace))
    response = client_for(member(Role.MARKETER)).post("/api/v1/manual-changes/", {
        "target_type": "segment", "target_id": foreign.pk, "field": "bid", "value": "1.1", "reason": "x"})

    assert response.status_code == 404 and not Change.objects.exists()
