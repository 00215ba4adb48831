"""Tasks, the ingestion receiver and the beat schedule (tasks run eagerly here; a real worker in
test_integration.py)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from campaigns.ingestion import metrics_ingest
from campaigns.models import MetricDay, Segment, StaleMetricDay
from rules.aggregates import floor_to_bucket
from rules.engine import evaluate_rules
from rules.models import Change, Evaluation
from rules.schedules import BEAT_TASKS, ROLLUP_BEAT_TASKS, ensure_beat_schedule
from rules.tasks import _chunks_by_workspace, evaluate_due_rules, evaluate_rules_chunk, refresh_metric_days
from tests.factories import CampaignFactory, WorkspaceFactory
from tests.rules.facts import NOW, SYSTEM, active_rule, add_buckets, fresh_campaign, segments, trigger

pytestmark = pytest.mark.django_db

CTR_BELOW_4_PCT = trigger(metric="ctr", kind="threshold", direction="below", threshold=Decimal("0.04"))
BAD = {"impressions": 1000, "clicks": 30, "spend": 10, "revenue": 10}


# --- beat schedule ---------------------------------------------------------------------------------

def test_beat_schedule__is_created_by_migrate_and_an_admin_edit_survives_the_next_migrate():
    [(name, task, minutes)] = BEAT_TASKS
    periodic = PeriodicTask.objects.get(name=name)
    assert (periodic.task, periodic.interval.every, periodic.interval.period) == (task, minutes, "minutes")

    periodic.enabled = False
    periodic.interval = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES)
    periodic.save()
    ensure_beat_schedule()

    periodic.refresh_from_db()
    assert PeriodicTask.objects.filter(name=name).count() == 1
    assert (periodic.enabled, periodic.interval.every) == (False, 5)


def test_rollup_schedule__is_created_by_migrate():
    [(name, task, minutes)] = ROLLUP_BEAT_TASKS
    periodic = PeriodicTask.objects.get(name=name)
    assert (periodic.task, periodic.interval.every) == (task, minutes)


def test_refresh_metric_days__rolls_up_the_stale_days_over_of_every_workspace(eager_tasks):
    for workspace in (WorkspaceFactory(), WorkspaceFactory()):
        [segment] = segments(fresh_campaign(workspace), 1)
        add_buckets(segment, [BAD], end=timezone.now() - timedelta(days=2))

    assert refresh_metric_days.delay().get() == 2
    assert MetricDay.objects.filter(hours=24).count() == 2 and not StaleMetricDay.objects.exists()
    assert refresh_metric_days.delay().get() == 0


# --- fan-out ----------------------------------------------------------------------------------------

def test_chunks_by_workspace__splits_a_large_workspace_and_never_mixes_workspaces():
    rules = [(1, 10), (2, 10), (3, 10), (4, 20), (5, 10)]
    assert _chunks_by_workspace(rules, 2) == [[1, 2], [3, 5], [4]]


def test_evaluate_due_rules__evaluates_each_due_rule_once_and_claims_it(eager_tasks, settings):
    settings.RULES_EVALUATION_CHUNK_SIZE = 2
    first, second = WorkspaceFactory(), WorkspaceFactory()
    rules = [active_rule(first, name=f"Rule {i}", triggers=[CTR_BELOW_4_PCT]) for i in range(3)]
    rules.append(active_rule(second, name="Other", triggers=[CTR_BELOW_4_PCT]))

    assert evaluate_due_rules.delay().get() == 4
    assert evaluate_due_rules.delay().get() == 0  # claimed: not due again within their interval

    assert sorted(Evaluation.objects.values_list("rule_id", flat=True)) == sorted(r.pk for r in rules)
    assert set(Evaluation.objects.values_list("source", flat=True)) == {Evaluation.Source.SCHEDULE}


def test_evaluate_rules_chunk__run_twice_for_one_window__changes_the_target_once(workspace):
    [segment] = segments(fresh_campaign(workspace), 1)
    add_buckets(segment, [BAD])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT], cooldown_minutes=0)

    for _ in range(2):
        evaluate_rules_chunk.run([rule.pk], NOW.isoformat(), Evaluation.Source.SCHEDULE)

    assert Evaluation.objects.filter(rule=rule).count() == 2
    assert Change.objects.get(rule=rule).status == Change.Status.APPLIED
    segment.refresh_from_db()
    assert segment.bid == Decimal("0.9000")


# --- event-driven: ingestion -> receiver -> task ------------------------------------------------------------

def test_metrics_ingested__evaluates_the_rules_whose_scope_was_touched(workspace, eager_tasks,
                                                                       django_capture_on_commit_callbacks):
    touched, untouched = CampaignFactory(workspace=workspace), CampaignFactory(workspace=workspace)
    [segment] = segments(touched, 1)
    rule = active_rule(workspace, name="Touched", triggers=[CTR_BELOW_4_PCT], campaigns=[touched])
    other = active_rule(workspace, name="Untouched", triggers=[CTR_BELOW_4_PCT], campaigns=[untouched])
    last_bucket = floor_to_bucket(timezone.now(), 60) - timedelta(hours=1)

    with django_capture_on_commit_callbacks(execute=True):
        metrics_ingest(actor=SYSTEM, workspace=workspace, rows=[
            {"segment": segment.pk, "bucket_start": last_bucket.isoformat(), **BAD}])

    evaluation = Evaluation.objects.get(rule=rule)
    assert (evaluation.source, evaluation.outcome) == (Evaluation.Source.EVENT, Evaluation.Outcome.FIRED)
    assert not Evaluation.objects.filter(rule=other).exists()
    assert Change.objects.get(rule=rule).status == Change.Status.APPLIED


# --- stale data never moves money ------------------------------------------------------------------------------

@pytest.mark.parametrize(("received_minutes_ago", "moved"), [(5, True), (5 * 60, False)])
def test_reallocation__moves_budget_only_on_fresh_data(workspace, received_minutes_ago, moved):
    campaign = fresh_campaign(workspace, metrics_received_at=NOW - timedelta(minutes=received_minutes_ago))
    weak, strong = segments(campaign, 2)
    add_buckets(weak, [BAD])
    add_buckets(strong, [{"impressions": 1000, "clicks": 80, "spend": 10, "revenue": 50}])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT], action="reallocate_budget",
                       action_value=Decimal("10"))

    [result] = evaluate_rules(rule_ids=[rule.pk], now=NOW, source=Evaluation.Source.SCHEDULE, actor=SYSTEM)

    budgets = dict(Segment.objects.filter(campaign=campaign).values_list("pk", "daily_budget"))
    if moved:
        assert result.outcome == Evaluation.Outcome.FIRED
        assert budgets == {weak.pk: Decimal("90.0000"), strong.pk: Decimal("110.0000")}
    else:
        assert result.outcome == Evaluation.Outcome.SKIPPED_STALE
        assert not Change.objects.exists()
        assert budgets == {weak.pk: Decimal("100.0000"), strong.pk: Decimal("100.0000")}
