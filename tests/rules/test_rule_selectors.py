from datetime import timedelta

import pytest

from campaigns.models import Channel
from rules.models import Rule
from rules.selectors import rules_due, rules_touching
from tests.factories import CampaignFactory
from tests.rules.facts import NOW, active_rule, trigger

pytestmark = pytest.mark.django_db

CTR = trigger(metric="ctr", kind="threshold", direction="below", threshold="0.01")


def test_rules_due__never_evaluated_or_interval_elapsed(workspace):
    never = active_rule(workspace, triggers=[CTR], name="never")
    due = active_rule(workspace, triggers=[CTR], name="due", evaluation_interval_minutes=15)
    recent = active_rule(workspace, triggers=[CTR], name="recent", evaluation_interval_minutes=60)
    paused = active_rule(workspace, triggers=[CTR], name="paused")
    Rule.objects.filter(pk=due.pk).update(last_evaluated_at=NOW - timedelta(minutes=15))
    Rule.objects.filter(pk=recent.pk).update(last_evaluated_at=NOW - timedelta(minutes=30))
    Rule.objects.filter(pk=paused.pk).update(status=Rule.Status.PAUSED)
    assert set(rules_due(now=NOW)) == {never, due}


def test_rules_touching__scope_by_campaigns_and_channel(workspace, other_workspace):
    search = CampaignFactory(workspace=workspace, channel=Channel.SEARCH)
    social = CampaignFactory(workspace=workspace, channel=Channel.SOCIAL)
    everything = active_rule(workspace, triggers=[CTR], name="everything")
    on_search = active_rule(workspace, triggers=[CTR], name="search only", campaigns=[search])
    social_channel = active_rule(workspace, triggers=[CTR], name="social channel", channel=Channel.SOCIAL)
    active_rule(other_workspace, triggers=[CTR], name="elsewhere")
    assert set(rules_touching(workspace_id=workspace.pk, campaign_ids=[search.pk])) == {everything, on_search}
    assert set(rules_touching(workspace_id=workspace.pk, campaign_ids=[social.pk])) == {everything, social_channel}
