"""The rule builder in the admin, for people who do not read code: metric picker, help, summary,
errors on their fields, and only the buttons one may use."""

import re

import pytest
from django.urls import reverse

from accounts.roles import Role
from rules.models import Rule
from tests.rules.facts import active_rule, trigger
from tests.rules.test_rule_admin import _form

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:rules_rule_add")
LIST_URL = reverse("admin:rules_rule_changelist")


def _saved_rule(workspace, client) -> Rule:
    response = client.post(ADD_URL, _form(workspace, [{}, {"metric": "cpa", "kind": "threshold",
                                                           "direction": "above", "threshold": "25"}]))
    assert response.status_code == 302
    return Rule.objects.get()


def test_add_page__metric_picker_groups_rates_and_ratios_and_fields_explain_themselves(workspace, browser_as):
    page = browser_as(Role.MARKETER).get(ADD_URL).content.decode()
    rates = re.search(r'<optgroup label="Rates \(between 0 and 1\)">(.*?)</optgroup>', page, re.S).group(1)
    ratios = re.search(r'<optgroup label="Ratios">(.*?)</optgroup>', page, re.S).group(1)
    assert "CTR — Click-through rate" in rates and "Bounce rate" in rates and "CPA" not in rates
    assert "CPA — Cost per acquisition" in ratios and "ROAS — Return on ad spend" in ratios
    for help_text in ("Control limit: the width of the band in standard deviations",
                      "The trigger must hold this many windows in a row",
                      "Change by %: e.g. -10 lowers by 10%"):
        assert help_text in page
    assert f'<option value="{workspace.pk}" selected>' in page  # their only workspace, chosen for them


def test_add_page__invalid_trigger__shows_the_error_next_to_its_field(workspace, browser_as):
    response = browser_as(Role.MARKETER).post(ADD_URL, _form(workspace, [{"kind": "threshold", "threshold": "1.5"}]))
    page = response.content.decode()
    # Django renders a field's errors inside that field's box: the message sits beside "threshold".
    box = re.search(r'<div class="flex-container fieldBox field-threshold errors">.*?</div>', page, re.S)
    errors = page[page.rfind("<ul", 0, box.start()):box.start()]
    assert "Click-through rate is a rate between 0 and 1: write 0.015 for 1.5%." in errors
    assert not Rule.objects.exists()


def test_rule_page_and_list__show_the_rule_as_a_sentence(workspace, browser_as):
    client = browser_as(Role.MARKETER)
    rule = _saved_rule(workspace, client)
    sentence = ("If CTR of any mobile segment falls by 20% or more over the last hour vs the previous day and its "
                "CPA is above 25.00 over the last hour, lower its bid by 10%, at most 10% per hour.")
    assert sentence in client.get(reverse("admin:rules_rule_change", args=[rule.pk])).content.decode()
    assert sentence in client.get(LIST_URL).content.decode()
    assert sentence in client.get(reverse("admin:rules_rule_preview", args=[rule.pk])).content.decode()


@pytest.mark.parametrize(("role", "may_activate"), [(Role.MARKETER, False), (Role.APPROVER, True)])
def test_status_buttons_and_actions__only_for_those_who_may_use_them(workspace, browser_as, role, may_activate):
    rule = active_rule(workspace, triggers=[trigger(metric="ctr", kind="threshold", threshold="0.01")])
    client = browser_as(role)
    page = client.get(reverse("admin:rules_rule_change", args=[rule.pk])).content.decode()
    assert (reverse("admin:rules_rule_status", args=[rule.pk, "pause"]) in page) is may_activate
    action_form = client.get(LIST_URL).context["action_form"]  # None when no action is left
    actions = [choice for choice, _ in action_form.fields["action"].choices] if action_form else []
    assert ("pause_selected" in actions) is may_activate
    assert "Preview (dry run)" in page  # both may preview


def test_status_refused_by_the_server__even_when_posted_directly(workspace, browser_as):
    rule = active_rule(workspace, triggers=[trigger(metric="ctr", kind="threshold", threshold="0.01")])
    browser_as(Role.MARKETER).post(LIST_URL, {"action": "pause_selected", "_selected_action": [rule.pk]})
    browser_as(Role.MARKETER).post(reverse("admin:rules_rule_status", args=[rule.pk, "pause"]))
    rule.refresh_from_db()
    assert rule.status == Rule.Status.ACTIVE
