"""`rulesplatform.bulk_insert`: rows written in one binary COPY (PostgreSQL) or by bulk_create
(SQLite) are stored exactly as the ORM would store them, with their ids."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import JSONField, Value
from django.utils.translation import gettext_lazy

from audit.models import AuditEvent
from campaigns.models import Segment
from rules.models import Approval, Change, Evaluation, Rule
from rulesplatform.bulk_insert import bulk_insert
from tests.factories import CampaignFactory, SegmentFactory, UserFactory

pytestmark = pytest.mark.django_db
WINDOW_END = datetime(2026, 3, 10, 12, tzinfo=UTC)


@pytest.fixture
def rule(workspace):
    return Rule.objects.create(workspace=workspace, name="Low CTR", owner=UserFactory())


def test_rows_get_their_ids_and_are_stored_as_built(rule):
    numbers = bytes(range(256)) * 3
    evaluations = [
        Evaluation(workspace=rule.workspace, rule=rule, rule_version=1, window_end=WINDOW_END, outcome="fired",
                   summary=f"run {i}", inputs={"segments": [], "ratio": 0.5, "text": "né 'quoted'"}, numbers=numbers)
        for i in range(3)
    ]
    bulk_insert(evaluations)
    assert all(e.pk and not e._state.adding for e in evaluations)
    stored = {e.pk: e for e in Evaluation.objects.all()}
    for evaluation in evaluations:
        again = stored[evaluation.pk]
        assert (again.summary, again.inputs, bytes(again.numbers), again.window_end) == (
            evaluation.summary, evaluation.inputs, numbers, WINDOW_END)
        assert again.created_at is not None  # auto_now_add filled, as bulk_create does


def test_foreign_keys_to_objects_saved_meanwhile_nulls_and_decimals(rule):
    segment = SegmentFactory(campaign=CampaignFactory(workspace=rule.workspace), bid=Decimal("1.2500"))
    change = Change(workspace=rule.workspace, rule=rule, rule_version=1, segment=segment, field="bid",
                    old_value="1.2500", requested_value="1.5000", capped_value="1.3750",
                    cap_report=[{"cap": "max_step", "bound": True}], idempotency_key="k1")
    approval = Approval(workspace=rule.workspace, change=change, decision=Approval.Decision.AUTO, level=0,
                        user=None, actor_label="policy", content_hash="h" * 64, created_at=WINDOW_END)
    bulk_insert([change])
    bulk_insert([approval])  # its change was unsaved when it was built
    stored = Approval.objects.select_related("change").get()
    assert stored.change_id == change.pk and stored.user_id is None
    assert stored.change.cap_report == [{"cap": "max_step", "bound": True}]
    assert Segment.objects.get(pk=segment.pk).bid == Decimal("1.2500")


def test_the_ids_drawn_leave_the_sequence_consistent_for_later_saves(rule):
    built = [Evaluation(workspace=rule.workspace, rule=rule, rule_version=1, window_end=WINDOW_END,
                        outcome="not_fired") for _ in range(2)]
    bulk_insert(built)
    later = Evaluation.objects.create(workspace=rule.workspace, rule=rule, rule_version=1, window_end=WINDOW_END,
                                      outcome="not_fired")
    assert later.pk not in {e.pk for e in built}
    assert Evaluation.objects.count() == 3


def test_nothing_to_insert_runs_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        bulk_insert([])


def test_values_the_orm_would_convert__are_stored_converted(rule):
    evaluation = Evaluation(workspace=rule.workspace, rule=rule, rule_version="3", window_end=WINDOW_END.isoformat(),
                            outcome=Evaluation.Outcome.FIRED, summary=gettext_lazy("Fired"), inputs=("a", 1),
                            numbers=memoryview(b"\x00\x01"))
    bulk_insert([evaluation])
    stored = Evaluation.objects.get()
    assert (stored.rule_version, stored.window_end, stored.outcome, stored.summary, stored.inputs,
            bytes(stored.numbers)) == (3, WINDOW_END, "fired", "Fired", ["a", 1], b"\x00\x01")


def test_json_fields__none_is_stored_as_null_and_a_json_null_as_such(workspace):
    event = AuditEvent(created_at=WINDOW_END, actor_kind="system", actor_label="t", action="x", subject_type="t",
                       subject_id="1", before=None, after=Value(None, JSONField()), prev_hash="0" * 64, hash="1" * 64)
    bulk_insert([event])
    assert AuditEvent.objects.filter(before__isnull=True, after=Value(None, JSONField())).get().pk == event.pk


def test_json_texts__are_what_postgresql_stores(rule):
    # The caller vouches that they encode the rows' values (an audit event's, already encoded for its hash).
    evaluation = Evaluation(workspace=rule.workspace, rule=rule, rule_version=1, window_end=WINDOW_END,
                            outcome="fired", inputs={"a": 1})
    bulk_insert([evaluation], json_texts={"inputs": ['{"a": 1, "sent": "as text"}']})
    on_postgresql = connection.vendor == "postgresql"
    assert Evaluation.objects.get().inputs == ({"a": 1, "sent": "as text"} if on_postgresql else {"a": 1})
