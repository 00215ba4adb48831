"""Proposing and applying changes: compare-and-set, idempotency, status transitions, concurrency."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import close_old_connections, connection

from accounts.exceptions import Conflict
from audit.models import AuditEvent
from campaigns.models import Segment
from rules.changes import as_of, change_apply, change_apply_batch, change_mark_conflicted, change_propose
from rules.models import Change
from tests.factories import CampaignFactory, SegmentFactory, WorkspaceFactory
from tests.rules.facts import NOW, SYSTEM, WINDOW_END
from tests.rules.governance_builders import permissive_policy
from tests.rules.pipeline_builders import reloaded, rule_with_action, run

pytestmark = pytest.mark.django_db
D = Decimal


def propose_bid(segment, new_bid: str, *, key: str = "test:bid", batch_id: str = "") -> Change:
    change, _created = change_propose(
        actor=SYSTEM, target=segment, field=Change.Field.BID, old_value=f"{segment.bid:.4f}",
        requested_value=new_bid, capped_value=new_bid, cap_report=[], idempotency_key=key, batch_id=batch_id,
    )
    return change


# --- audit entries ----------------------------------------------------------------------------------

def test_as_of__is_a_copy_in_the_state_given__leaving_the_subject_and_its_cache_alone(segment):
    change = change_apply(actor=SYSTEM, change=propose_bid(segment, "1.1000"), now=NOW)
    assert change.segment == segment  # cached on the change

    proposed = as_of(change, {"status": Change.Status.PROPOSED})
    proposed.error = "only on the copy"
    proposed._state.fields_cache.clear()

    assert (str(proposed), str(change)) == ("bid 1.0000 → 1.1000 (Proposed)", "bid 1.0000 → 1.1000 (Applied)")
    assert (proposed.pk, change.error, change._state.fields_cache) == (change.pk, "", {"segment": segment})
    assert (proposed._state.adding, proposed._state.db) == (False, "default")


# --- apply ------------------------------------------------------------------------------------------

def test_change_apply__updates_the_target_and_audits_before_and_after(segment):
    change = propose_bid(segment, "1.1000")

    applied = change_apply(actor=SYSTEM, change=change, now=NOW)

    assert applied.status == Change.Status.APPLIED and applied.applied_at == NOW
    assert reloaded(segment)[0].bid == D("1.1000")
    event = AuditEvent.objects.get(action="change.apply")
    assert (event.subject_type, event.subject_id) == ("campaigns.segment", str(segment.pk))
    assert event.before == {"bid": "1.0000"} and event.after == {"bid": "1.1000", "change": change.pk}


def test_change_apply__when_the_target_moved__marks_the_change_conflicted_and_leaves_the_target(segment):
    change = propose_bid(segment, "1.1000")
    Segment.objects.filter(pk=segment.pk).update(bid=D("1.2000"))  # someone else, since planning

    result = change_apply(actor=SYSTEM, change=change)

    assert result.status == Change.Status.CONFLICTED and "expected 1.0000, found 1.2000" in result.error
    assert reloaded(segment)[0].bid == D("1.2000")
    assert AuditEvent.objects.filter(action="change.conflict", subject_id=str(change.pk)).exists()


def test_change_apply__twice__applies_once(segment):
    change = propose_bid(segment, "1.1000")

    change_apply(actor=SYSTEM, change=change)
    again = change_apply(actor=SYSTEM, change=change)

    assert again.status == Change.Status.APPLIED
    assert AuditEvent.objects.filter(action="change.apply").count() == 1


def test_change_apply_batch__one_moved_target__conflicts_the_whole_batch(workspace):
    campaign = CampaignFactory(workspace=workspace)
    first, second = SegmentFactory(campaign=campaign), SegmentFactory(campaign=campaign)
    changes = [propose_bid(first, "1.1000", key="k1", batch_id="b"), propose_bid(second, "0.9000", key="k2",
                                                                                 batch_id="b")]
    Segment.objects.filter(pk=second.pk).update(bid=D("2.0000"))

    result = change_apply_batch(actor=SYSTEM, changes=changes)

    assert {c.status for c in result} == {Change.Status.CONFLICTED}
    assert [s.bid for s in reloaded(first, second)] == [D("1.0000"), D("2.0000")]


def test_change_apply_batch__a_value_the_database_refuses__fails_the_whole_batch(workspace):
    permissive_policy(workspace)  # a 500% step would otherwise wait for approval
    campaign = CampaignFactory(workspace=workspace)
    first, second = SegmentFactory(campaign=campaign), SegmentFactory(campaign=campaign, bid_ceiling=D("5.00"))
    changes = [propose_bid(first, "1.1000", key="k1", batch_id="b"), propose_bid(second, "6.0000", key="k2",
                                                                                 batch_id="b")]

    result = change_apply_batch(actor=SYSTEM, changes=changes)

    assert {c.status for c in result} == {Change.Status.FAILED}
    assert all(c.error for c in result) and not any(c.applied_at for c in result)
    assert [s.bid for s in reloaded(first, second)] == [D("1.0000"), D("1.0000")]
    assert not AuditEvent.objects.filter(action="change.apply").exists()


def test_change_mark_conflicted__on_an_applied_change__is_refused(segment):
    change = change_apply(actor=SYSTEM, change=propose_bid(segment, "1.1000"))

    with pytest.raises(Conflict, match="cannot become conflicted"):
        change_mark_conflicted(actor=SYSTEM, change=change, reason="late")


# --- propose ------------------------------------------------------------------------------------------

def test_change_propose__capped_to_no_change__is_recorded_blocked(segment):
    change = propose_bid(segment, "1.0000")

    assert change.status == Change.Status.BLOCKED
    assert change_apply(actor=SYSTEM, change=change).status == Change.Status.BLOCKED
    assert AuditEvent.objects.filter(action="change.block").count() == 1


def test_change_propose__with_a_key_already_used__returns_the_recorded_change(segment):
    first = propose_bid(segment, "1.1000", key="same")

    second, created = change_propose(
        actor=SYSTEM, target=segment, field=Change.Field.BID, old_value="1.0000", requested_value="0.5000",
        capped_value="0.9000", cap_report=[], idempotency_key="same",
    )

    assert not created and second.pk == first.pk and second.capped_value == "1.1000"
    assert Change.objects.count() == 1


# --- through the pipeline ------------------------------------------------------------------------------

def test_same_evaluation_twice__records_and_applies_one_change(workspace, segment):
    rule = rule_with_action(workspace, "bid_pct", 10, cooldown_minutes=0)

    first = run(rule, [segment])
    second = run(rule, [segment], now=NOW + timedelta(minutes=5))

    assert Change.objects.count() == 1
    assert first[0].change.pk == second[0].change.pk
    assert reloaded(segment)[0].bid == D("1.1000")
    assert first[0].change.idempotency_key == (
        f"rule:{rule.pk}:v{rule.version}:segment:{segment.pk}:bid:2026-03-10T12:00:00+00:00")


def test_a_change_within_the_cooldown__is_recorded_blocked_with_its_report(workspace, segment):
    rule = rule_with_action(workspace, "bid_pct", 3, cooldown_minutes=60)
    run(rule, [segment])

    [planned] = run(rule, [segment], now=NOW + timedelta(minutes=30), window_end=WINDOW_END + timedelta(minutes=30))

    assert planned.blocked and planned.change.status == Change.Status.BLOCKED
    assert [e["cap"] for e in planned.cap_report if e["bound"]] == ["cooldown"]
    assert reloaded(segment)[0].bid == D("1.0300")


def test_max_actions_per_day__counts_the_rules_applied_changes(workspace):
    campaign = CampaignFactory(workspace=workspace)
    segments = [SegmentFactory(campaign=campaign) for _ in range(3)]
    rule = rule_with_action(workspace, "bid_pct", 5, max_actions_per_day=2)

    planned = run(rule, segments)

    assert [p.blocked for p in planned] == [False, False, True]
    assert [e["cap"] for e in planned[2].cap_report if e["bound"]] == ["actions_per_day"]


# --- concurrency (PostgreSQL: real row locks between connections) ---------------------------------------

def _in_threads(count: int, work) -> list:
    """Run `work` in `count` threads started together, each on its own connection."""
    barrier, results, errors = threading.Barrier(count), [], []

    def target():
        try:
            barrier.wait()
            results.append(work())
        except Exception as error:  # surfaced below, in the test's thread
            errors.append(error)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_appliers_of_one_change__apply_it_once():
    segment = SegmentFactory(campaign=CampaignFactory(workspace=WorkspaceFactory()), bid=D("1.00"))
    change = propose_bid(segment, "1.1000")

    _in_threads(4, lambda: change_apply(actor=SYSTEM, change=change).status)

    assert Change.objects.get(pk=change.pk).status == Change.Status.APPLIED
    assert AuditEvent.objects.filter(action="change.apply").count() == 1
    assert reloaded(segment)[0].bid == D("1.1000")


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_of_one_evaluation__record_and_apply_one_change_per_target():
    workspace = WorkspaceFactory()
    campaign = CampaignFactory(workspace=workspace)
    segments = [SegmentFactory(campaign=campaign, bid=D("1.00")) for _ in range(3)]
    rule = rule_with_action(workspace, "bid_pct", 10)

    _in_threads(4, lambda: run(rule, segments))

    assert Change.objects.count() == 3
    assert set(Change.objects.values_list("status", flat=True)) == {Change.Status.APPLIED}
    assert [s.bid for s in reloaded(*segments)] == [D("1.1000")] * 3
