"""Holdout (incrementality): the held-out segment is left alone by every rule while the experiment runs."""

from decimal import Decimal

import pytest

from audit.actors import Actor
from campaigns.holdouts import held_out_segment_ids
from campaigns.models import Segment
from experiments.services import experiment_approve, experiment_create, experiment_start, experiment_stop
from rules.engine import evaluate_rules
from rules.models import Change, Evaluation
from tests.experiments.builders import arms, people
from tests.rules.facts import NOW, SYSTEM, active_rule, add_buckets, fresh_campaign, segments, trigger

pytestmark = pytest.mark.django_db

BAD = {"impressions": 1000, "clicks": 30}
CTR_BELOW_4_PCT = trigger(metric="ctr", kind="threshold", direction="below", threshold=Decimal("0.04"))


def _holdout(workspace, campaign, held, treated):
    marketer, approver = people(workspace)
    experiment = experiment_create(actor=Actor.for_user(marketer), workspace=workspace, campaign=campaign,
                                   variants=arms(held, treated), name="Do the rules pay?", kind="holdout",
                                   primary_metric="ctr")
    experiment_approve(actor=Actor.for_user(approver), experiment=experiment, now=NOW)
    return experiment_start(actor=Actor.for_user(approver), experiment=experiment, now=NOW), approver


def test_firing_rule__leaves_the_held_out_segment_untouched(workspace):
    campaign = fresh_campaign(workspace)
    held, treated = segments(campaign, 2)
    for segment in (held, treated):
        add_buckets(segment, [BAD])
    _holdout(workspace, campaign, held, treated)
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT], action="budget_pct", action_value=Decimal("-10"))

    [result] = evaluate_rules(rule_ids=[rule.pk], now=NOW, source=Evaluation.Source.SCHEDULE, actor=SYSTEM)

    assert result.fired_segment_ids == [treated.pk]
    assert list(Change.objects.values_list("segment_id", flat=True)) == [treated.pk]
    assert Segment.objects.get(pk=held.pk).daily_budget == Decimal("100.0000")
    assert Segment.objects.get(pk=treated.pk).daily_budget == Decimal("90.0000")


def test_reallocation__never_gives_budget_to_a_held_out_segment(workspace):
    campaign = fresh_campaign(workspace)
    weak, held, receiver = segments(campaign, 3)
    add_buckets(weak, [BAD])
    strong = {"impressions": 1000, "clicks": 80, "spend": 10, "revenue": 50}
    add_buckets(held, [{**strong, "revenue": 90}])  # the best, but held out
    add_buckets(receiver, [strong])
    _holdout(workspace, campaign, held, weak)
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT], action="reallocate_budget",
                       action_value=Decimal("10"), action_params={"receiver_count": 2})

    evaluate_rules(rule_ids=[rule.pk], now=NOW, source=Evaluation.Source.SCHEDULE, actor=SYSTEM)

    budgets = dict(Segment.objects.filter(campaign=campaign).values_list("pk", "daily_budget"))
    assert budgets == {weak.pk: Decimal("90.0000"), held.pk: Decimal("100.0000"), receiver.pk: Decimal("110.0000")}


def test_stopped_holdout__the_segment_rejoins_the_rules(workspace):
    campaign = fresh_campaign(workspace)
    held, treated = segments(campaign, 2)
    for segment in (held, treated):
        add_buckets(segment, [BAD])
    experiment, approver = _holdout(workspace, campaign, held, treated)
    assert held_out_segment_ids(workspace_id=workspace.pk) == {held.pk}

    experiment_stop(actor=Actor.for_user(approver), experiment=experiment, now=NOW)
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT], action="budget_pct", action_value=Decimal("-10"))
    [result] = evaluate_rules(rule_ids=[rule.pk], now=NOW, source=Evaluation.Source.SCHEDULE, actor=SYSTEM)

    assert held_out_segment_ids(workspace_id=workspace.pk) == set()
    assert sorted(result.fired_segment_ids) == sorted([held.pk, treated.pk])
