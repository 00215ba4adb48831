"""The rules admin: triggers inline, messages a marketer understands, services behind every write,
the dry-run page and the status buttons."""

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.roles import Role
from audit.models import AuditEvent
from rules.engine import evaluate_rules
from rules.models import Change, Evaluation, Rule
from tests.rules.facts import SYSTEM, active_rule, trigger
from tests.rules.test_rule_apis import firing_rule  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:rules_rule_add")


@pytest.fixture
def browser(member):
    def login(role):
        client = Client()
        client.force_login(member(role))
        return client

    return login


def _form(workspace, triggers=None, **fields):
    data = {
        "workspace": workspace.pk, "name": "Mobile CTR drop", "description": "", "channel": "",
        "segment_filter": '{"device": "mobile"}', "match": "all", "evaluation_interval_minutes": 15,
        "active_hours_start": "", "active_hours_end": "", "action": "bid_pct", "action_value": "-10",
        "action_params": "{}", "max_step_pct": "10", "max_change_per_window_pct": "10", "cap_window_minutes": 60,
        "cooldown_minutes": 60, "max_actions_per_day": 10, "value_floor": "", "value_ceiling": "",
        "max_channel_share_pct": "",
    }
    data.update(fields)
    triggers = triggers if triggers is not None else [{}]
    data.update({"triggers-TOTAL_FORMS": len(triggers), "triggers-INITIAL_FORMS": 0, "triggers-MIN_NUM_FORMS": 1,
                 "triggers-MAX_NUM_FORMS": 1000})
    for i, overrides in enumerate(triggers):
        trigger = {"metric": "ctr", "kind": "relative_change", "direction": "below", "threshold": "20",
                   "window_minutes": 60, "baseline_minutes": 1440, "confidence": "0.95", "k_sigma": "3",
                   "consecutive_windows": 1, "min_sample": 100, **overrides}
        data.update({f"triggers-{i}-{name}": value for name, value in trigger.items()})
    return data


def test_add__valid__creates_the_rule_with_its_triggers_through_the_service(workspace, browser):
    response = browser(Role.MARKETER).post(ADD_URL, _form(workspace))
    assert response.status_code == 302, response.context["errors"] if response.context else response
    rule = Rule.objects.get()
    assert (rule.status, rule.version, rule.triggers.count()) == ("draft", 1, 1)
    assert AuditEvent.objects.filter(action="rule.create", subject_id=str(rule.pk)).exists()


@pytest.mark.parametrize(("triggers", "fields", "message"), [
    ([{"metric": "ctrr"}], {}, "Unknown metric “ctrr”: choose one from the list."),
    ([{"kind": "threshold", "threshold": ""}], {}, "A trigger on an absolute threshold needs a threshold."),
    ([{"kind": "threshold", "threshold": "1.5"}], {}, "Click-through rate is a rate between 0 and 1: write 0.015"),
    ([{}], {"max_step_pct": "30"}, "Max step 30% is wider than the workspace guardrail of 20%."),
    ([{}], {"action_value": ""}, "“Change bid by %” needs a value."),
])
def test_add__invalid__shows_a_message_a_marketer_understands(workspace, browser, triggers, fields, message):
    response = browser(Role.MARKETER).post(ADD_URL, _form(workspace, triggers, **fields))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Rule.objects.exists()


def test_change__saves_a_new_version(workspace, browser):
    client = browser(Role.MARKETER)
    client.post(ADD_URL, _form(workspace))
    rule = Rule.objects.get()
    data = _form(workspace, [{"threshold": "30"}], name="Mobile CTR drop 30%")
    data.pop("workspace")
    response = client.post(reverse("admin:rules_rule_change", args=[rule.pk]), data)
    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.name, rule.version) == ("Mobile CTR drop 30%", 2)
    assert [t.threshold for t in rule.triggers.all()] == [30]


def test_preview_page__shows_the_per_segment_table_and_writes_nothing(firing_rule, browser):  # noqa: F811
    counts = (Evaluation.objects.count(), Change.objects.count(), AuditEvent.objects.count())
    response = browser(Role.MARKETER).get(reverse("admin:rules_rule_preview", args=[firing_rule.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="segment-decisions"' in page and "fired" in page
    assert "1.0000 → 0.9000" in page and "max_step" in page
    assert (Evaluation.objects.count(), Change.objects.count(), AuditEvent.objects.count()) == counts


@pytest.mark.parametrize(("role", "status"), [(Role.APPROVER, "active"), (Role.MARKETER, "draft")])
def test_activate_button__only_for_those_who_may_activate(workspace, browser, role, status):
    browser(Role.MARKETER).post(ADD_URL, _form(workspace))
    rule = Rule.objects.get()
    client = browser(role)
    page = client.get(reverse("admin:rules_rule_change", args=[rule.pk])).content.decode()
    assert (reverse("admin:rules_rule_status", args=[rule.pk, "activate"]) in page) == (role == Role.APPROVER)
    client.post(reverse("admin:rules_rule_status", args=[rule.pk, "activate"]))
    rule.refresh_from_db()
    assert rule.status == status


def test_rule_of_another_workspace__is_not_reachable(other_workspace, browser):
    theirs = active_rule(other_workspace, triggers=[trigger(metric="ctr", kind="threshold", threshold="0.01")])
    client = browser(Role.ADMIN)
    assert client.get(reverse("admin:rules_rule_preview", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("admin:rules_rule_changelist")).context["cl"].result_count == 0


def test_evaluation_and_change_pages__are_read_only_records(firing_rule, browser):  # noqa: F811
    evaluate_rules(rule_ids=[firing_rule.pk], now=timezone.now(), source="schedule", actor=SYSTEM)
    client = browser(Role.MARKETER)
    evaluation, change = Evaluation.objects.get(), Change.objects.get()
    page = client.get(reverse("admin:rules_evaluation_change", args=[evaluation.pk])).content.decode()
    assert 'id="segment-decisions"' in page and "Click-through rate 3.00%" in page
    page = client.get(reverse("admin:rules_change_change", args=[change.pk])).content.decode()
    assert 'class="cap-report"' in page and "max_step" in page
    assert client.get(reverse("admin:rules_change_add")).status_code == 403
    assert client.get(reverse("admin:rules_change_changelist"), {"status": "applied"}).status_code == 200
