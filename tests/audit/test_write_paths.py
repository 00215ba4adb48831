"""Every write path records a version: admin, API (session and token), Celery worker, management
command, and a service called from a shell (tests/audit/test_versions.py covers each model that way)."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.template.loader import render_to_string
from django.test import Client

from accounts import services as account_services
from accounts.models import Workspace
from audit.selectors import object_history, version_fields, version_info
from campaigns.models import Segment
from rules import services as rule_services
from rules.decisions import evaluation_segment_rows
from rules.models import Change, Evaluation
from rules.tasks import evaluate_rules_chunk
from rulesplatform.change_trail import change_trail
from rulesplatform.versioning import rule_version_used
from tests.factories import CampaignFactory
from tests.rules.facts import NOW, active_rule, add_buckets, fresh_campaign, segments, trigger

pytestmark = pytest.mark.django_db


def _history(obj):
    return list(object_history(type(obj), obj.pk, workspace_ids=None))


def test_admin_edit__records_a_version_by_the_signed_in_person(admin_user, workspace):
    client = Client()
    client.force_login(admin_user)
    form = {
        "name": workspace.name, "currency": "USD", "time_zone": workspace.time_zone,
        "metric_bucket_minutes": 60, "freshness_limit_minutes": 180, "guardrail_max_step_pct": "15",
        "guardrail_max_change_per_hour_pct": "10", "guardrail_max_actions_per_rule_per_day": 24,
        "guardrail_max_channel_share_pct": "60",
    }

    response = client.post(f"/admin/accounts/workspace/{workspace.pk}/change/", form)

    assert response.status_code == 302
    [version] = _history(workspace)
    assert version_fields(version)["guardrail_max_step_pct"] == Decimal("15")
    assert (version_info(version).actor_kind, version_info(version).actor_label) == ("user", admin_user.username)


def test_api_edit_with_a_token__records_a_version_by_the_token(admin_user, admin_actor, workspace):
    campaign = CampaignFactory(workspace=workspace)
    _token, key = account_services.api_token_create(actor=admin_actor, workspace=workspace, user=admin_user,
                                                    name="ci")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    response = client.patch(f"/api/v1/campaigns/{campaign.pk}/", {"daily_budget": "1200"},
                            content_type="application/json", HTTP_X_REQUEST_ID="req-42")

    assert response.status_code == 200, response.content
    [version] = _history(campaign)
    info = version_info(version)
    assert (info.actor_kind, info.actor_label, info.request_id) == ("token", f"token:{_token.prefix}", "req-42")


def test_celery_worker__applying_a_rules_change__records_a_version_of_the_target(workspace):
    [segment] = segments(fresh_campaign(workspace), 1, bid=Decimal("1.00"))
    add_buckets(segment, [{"spend": 90, "conversions": 3}])
    rule = active_rule(workspace, triggers=[trigger(metric="cpa", kind="threshold", direction="above", threshold=25)])

    evaluate_rules_chunk.apply(args=[[rule.pk], NOW.isoformat(), Evaluation.Source.SCHEDULE]).get()

    segment = Segment.objects.get(pk=segment.pk)
    assert segment.bid < Decimal("1.00")
    [version] = _history(segment)
    info = version_info(version)
    assert (info.actor_kind, info.actor_label, info.action) == ("worker", "worker:evaluate_rules_chunk",
                                                                "change.apply")


def test_management_command__records_versions_by_the_system():
    call_command("load_demo", days=1, stdout=StringIO())

    workspace = Workspace.objects.get(name="Demo Retail")
    [version] = _history(workspace)
    assert (version_info(version).actor_kind, version_info(version).action) == ("system", "workspace.create")


def test_evaluation_and_its_change__reference_the_exact_rule_version_used(workspace, admin_actor):
    [segment] = segments(fresh_campaign(workspace), 1, bid=Decimal("1.00"))
    add_buckets(segment, [{"spend": 90, "conversions": 3}])
    rule = active_rule(workspace, triggers=[trigger(metric="cpa", kind="threshold", direction="above", threshold=25)])
    evaluate_rules_chunk.apply(args=[[rule.pk], NOW.isoformat(), Evaluation.Source.SCHEDULE]).get()
    rule_services.rule_pause(actor=admin_actor, rule=rule)
    rule_services.rule_update(actor=admin_actor, rule=rule, triggers=[
        trigger(metric="cpa", kind="threshold", direction="above", threshold=99)])

    evaluation = Evaluation.objects.get(rule=rule)
    change = Change.objects.get(rule=rule)
    used = rule_version_used(evaluation)

    assert version_fields(used)["version"] == evaluation.rule_version == 1
    assert rule_version_used(change) == used
    assert used != _history(rule)[0]


def test_change_trail__shows_rule_version_evaluation_inputs_and_events(workspace):
    [segment] = segments(fresh_campaign(workspace), 1, bid=Decimal("1.00"))
    add_buckets(segment, [{"spend": 90, "conversions": 3}])
    rule = active_rule(workspace, triggers=[trigger(metric="cpa", kind="threshold", direction="above", threshold=25)])
    evaluate_rules_chunk.apply(args=[[rule.pk], NOW.isoformat(), Evaluation.Source.SCHEDULE]).get()
    change = Change.objects.get(rule=rule)

    trail = change_trail(change)

    assert trail.rule_settings["version"] == change.rule_version
    assert [t["metric"] for t in trail.rule_triggers] == ["cpa"]
    rows = evaluation_segment_rows(change.evaluation)
    inputs = {key: value for key, value in change.evaluation.inputs.items() if key != "numbers_format"}
    assert trail.evaluation_inputs == {**inputs, "segments": rows}  # without the key to the stored bytes
    assert trail.evaluation_inputs["segments"][0]["triggers"][0]["value"] == 30.0
    assert [e.action for e in trail.events][-1] == "change.apply"
    assert {e.action for e in trail.events} >= {"change.propose", "change.apply"}
    html = render_to_string("admin/audit/change_trail.html", {"trail": trail})
    assert "Version 1 of" in html and "change.apply" in html
