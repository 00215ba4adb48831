"""The engine around the triggers: windows, guards, persistence, the pipeline, and its query budget."""

import gc
import json
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from rules import engine
from rules.decisions import OUTCOMES, evaluation_segment_rows
from rules.engine import _combine, evaluate_rules
from rules.models import Change, Evaluation, Rule
from rules.triggers import Status
from tests.factories import WorkspaceFactory
from tests.rules.facts import (
    BAD,
    CTR_BELOW_4_PCT,
    GOOD,
    NOW,
    SYSTEM,
    WINDOW_END,
    active_rule,
    add_buckets,
    fresh_campaign,
    segments,
    trigger,
)

pytestmark = pytest.mark.django_db



def _run(rule, *, now=NOW, dry_run=False):
    [result] = evaluate_rules(rule_ids=[rule.pk], now=now, source="schedule", actor=SYSTEM, dry_run=dry_run)
    return result


def test_evaluate__fired__records_evaluation_and_applies_the_capped_change(workspace):
    [segment] = segments(fresh_campaign(workspace), 1)
    add_buckets(segment, [BAD])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT])

    result = _run(rule)

    evaluation = Evaluation.objects.get(rule=rule)
    assert (evaluation.outcome, evaluation.rule_version, evaluation.window_end) == ("fired", rule.version, WINDOW_END)
    assert evaluation.summary.startswith("Fired for 1 of 1 segments")
    rows = evaluation_segment_rows(evaluation)
    assert rows[0]["triggers"][0]["value"] == pytest.approx(0.03)
    json.dumps([evaluation.inputs, rows], allow_nan=False)  # JSON-safe: no NaN anywhere
    rule.refresh_from_db()
    assert rule.last_evaluated_at == NOW
    change = Change.objects.get(rule=rule)
    assert (change.segment_id, change.field, change.capped_value, change.evaluation_id) == (
        segment.pk, "bid", "0.9000", evaluation.pk)
    assert result.evaluation == evaluation and result.fired_segment_ids == [segment.pk]


def test_evaluate__window__ends_at_the_last_whole_bucket(workspace):
    [segment] = segments(fresh_campaign(workspace), 1)
    add_buckets(segment, [BAD])
    add_buckets(segment, [GOOD], end=WINDOW_END + timedelta(hours=1))  # the 12:00 bucket, still filling
    result = _run(active_rule(workspace, triggers=[CTR_BELOW_4_PCT]), dry_run=True)
    row = result.decisions[0]["triggers"][0]
    assert result.window_end == WINDOW_END
    assert (row["numerator"], row["denominator"]) == (30.0, 1000.0)


def test_evaluate__empty_buckets_and_undefined_statistics__are_stored_as_null(workspace):
    [segment] = segments(fresh_campaign(workspace), 1)
    rule = active_rule(workspace, triggers=[trigger(metric="cpa", kind="significant_change", window_minutes=120,
                                                    baseline_minutes=240)])
    _run(rule)
    row = evaluation_segment_rows(Evaluation.objects.get(rule=rule))[0]["triggers"][0]
    assert row["value"] is None and row["p_value"] is None and row["status"] == "insufficient_data"


@pytest.mark.parametrize(("history", "decision", "held"), [
    ([GOOD, BAD, BAD, BAD], "fired", 3),
    ([BAD, GOOD, BAD, BAD], "not_fired", 2),
])
def test_consecutive_windows__condition_must_hold_in_each(workspace, history, decision, held):
    [segment] = segments(fresh_campaign(workspace), 1)
    add_buckets(segment, history)
    rule = active_rule(workspace, triggers=[{**CTR_BELOW_4_PCT, "consecutive_windows": 3}])
    result = _run(rule, dry_run=True)
    row = result.decisions[0]["triggers"][0]
    assert result.decisions[0]["decision"] == decision
    assert row["consecutive_count"] == held
    assert [w["window_end"] for w in row["earlier_windows"]] == [
        (WINDOW_END - timedelta(hours=1)).isoformat(), (WINDOW_END - timedelta(hours=2)).isoformat()]


def test_min_sample__below_it__is_insufficient_data_and_changes_nothing(workspace):
    [segment] = segments(fresh_campaign(workspace), 1)
    add_buckets(segment, [{"impressions": 99, "clicks": 1}])
    rule = active_rule(workspace, triggers=[{**CTR_BELOW_4_PCT, "min_sample": 100}])
    result = _run(rule)
    assert result.outcome == Evaluation.Outcome.INSUFFICIENT_DATA
    assert "99 impressions in the window (minimum 100)" in result.decisions[0]["reason"]
    assert not Change.objects.exists()


@pytest.mark.parametrize(("utc_hour", "outcome"), [(12, "skipped_inactive_hours"), (13, "fired")])
def test_active_hours__are_read_in_the_workspace_time_zone(utc_hour, outcome):
    # 10 March 2026, New York is on daylight time (UTC-4): 12:07 UTC is 08:07 there, 13:07 is 09:07.
    workspace = WorkspaceFactory(time_zone="America/New_York")
    now = NOW.replace(hour=utc_hour)
    [segment] = segments(fresh_campaign(workspace, metrics_received_at=now), 1)
    add_buckets(segment, [BAD], end=now.replace(minute=0))
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT], active_hours_start=9, active_hours_end=17)
    result = _run(rule, now=now)
    assert result.outcome == outcome
    assert Evaluation.objects.get(rule=rule).outcome == outcome
    if outcome == "skipped_inactive_hours":
        assert result.summary == ("Skipped: outside active hours (09:00–17:00 America/New_York); "
                                  "it was 08:07 there.")


@pytest.mark.parametrize("campaign_fields", [
    {"metrics_latest_bucket": WINDOW_END - timedelta(hours=5)},
    {"metrics_received_at": NOW - timedelta(hours=4)},
    {"data_quality_flag": "clicks above impressions in 3 rows"},
    {"metrics_received_at": None, "metrics_latest_bucket": None},
])
def test_stale_or_flagged_data__is_skipped_and_moves_no_money(workspace, campaign_fields):
    [stale] = segments(fresh_campaign(workspace, **campaign_fields), 1)
    [fresh] = segments(fresh_campaign(workspace), 1)
    for segment in (stale, fresh):
        add_buckets(segment, [BAD])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT])

    result = _run(rule)

    decisions = {d["segment_id"]: d for d in result.decisions}
    assert decisions[stale.pk]["decision"] == "skipped_stale"
    assert decisions[stale.pk]["reason"].startswith("Skipped: stale data")
    assert list(Change.objects.values_list("segment_id", flat=True)) == [fresh.pk]


def test_stale_data__everywhere__records_skipped_stale(workspace):
    [segment] = segments(fresh_campaign(workspace, data_quality_flag="gap in the feed"), 1)
    add_buckets(segment, [BAD])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT])
    assert _run(rule).outcome == Evaluation.Outcome.SKIPPED_STALE
    assert Evaluation.objects.get(rule=rule).outcome == "skipped_stale"
    assert not Change.objects.exists()


def test_match_any__fires_when_one_trigger_holds(workspace):
    [segment] = segments(fresh_campaign(workspace), 1)
    add_buckets(segment, [BAD])
    never = trigger(metric="ctr", kind="threshold", direction="above", threshold=Decimal("0.5"))
    rule_all = active_rule(workspace, triggers=[CTR_BELOW_4_PCT, never], name="all")
    rule_any = active_rule(workspace, triggers=[CTR_BELOW_4_PCT, never], name="any", match=Rule.Match.ANY)
    results = evaluate_rules(rule_ids=[rule_all.pk, rule_any.pk], now=NOW, source="manual", actor=SYSTEM,
                             dry_run=True)
    assert {r.rule.name: r.outcome for r in results} == {"all": "not_fired", "any": "fired"}


@pytest.mark.parametrize("match", [Rule.Match.ALL, Rule.Match.ANY])
def test_match__one_trigger__its_verdict_is_the_decision(match):
    statuses = np.array([[Status.PASSED], [Status.FAILED], [Status.INSUFFICIENT]])
    assert [OUTCOMES[code] for code in _combine(statuses, match)] == [
        Evaluation.Outcome.FIRED, Evaluation.Outcome.NOT_FIRED, Evaluation.Outcome.INSUFFICIENT_DATA]


def test_fired__every_change_capped_to_nothing__is_blocked_by_cap(workspace):
    [segment] = segments(fresh_campaign(workspace), 1, bid=Decimal("0.10"), bid_floor=Decimal("0.10"))
    add_buckets(segment, [BAD])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT])
    result = _run(rule)
    assert result.outcome == Evaluation.Outcome.BLOCKED_BY_CAP
    assert Evaluation.objects.get(rule=rule).summary.endswith("every proposed change was blocked by a cap.")
    assert Change.objects.get().status == Change.Status.BLOCKED


def test_fired__past_the_daily_action_limit__keeps_the_blocked_changes_in_the_evaluation(workspace):
    campaign = fresh_campaign(workspace)
    fired = segments(campaign, 3)
    for segment in fired:
        add_buckets(segment, [BAD])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT], max_actions_per_day=1)

    result = _run(rule)

    assert [p.blocked for p in result.planned_changes] == [False, True, True]
    assert Change.objects.filter(rule=rule).count() == 1  # one applied; no row per segment past the limit
    blocks = Evaluation.objects.get(rule=rule).inputs["daily_limit_blocks"]
    assert blocks["cap"]["cap"] == "actions_per_day" and blocks["cap"]["bound"]
    assert [c["target"] for c in blocks["changes"]] == [f"segment:{s.pk}" for s in fired[1:]]
    assert all(c["bound_caps"] == ["actions_per_day"] for c in blocks["changes"])
    assert result.outcome == Evaluation.Outcome.FIRED


def test_preview__past_the_daily_action_limit__shows_the_changes_the_run_keeps_in_its_evaluation(workspace):
    fired = segments(fresh_campaign(workspace), 3)
    for segment in fired:
        add_buckets(segment, [BAD])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT], max_actions_per_day=1)

    preview, result = _run(rule, dry_run=True), _run(rule)

    def shown(planned):
        return [(p.target, p.field, p.old_value, p.requested_value, p.capped_value, p.cap_report, p.blocked,
                 p.over_daily_limit) for p in planned]
    assert shown(preview.planned_changes) == shown(result.planned_changes)
    assert [p.over_daily_limit for p in preview.planned_changes] == [False, True, True]


def test_fired__every_change_past_the_daily_action_limit__is_blocked_by_cap(workspace):
    [segment] = segments(fresh_campaign(workspace), 1)
    add_buckets(segment, [BAD])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT], max_actions_per_day=0)

    assert _run(rule).outcome == Evaluation.Outcome.BLOCKED_BY_CAP
    evaluation = Evaluation.objects.get(rule=rule)
    assert evaluation.outcome == Evaluation.Outcome.BLOCKED_BY_CAP and not Change.objects.exists()
    assert [c["target"] for c in evaluation.inputs["daily_limit_blocks"]["changes"]] == [f"segment:{segment.pk}"]


def test_alert_rule__fires_through_the_pipeline_without_a_change(workspace):
    [segment] = segments(fresh_campaign(workspace), 1)
    add_buckets(segment, [BAD])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT], action=Rule.Action.ALERT)
    assert _run(rule).outcome == Evaluation.Outcome.FIRED
    assert not Change.objects.exists()
    assert AuditEvent.objects.filter(action="rule.alert").count() == 1


def test_paused_rule__is_not_evaluated_outside_a_dry_run(workspace):
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT])
    Rule.objects.filter(pk=rule.pk).update(status=Rule.Status.PAUSED)
    assert evaluate_rules(rule_ids=[rule.pk], now=NOW, source="schedule", actor=SYSTEM) == []
    assert not Evaluation.objects.exists()


def test_dry_run__writes_nothing(workspace):
    [segment] = segments(fresh_campaign(workspace), 1)
    add_buckets(segment, [BAD])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT])
    counts = (Evaluation.objects.count(), Change.objects.count(), AuditEvent.objects.count())

    result = _run(rule, dry_run=True)

    assert result.outcome == "fired" and result.evaluation is None
    assert [p.capped_value for p in result.planned_changes] == ["0.9000"]
    assert (Evaluation.objects.count(), Change.objects.count(), AuditEvent.objects.count()) == counts
    rule.refresh_from_db()
    assert rule.last_evaluated_at is None


def _queries_for(workspace, rule, count: int, *, dry_run: bool) -> int:
    campaign = fresh_campaign(workspace)
    for segment in segments(campaign, count):
        add_buckets(segment, [GOOD if not dry_run else BAD] * 4)
    with CaptureQueriesContext(connection) as queries:
        _run(rule, dry_run=dry_run)
    return len(queries)


@pytest.mark.parametrize("dry_run", [False, True], ids=["not-fired", "fired-dry-run"])
def test_query_count__does_not_grow_with_the_number_of_segments(django_assert_max_num_queries, dry_run):
    small, large = WorkspaceFactory(), WorkspaceFactory()
    baseline = _queries_for(small, active_rule(small, triggers=[CTR_BELOW_4_PCT]), 3, dry_run=dry_run)
    large_rule = active_rule(large, triggers=[CTR_BELOW_4_PCT])
    campaign = fresh_campaign(large)
    for segment in segments(campaign, 40):
        add_buckets(segment, [GOOD if not dry_run else BAD] * 4)
    with django_assert_max_num_queries(baseline):
        _run(large_rule, dry_run=dry_run)


def test_query_count__does_not_grow_with_the_number_of_scopes(django_assert_max_num_queries):
    one_scope, many_scopes = WorkspaceFactory(), WorkspaceFactory()
    for segment in segments(fresh_campaign(one_scope), 3):
        add_buckets(segment, [GOOD] * 4)
    one_rule = active_rule(one_scope, triggers=[CTR_BELOW_4_PCT])
    with CaptureQueriesContext(connection) as baseline:
        _run(one_rule, dry_run=True)
    search, social = fresh_campaign(many_scopes, channel="search"), fresh_campaign(many_scopes, channel="social")
    for campaign in (search, social):
        for device in ("mobile", "mobile", "desktop", "desktop"):
            add_buckets(*segments(campaign, 1, criteria={"device": device}), [GOOD] * 4)
    scopes = [{}, {"campaigns": [search]}, {"campaigns": [social]}, {"campaigns": [search, social]},
              {"channel": "social"}, {"channel": "search", "segment_filter": {"device": "mobile"}},
              {"segment_filter": {"device": ["mobile", "tablet"]}}]
    rules = [active_rule(many_scopes, triggers=[CTR_BELOW_4_PCT], name=f"scope {n}", **scope)
             for n, scope in enumerate(scopes)]

    with django_assert_max_num_queries(len(baseline)):
        results = evaluate_rules(rule_ids=[r.pk for r in rules], now=NOW, source="schedule", actor=SYSTEM,
                                 dry_run=True)

    assert [len(r.decisions) for r in results] == [8, 4, 4, 8, 4, 2, 4]


def _counter_reads(queries) -> list[dict]:
    """The reads of counters: the queries summing the facts."""
    return [q for q in queries.captured_queries if "campaigns_metricfact" in q["sql"]]


def test_rules_sharing_a_scope__share_one_aggregate_query(workspace):
    [segment] = segments(fresh_campaign(workspace), 1)
    add_buckets(segment, [GOOD, BAD])
    first = active_rule(workspace, triggers=[CTR_BELOW_4_PCT], name="first")
    second = active_rule(workspace, triggers=[trigger(metric="cpc", kind="threshold", direction="above",
                                                      threshold=1)], name="second")
    with CaptureQueriesContext(connection) as queries:
        evaluate_rules(rule_ids=[first.pk, second.pk], now=NOW, source="manual", actor=SYSTEM, dry_run=True)
    assert len(_counter_reads(queries)) == 1


def test_rules_of_different_scopes_in_a_workspace__share_one_aggregate_query_and_keep_their_own_numbers(workspace):
    short_campaign, long_campaign = fresh_campaign(workspace), fresh_campaign(workspace)
    [short] = segments(short_campaign, 1)
    [long] = segments(long_campaign, 1)
    add_buckets(short, [GOOD, BAD])
    add_buckets(long, [BAD, BAD, BAD, GOOD])
    current = active_rule(workspace, name="current", campaigns=[short_campaign], triggers=[  # a 2-bucket span
        trigger(metric="ctr", kind="threshold", direction="below", threshold=Decimal("0.04"), baseline_minutes=60)])
    relative = active_rule(workspace, name="relative", campaigns=[long_campaign], triggers=[  # a 4-bucket span
        trigger(metric="ctr", kind="relative_change", direction="above", threshold=10)])
    with CaptureQueriesContext(connection) as queries:
        results = evaluate_rules(rule_ids=[current.pk, relative.pk], now=NOW, source="manual", actor=SYSTEM,
                                 dry_run=True)
    assert len(_counter_reads(queries)) == 1
    by_name = {r.rule.name: r for r in results}
    assert [d["segment_id"] for d in by_name["current"].decisions] == [short.pk]
    assert by_name["current"].decisions[0]["triggers"][0]["numerator"] == 30.0
    [row] = by_name["relative"].decisions[0]["triggers"]
    assert (row["numerator"], row["baseline_numerator"]) == (50.0, 90.0)
    assert by_name["relative"].decisions[0]["decision"] == "fired"


def test_evaluate__freezes_the_heap_only_while_it_runs(workspace, monkeypatch):
    """Objects held before a cycle skip garbage collection during it, which runs rarer
    (`_heap_frozen`); both are handed back afterwards, even when recording fails."""
    [segment] = segments(fresh_campaign(workspace), 1)
    add_buckets(segment, [BAD])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT])
    thresholds, while_deciding = gc.get_threshold(), []
    decide = engine._decide
    monkeypatch.setattr(engine, "_decide", lambda *a, **k: while_deciding.append(
        (gc.get_freeze_count(), gc.get_threshold())) or decide(*a, **k))

    _run(rule)
    monkeypatch.setattr(engine, "_record", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        _run(rule)

    assert [threshold for _, threshold in while_deciding] == [engine._CYCLE_GC_THRESHOLDS] * 2
    assert min(frozen for frozen, _ in while_deciding) > 0
    assert (gc.get_freeze_count(), gc.get_threshold()) == (0, thresholds)
