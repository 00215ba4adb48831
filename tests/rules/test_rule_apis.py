"""REST API of rules, evaluations and changes: roles, scoping, nested triggers, preview."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.roles import Role
from audit.models import AuditEvent
from rules.aggregates import floor_to_bucket
from rules.engine import evaluate_rules
from rules.models import Change, Evaluation, Rule
from tests.factories import MembershipFactory
from tests.rules.facts import SYSTEM, active_rule, add_buckets, fresh_campaign, segments, trigger

pytestmark = pytest.mark.django_db

RULES = "/api/v1/rules/"
CTR_DROP = {"metric": "ctr", "kind": "relative_change", "direction": "below", "threshold": "20",
            "window_minutes": 60, "baseline_minutes": 1440}


def _body(workspace, **fields):
    return {"workspace": workspace.pk, "name": "CTR drop", "action": "bid_pct", "action_value": "-10",
            "triggers": [CTR_DROP], **fields}


@pytest.fixture
def as_role(member, client_for):
    return lambda role: client_for(member(role))


@pytest.mark.parametrize(("role", "status"), [(Role.MARKETER, 201), (Role.ADMIN, 201), (Role.APPROVER, 403),
                                              (Role.INTEGRATOR, 403)])
def test_create__needs_the_edit_rules_permission(workspace, as_role, role, status):
    response = as_role(role).post(RULES, _body(workspace), format="json")
    assert response.status_code == status, response.json()
    if status == 201:
        body = response.json()
        assert (body["status"], body["version"]) == ("draft", 1)
        assert [t["metric"] for t in body["triggers"]] == ["ctr"]


def test_create__integrator_with_configuration_rights__may(workspace, client_for):
    integrator = MembershipFactory(workspace=workspace, role=Role.INTEGRATOR, can_manage_config=True).user
    assert client_for(integrator).post(RULES, _body(workspace), format="json").status_code == 201


def test_create__invalid_trigger__answers_400_with_the_field_and_message(workspace, as_role):
    body = _body(workspace, triggers=[{**CTR_DROP, "metric": "ctrr"}], max_step_pct="30")
    response = as_role(Role.MARKETER).post(RULES, body, format="json")
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert details["triggers[0].metric"][0].startswith("Unknown metric “ctrr”.")
    assert details["max_step_pct"] == ["Max step 30% is wider than the workspace guardrail of 20%."]


def test_create__in_another_workspace__answers_404(workspace, other_workspace, as_role):
    response = as_role(Role.MARKETER).post(RULES, _body(other_workspace), format="json")
    assert response.status_code == 404


def test_patch__triggers_replace_and_version_rises(workspace, as_role):
    client = as_role(Role.MARKETER)
    rule_id = client.post(RULES, _body(workspace), format="json").json()["id"]
    cpa = {"metric": "cpa", "kind": "threshold", "direction": "above", "threshold": "40"}
    response = client.patch(f"{RULES}{rule_id}/", {"triggers": [cpa]}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["version"] == 2
    assert [t["metric"] for t in response.json()["triggers"]] == ["cpa"]


@pytest.mark.parametrize(("role", "status"), [(Role.APPROVER, 200), (Role.MARKETER, 403)])
def test_activate__needs_the_activate_permission(workspace, as_role, role, status):
    rule_id = as_role(Role.MARKETER).post(RULES, _body(workspace), format="json").json()["id"]
    response = as_role(role).post(f"{RULES}{rule_id}/activate/", {"reason": "looks right"}, format="json")
    assert response.status_code == status
    expected = Rule.Status.ACTIVE if status == 200 else Rule.Status.DRAFT
    assert Rule.objects.get(pk=rule_id).status == expected


def test_pause_and_archive__by_approver(workspace, as_role):
    rule = active_rule(workspace, triggers=[trigger(metric="ctr", kind="threshold", threshold="0.01")])
    approver = as_role(Role.APPROVER)
    assert approver.post(f"{RULES}{rule.pk}/pause/", {}, format="json").json()["status"] == "paused"
    assert approver.post(f"{RULES}{rule.pk}/archive/", {}, format="json").json()["status"] == "archived"
    assert approver.post(f"{RULES}{rule.pk}/activate/", {}, format="json").status_code == 409


def test_rules_of_another_workspace__are_invisible(workspace, other_workspace, as_role):
    theirs = active_rule(other_workspace, triggers=[trigger(metric="ctr", kind="threshold", threshold="0.01")])
    client = as_role(Role.ADMIN)
    assert client.get(RULES).json()["count"] == 0
    assert client.get(f"{RULES}{theirs.pk}/").status_code == 404
    assert client.post(f"{RULES}{theirs.pk}/preview/").status_code == 404


@pytest.fixture
def firing_rule(workspace):
    # The API previews at the real "now": the data must be fresh then.
    now = timezone.now()
    window_end = floor_to_bucket(now, workspace.metric_bucket_minutes)
    campaign = fresh_campaign(workspace, metrics_received_at=now, metrics_latest_bucket=window_end - timedelta(hours=1))
    [segment] = segments(campaign, 1)
    add_buckets(segment, [{"impressions": 1000, "clicks": 30}], end=window_end)
    return active_rule(workspace, triggers=[trigger(metric="ctr", kind="threshold", direction="below",
                                                    threshold="0.04")])


@pytest.mark.parametrize("role", [Role.MARKETER, Role.APPROVER, Role.INTEGRATOR])
def test_preview__shows_decisions_and_capped_changes_and_writes_nothing(firing_rule, as_role, role):
    counts = (Evaluation.objects.count(), Change.objects.count(), AuditEvent.objects.count())
    response = as_role(role).post(f"{RULES}{firing_rule.pk}/preview/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["outcome"] == "fired"
    assert body["decisions"][0]["triggers"][0]["value"] == pytest.approx(0.03)
    [planned] = body["planned_changes"]
    assert (planned["field"], planned["old_value"], planned["capped_value"], planned["blocked"]) == (
        "bid", "1.0000", "0.9000", False)
    assert planned["cap_report"][0]["cap"]
    assert (Evaluation.objects.count(), Change.objects.count(), AuditEvent.objects.count()) == counts


def test_evaluations_and_changes__are_listed_read_only_with_filters(workspace, firing_rule, as_role):
    evaluate_rules(rule_ids=[firing_rule.pk], now=timezone.now(), source="schedule", actor=SYSTEM)
    client = as_role(Role.INTEGRATOR)
    evaluations = client.get("/api/v1/evaluations/", {"rule": firing_rule.pk}).json()
    assert [e["outcome"] for e in evaluations["results"]] == ["fired"]
    detail = client.get(f"/api/v1/evaluations/{evaluations['results'][0]['id']}/").json()
    assert detail["inputs"]["segments"][0]["decision"] == "fired"
    changes = client.get("/api/v1/changes/", {"status": "applied", "rule": firing_rule.pk}).json()
    assert [(c["target_type"], c["capped_value"]) for c in changes["results"]] == [("segment", "0.9000")]
    assert client.get("/api/v1/changes/", {"status": "pending"}).json()["count"] == 0
    assert client.post("/api/v1/changes/", {}, format="json").status_code == 405


def test_schema__documents_the_rules_endpoints_without_warnings(capsys, tmp_path):
    from django.core.management import call_command

    schema = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--file", str(schema))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "rules/" in line]
    assert warnings == []
    assert "/api/v1/rules/{id}/preview/:" in schema.read_text()
