"""Recording many rules' evaluations at once: the same outcome as one by one, in a bounded number of queries."""

import logging
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import close_old_connections, connection, transaction
from django.test.utils import CaptureQueriesContext

from audit.chain import verify_chain
from audit.models import AuditEvent
from campaigns.models import Segment
from rules import engine, pipeline
from rules.engine import evaluate_rules
from rules.models import (
    Approval,
    ApprovalPolicy,
    Change,
    ChangePush,
    Evaluation,
    NotificationDelivery,
    PlatformConnector,
    Rule,
)
from tests.factories import SegmentFactory, WorkspaceFactory
from tests.rules.facts import (
    BAD,
    CTR_BELOW_4_PCT,
    NOW,
    SYSTEM,
    WINDOW_END,
    active_rule,
    add_buckets,
    fresh_campaign,
    segments,
    trigger,
)
from tests.rules.governance_builders import approver, permissive_policy, policy

pytestmark = pytest.mark.django_db

TOGETHER_FAILED = "together failed"


def _fired_segments(campaign, count: int) -> list:
    """`count` segments whose last bucket fires the CTR trigger."""
    fired = [SegmentFactory(campaign=campaign, name=f"Segment {i}", bid=Decimal("1.00"), daily_budget=Decimal("100.00"))
             for i in range(count)]
    for segment in fired:
        add_buckets(segment, [BAD])
    return fired


def _market(workspace, count: int = 3):
    """Fired segments, an approver, a connector, and rules that meet on the same segments."""
    campaign = fresh_campaign(workspace, name="Campaign")
    fired = _fired_segments(campaign, count)
    approver(workspace)
    policy(workspace, always_require_approval=[ApprovalPolicy.Gate.PAUSE_SEGMENT])
    PlatformConnector.objects.create(workspace=workspace, name="Sandbox", kind=PlatformConnector.Kind.SANDBOX)
    rule = lambda name, **fields: active_rule(workspace, name=name, triggers=[CTR_BELOW_4_PCT], **fields)  # noqa: E731
    rules = [
        rule("bids down", cooldown_minutes=60),
        rule("bids down again", cooldown_minutes=0, max_step_pct=Decimal("5")),  # sees the first rule's change
        rule("budgets down", action=Rule.Action.BUDGET_PCT),
        rule("one a day", action=Rule.Action.BUDGET_PCT, max_actions_per_day=1, cooldown_minutes=0),
        rule("pause", action=Rule.Action.PAUSE_SEGMENT),  # waits for approval
        rule("alert", action=Rule.Action.ALERT),
    ]
    return fired, rules


def _outcome(workspace, fired, rules) -> dict:
    """What was recorded, without ids: comparable between workspaces."""
    position = {segment.pk: i for i, segment in enumerate(fired)}
    names = {rule.pk: rule.name for rule in rules}
    changes = Change.objects.filter(workspace_id=workspace.pk).order_by("pk")
    return {
        "changes": [(names[c.rule_id], position[c.segment_id], c.field, c.old_value, c.capped_value, c.status,
                     c.approval_level, [e["cap"] for e in c.cap_report if e["bound"]]) for c in changes],
        "evaluations": [(names[e.rule_id], e.outcome, e.summary, len(e.inputs.get("daily_limit_blocks", {})))
                        for e in Evaluation.objects.filter(workspace_id=workspace.pk).order_by("pk")],
        "audit": list(AuditEvent.objects.filter(workspace_id=workspace.pk).order_by("pk").values_list(
            "action", "subject_type", "subject_repr")),
        "segments": [(s.bid, s.daily_budget, s.status) for s in type(fired[0]).objects.filter(
            pk__in=position).order_by("pk")],
        "approvals": Approval.objects.filter(workspace_id=workspace.pk).count(),
        "deliveries": NotificationDelivery.objects.filter(workspace_id=workspace.pk).count(),
        "pushes": ChangePush.objects.filter(workspace_id=workspace.pk).count(),
    }


def _recorded_both_ways(build_market, caplog) -> tuple[dict, dict]:
    """The same market built twice: recorded as one batch, and rule by rule in the engine's order
    (by name); the outcome of each."""
    together, one_by_one = WorkspaceFactory(), WorkspaceFactory()
    targets_together, rules_together = build_market(together)
    targets_alone, rules_alone = build_market(one_by_one)

    with caplog.at_level(logging.ERROR):
        evaluate_rules(rule_ids=[r.pk for r in rules_together], now=NOW, source="schedule", actor=SYSTEM)
        for rule in sorted(rules_alone, key=lambda r: r.name):
            evaluate_rules(rule_ids=[rule.pk], now=NOW, source="schedule", actor=SYSTEM)

    assert TOGETHER_FAILED not in caplog.text
    return (_outcome(together, targets_together, rules_together),
            _outcome(one_by_one, targets_alone, rules_alone))


def test_a_batch_of_rules__records_what_recording_them_one_by_one_does(caplog):
    recorded, recorded_alone = _recorded_both_ways(_market, caplog)
    assert recorded == recorded_alone
    statuses = {status for *_, status, _level, _caps in recorded["changes"]}
    assert {Change.Status.APPLIED, Change.Status.BLOCKED, Change.Status.PENDING} <= statuses
    assert recorded["pushes"] and recorded["deliveries"]
    assert verify_chain().ok


def _reallocation_market(workspace):
    """Two weak segments give budget to two strong ones, which a rule that runs first (by name) also changes."""
    permissive_policy(workspace)
    campaign = fresh_campaign(workspace, name="Campaign")
    budgets = [SegmentFactory(campaign=campaign, name=f"Segment {i}", daily_budget=Decimal("100.00"))
               for i in range(4)]
    for segment, roas in zip(budgets, [1, 1, 4, 3], strict=True):
        clicks = 30 if roas == 1 else 50
        add_buckets(segment, [{"impressions": 1000, "clicks": clicks, "spend": 10, "revenue": 10 * roas}])
    ctr_above = trigger(metric="ctr", kind="threshold", direction="above", threshold=Decimal("0.04"))
    rules = [
        active_rule(workspace, name="a: strong segments spend less", triggers=[ctr_above],
                    action=Rule.Action.BUDGET_PCT, action_value=Decimal("-5")),
        active_rule(workspace, name="b: reallocate", triggers=[CTR_BELOW_4_PCT], action=Rule.Action.REALLOCATE_BUDGET,
                    action_value=Decimal("10"), cooldown_minutes=0),
    ]
    return budgets, rules


def test_a_reallocation_after_a_rule_that_changed_its_receivers__plans_on_their_new_budgets(caplog):
    recorded, recorded_alone = _recorded_both_ways(_reallocation_market, caplog)
    assert recorded == recorded_alone
    receivers = [c for c in recorded["changes"] if c[0] == "b: reallocate" and c[1] >= 2]
    assert [(old, status) for _, _, _, old, _, status, *_ in receivers] == [("95.0000", Change.Status.APPLIED)] * 2


def test_two_rules_of_a_batch_on_one_segment__the_second_sees_the_first_ones_change(workspace):
    [segment] = segments(fresh_campaign(workspace), 1, bid=Decimal("1.00"))
    add_buckets(segment, [BAD])
    first, second = (active_rule(workspace, name=name, triggers=[CTR_BELOW_4_PCT], action_value=Decimal("-3"),
                                 cooldown_minutes=60) for name in ("first", "second"))

    results = evaluate_rules(rule_ids=[first.pk, second.pk], now=NOW, source="schedule", actor=SYSTEM)

    [applied], [blocked] = (r.planned_changes for r in results)
    assert (applied.change.status, applied.capped_value) == (Change.Status.APPLIED, "0.9700")
    assert (blocked.change.status, blocked.old_value) == (Change.Status.BLOCKED, "0.9700")
    assert [e["cap"] for e in blocked.cap_report if e["bound"]] == ["cooldown"]
    assert results[1].outcome == Evaluation.Outcome.BLOCKED_BY_CAP
    segment.refresh_from_db()
    assert segment.bid == Decimal("0.9700")


def test_the_same_batch_twice__records_and_applies_each_change_once(workspace):
    [segment] = segments(fresh_campaign(workspace), 1, bid=Decimal("1.00"))
    add_buckets(segment, [BAD])
    rules = [active_rule(workspace, name=name, triggers=[CTR_BELOW_4_PCT], action=action)
             for name, action in (("bids", Rule.Action.BID_PCT), ("budgets", Rule.Action.BUDGET_PCT))]

    first = evaluate_rules(rule_ids=[r.pk for r in rules], now=NOW, source="schedule", actor=SYSTEM)
    again = evaluate_rules(rule_ids=[r.pk for r in rules], now=NOW, source="schedule", actor=SYSTEM)

    assert Change.objects.count() == 2
    assert [p.change.pk for r in again for p in r.planned_changes] == [
        p.change.pk for r in first for p in r.planned_changes]
    assert AuditEvent.objects.filter(action="change.apply").count() == 2


def _recording_queries(rule_count: int, segment_count: int) -> int:
    workspace = WorkspaceFactory()
    for segment in segments(fresh_campaign(workspace), segment_count, bid=Decimal("1.00")):
        add_buckets(segment, [BAD])
    approver(workspace)
    policy(workspace, always_require_approval=[ApprovalPolicy.Gate.PAUSE_SEGMENT])
    PlatformConnector.objects.create(workspace=workspace, name="Sandbox", kind=PlatformConnector.Kind.SANDBOX)
    actions = [Rule.Action.BID_PCT, Rule.Action.BUDGET_PCT, Rule.Action.PAUSE_SEGMENT, Rule.Action.ALERT]
    rules = [active_rule(workspace, name=f"rule {i}", triggers=[CTR_BELOW_4_PCT], action=actions[i % len(actions)],
                         cooldown_minutes=0) for i in range(rule_count)]
    with CaptureQueriesContext(connection) as queries:
        results = evaluate_rules(rule_ids=[r.pk for r in rules], now=NOW, source="schedule", actor=SYSTEM)
    assert len(results) == rule_count and all(r.fired_segment_ids for r in results)
    return len(queries)


def test_query_count__does_not_grow_with_the_number_of_rules_or_fired_segments():
    # Kept small enough for SQLite's bulk inserts to need no more than one statement each.
    baseline = _recording_queries(rule_count=4, segment_count=1)
    assert _recording_queries(rule_count=6, segment_count=3) <= baseline


def test_a_failing_rule_in_a_batch__does_not_stop_the_others(workspace, monkeypatch, caplog):
    [segment] = segments(fresh_campaign(workspace), 1, bid=Decimal("1.00"))
    add_buckets(segment, [BAD])
    good = active_rule(workspace, name="good", triggers=[CTR_BELOW_4_PCT])
    bad = active_rule(workspace, name="bad", triggers=[CTR_BELOW_4_PCT], action=Rule.Action.BUDGET_PCT)
    requests_for = pipeline.requests_for

    def failing_for_bad(action_input):
        if action_input.rule.pk == bad.pk:
            raise RuntimeError("this rule's action is broken")
        return requests_for(action_input)

    monkeypatch.setattr(pipeline, "requests_for", failing_for_bad)
    with caplog.at_level(logging.ERROR):
        results = evaluate_rules(rule_ids=[good.pk, bad.pk], now=NOW, source="schedule", actor=SYSTEM)

    assert [r.rule.pk for r in results] == [good.pk]
    assert TOGETHER_FAILED in caplog.text and f"Evaluation of rule {bad.pk} failed" in caplog.text
    assert list(Evaluation.objects.values_list("rule_id", flat=True)) == [good.pk]
    assert Change.objects.get().status == Change.Status.APPLIED
    assert verify_chain().ok


# --- past a rule's daily limit: blocked by that limit alone, kept in the evaluation -------------------------

def _broad_market(workspace, count: int = 12):
    """Rules firing on many segments whose daily limit is used up after a few (or from the start)."""
    campaign = fresh_campaign(workspace, name="Campaign")
    fired = _fired_segments(campaign, count)
    rule = lambda name, **fields: active_rule(workspace, name=name, triggers=[CTR_BELOW_4_PCT],  # noqa: E731
                                              cooldown_minutes=0, **fields)
    rules = [
        rule("a: bids, two a day", max_actions_per_day=2),
        rule("b: budgets, none left", action=Rule.Action.BUDGET_PCT, max_actions_per_day=0),
        rule("c: bids again, three a day", max_actions_per_day=3, max_step_pct=Decimal("5")),
    ]
    return fired, rules


def _daily_limit_blocks(workspace, fired, rules) -> list:
    """What each evaluation keeps of the changes past its rule's daily limit, targets by position."""
    position = {f"segment:{segment.pk}": i for i, segment in enumerate(fired)}
    names = {rule.pk: rule.name for rule in rules}
    kept = [(names[e.rule_id], e.inputs.get("daily_limit_blocks", {}))
            for e in Evaluation.objects.filter(workspace_id=workspace.pk).order_by("pk")]
    return [(name, blocks.get("cap"), [(position[c["target"]], c["field"], c["old_value"], c["requested_value"],
                                        c["bound_caps"]) for c in blocks.get("changes", [])])
            for name, blocks in kept]


def test_rules_past_their_daily_limit__keep_in_their_evaluations_what_recording_change_by_change_does(
        monkeypatch, caplog):
    together, change_by_change = WorkspaceFactory(), WorkspaceFactory()
    fired_together, rules_together = _broad_market(together)
    fired_alone, rules_alone = _broad_market(change_by_change)

    evaluate_rules(rule_ids=[r.pk for r in rules_together], now=NOW, source="schedule", actor=SYSTEM)
    monkeypatch.setattr(engine, "_record_together", _broken)  # the engine falls back to change by change
    with caplog.at_level(logging.ERROR):
        evaluate_rules(rule_ids=[r.pk for r in rules_alone], now=NOW, source="schedule", actor=SYSTEM)

    assert TOGETHER_FAILED in caplog.text
    assert _outcome(together, fired_together, rules_together) == _outcome(change_by_change, fired_alone, rules_alone)
    blocks = _daily_limit_blocks(together, fired_together, rules_together)
    assert blocks == _daily_limit_blocks(change_by_change, fired_alone, rules_alone)
    assert [[position for position, *_ in changes] for _, _, changes in blocks] == [
        list(range(2, 12)), list(range(12)), list(range(5, 12))]  # c: 0 and 1 capped by a's change, not counted
    assert all(cap["cap"] == "actions_per_day" and cap["bound"] for _, cap, _ in blocks)
    assert {tuple(bound) for *_, changes in blocks for *_, bound in changes} == {("actions_per_day",)}


def _broken(*args, **kwargs):
    raise RuntimeError("recording together is broken")


def _recording_queries_past_the_daily_limit(segment_count: int) -> int:
    fired, rules = _broad_market(WorkspaceFactory(), count=segment_count)
    with CaptureQueriesContext(connection) as queries:
        results = evaluate_rules(rule_ids=[r.pk for r in rules], now=NOW, source="schedule", actor=SYSTEM)
    assert all(r.evaluation.inputs["daily_limit_blocks"] for r in results)
    return len(queries)


def test_query_count__past_the_daily_limit__does_not_grow_with_the_fired_segments():
    assert _recording_queries_past_the_daily_limit(24) <= _recording_queries_past_the_daily_limit(6)


def test_the_same_window_again__past_the_daily_limit__reports_the_recorded_change_and_keeps_the_rest(workspace):
    fired = segments(fresh_campaign(workspace), 3, bid=Decimal("1.00"))
    for segment in fired:
        add_buckets(segment, [BAD])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT], max_actions_per_day=1, cooldown_minutes=0)

    [first] = evaluate_rules(rule_ids=[rule.pk], now=NOW, source="schedule", actor=SYSTEM)
    [again] = evaluate_rules(rule_ids=[rule.pk], now=NOW, source="schedule", actor=SYSTEM)

    applied = first.planned_changes[0].change
    assert [p.change for p in again.planned_changes] == [applied, None, None]
    assert [p.over_daily_limit for p in again.planned_changes] == [False, True, True]
    assert [c["target"] for c in again.evaluation.inputs["daily_limit_blocks"]["changes"]] == [
        f"segment:{s.pk}" for s in fired[1:]]
    assert Change.objects.get() == applied and AuditEvent.objects.filter(action="change.apply").count() == 1


def test_a_target_moved_after_the_batch_planned__fails_the_batch_rather_than_being_overwritten(workspace):
    [segment] = segments(fresh_campaign(workspace), 1, bid=Decimal("1.00"))
    run = pipeline.RuleRun(active_rule(workspace, triggers=[CTR_BELOW_4_PCT]), None, [segment.pk],
                           WINDOW_END - timedelta(hours=1), WINDOW_END)

    with transaction.atomic():
        batch = pipeline.ChangeBatch(actor=SYSTEM, runs=[run], now=NOW)
        [planned] = batch.record(run)
        Segment.objects.filter(pk=segment.pk).update(bid=Decimal("2.00"))  # another writer, after the batch read it
        with pytest.raises(pipeline.TargetMoved):
            batch.write(evaluations=[])

    assert planned.old_value == "1.0000"
    segment.refresh_from_db()
    assert segment.bid == Decimal("2.00")


# --- concurrency (PostgreSQL: real row locks between connections) ---------------------------------------

postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_of_the_same_rules__record_and_apply_each_change_once():
    workspace = WorkspaceFactory()
    fired = segments(fresh_campaign(workspace), 3, bid=Decimal("1.00"), daily_budget=Decimal("100.00"))
    for segment in fired:
        add_buckets(segment, [BAD])
    rules = [active_rule(workspace, name=name, triggers=[CTR_BELOW_4_PCT], action=action)
             for name, action in (("bids", Rule.Action.BID_PCT), ("budgets", Rule.Action.BUDGET_PCT))]
    barrier, errors = threading.Barrier(4), []

    def work():
        try:
            barrier.wait()
            evaluate_rules(rule_ids=[r.pk for r in rules], now=NOW, source="schedule", actor=SYSTEM)
        except Exception as error:  # surfaced below, in the test's thread
            errors.append(error)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert Change.objects.count() == 6
    assert set(Change.objects.values_list("status", flat=True)) == {Change.Status.APPLIED}
    assert AuditEvent.objects.filter(action="change.apply").count() == 6
    assert verify_chain().ok


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_target_another_worker_moves_while_a_batch_plans__is_planned_again_on_its_new_value(monkeypatch, caplog):
    workspace = WorkspaceFactory()
    [segment] = segments(fresh_campaign(workspace), 1, bid=Decimal("1.00"))
    add_buckets(segment, [BAD])
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT], action_value=Decimal("-10"))
    evaluations_insert = pipeline.evaluations_insert

    def moved_meanwhile(**kwargs):
        # The batch has planned (it writes now); another connection moves the segment it did not lock.
        worker = threading.Thread(target=_move_bid, args=(segment.pk, Decimal("2.00")))
        worker.start()
        worker.join(timeout=30)
        return evaluations_insert(**kwargs)

    monkeypatch.setattr(pipeline, "evaluations_insert", moved_meanwhile)
    with caplog.at_level(logging.ERROR):
        evaluate_rules(rule_ids=[rule.pk], now=NOW, source="schedule", actor=SYSTEM)

    assert TOGETHER_FAILED in caplog.text and "TargetMoved" in caplog.text
    change = Change.objects.get()
    assert (change.old_value, change.capped_value, change.status) == ("2.0000", "1.8000", Change.Status.APPLIED)
    segment.refresh_from_db()
    assert segment.bid == Decimal("1.8000")


def _move_bid(segment_id: int, bid: Decimal) -> None:
    try:
        Segment.objects.filter(pk=segment_id).update(bid=bid)
    finally:
        connection.close()
