"""What an evaluation keeps of its per-segment decisions: columns in, the same rows out."""

import json
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
import zstandard

from rules.decisions import SegmentDecisions, evaluation_inputs, evaluation_segment_rows
from rules.engine import evaluate_rules
from rules.models import Evaluation
from tests.rules.facts import NOW, SYSTEM, WINDOW_END, active_rule, add_buckets, fresh_campaign, segments, trigger

pytestmark = pytest.mark.django_db

GOOD, BAD = {"impressions": 1000, "clicks": 50}, {"impressions": 1000, "clicks": 30}
CTR_BELOW_4_PCT = trigger(metric="ctr", kind="threshold", direction="below", threshold=Decimal("0.04"))
CTR_DROP = trigger(metric="ctr", kind="significant_change", direction="below", consecutive_windows=2)
CTR_DOWN_10_PCT = trigger(metric="ctr", kind="relative_change", direction="below", threshold=Decimal("10"))
CPC_OUT_OF_CONTROL = trigger(metric="cpc", kind="control_limit", direction="either", k_sigma=Decimal("2"))
EVERY_KIND = [CTR_BELOW_4_PCT, CTR_DROP, CTR_DOWN_10_PCT, CPC_OUT_OF_CONTROL]


def _run(rule):
    [result] = evaluate_rules(rule_ids=[rule.pk], now=NOW, source="schedule", actor=SYSTEM)
    return result


@pytest.fixture
def three_segments(workspace):
    """Fired, not fired, and no data at all (every statistic undefined)."""
    fired, calm, empty = segments(fresh_campaign(workspace), 3)
    add_buckets(fired, [GOOD, GOOD, GOOD, GOOD, BAD])
    add_buckets(calm, [GOOD] * 5)
    return fired, calm, empty


@pytest.fixture
def costly_segments(workspace):
    """Spend with the clicks, varying per bucket: every kind of trigger has numbers on them."""
    return [_with_spend(workspace, [GOOD, BAD, GOOD, GOOD, BAD]), _with_spend(workspace, [BAD, GOOD, BAD, GOOD, GOOD])]


def _with_spend(workspace, buckets):
    [segment] = segments(fresh_campaign(workspace), 1)
    add_buckets(segment, [{**counters, "spend": 0.37 * n + counters["clicks"] / 7} for n, counters in
                          enumerate(buckets, start=1)])
    return segment


def test_rows_read_from_storage__are_the_rows_built_in_memory(workspace, three_segments):
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT, CTR_DROP], match="any")

    result = _run(rule)

    evaluation = Evaluation.objects.get(pk=result.evaluation.pk)
    stored = evaluation_segment_rows(evaluation)
    assert stored == result.decisions
    assert [row["decision"] for row in stored] == ["fired", "not_fired", "insufficient_data"]
    assert stored[2]["triggers"][1]["p_value"] is None  # NaN comes back as None
    json.dumps([evaluation.inputs, stored], allow_nan=False)


def test_stale_segments__keep_their_reason(workspace, three_segments):
    [stale] = segments(fresh_campaign(workspace, metrics_received_at=NOW - timedelta(hours=4)), 1)
    add_buckets(stale, [BAD])

    result = _run(active_rule(workspace, triggers=[CTR_BELOW_4_PCT]))

    [row] = evaluation_segment_rows(result.evaluation, [stale.pk])
    assert row["decision"] == "skipped_stale" and row["reason"].startswith("Skipped: stale data")
    assert evaluation_segment_rows(result.evaluation) == result.decisions


def test_rows_of_some_segments__are_those_rows_only(workspace, three_segments):
    fired, calm, empty = three_segments
    evaluation = _run(active_rule(workspace, triggers=[CTR_BELOW_4_PCT])).evaluation

    rows = evaluation_segment_rows(evaluation, [empty.pk, fired.pk])

    assert rows == [row for row in evaluation_segment_rows(evaluation) if row["segment_id"] != calm.pk]
    assert evaluation_segment_rows(evaluation, []) == []


def test_inputs__keep_settings_counts_and_fired_segments_as_json(workspace, three_segments):
    fired, _, _ = three_segments
    evaluation = _run(active_rule(workspace, triggers=[CTR_BELOW_4_PCT])).evaluation

    assert evaluation.inputs["decision_counts"] == {"fired": 1, "not_fired": 1, "insufficient_data": 1,
                                                    "skipped_stale": 0}
    assert evaluation.inputs["fired_segment_ids"] == [fired.pk]
    [stored_trigger] = evaluation.inputs["triggers"]
    assert (stored_trigger["metric"], stored_trigger["threshold"]) == ("ctr", 0.04)
    assert "segments" not in evaluation.inputs
    assert evaluation_inputs(evaluation)["segments"] == evaluation_segment_rows(evaluation)


def test_consecutive_windows__every_window_keeps_its_numbers(workspace):
    [segment] = segments(fresh_campaign(workspace), 1)
    add_buckets(segment, [{"impressions": 1000, "clicks": 10 * n} for n in (1, 2, 3)])
    rule = active_rule(workspace, triggers=[{**CTR_BELOW_4_PCT, "consecutive_windows": 3}])

    [row] = evaluation_segment_rows(_run(rule).evaluation)[0]["triggers"]

    assert row["numerator"] == 30.0 and row["consecutive_count"] == 3
    assert [(w["window_end"], w["numerator"]) for w in row["earlier_windows"]] == [
        ((WINDOW_END - timedelta(hours=1)).isoformat(), 20.0), ((WINDOW_END - timedelta(hours=2)).isoformat(), 10.0)]


def test_reasons__are_those_of_the_trigger_as_evaluated(workspace, three_segments):
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT])
    evaluation = _run(rule).evaluation

    rule.triggers.update(threshold=Decimal("0.01"))  # edited after the run

    assert evaluation_segment_rows(evaluation)[0]["triggers"][0]["reason"] == "Click-through rate 3.00% is below 4.00%"


def test_no_segment_in_scope__keeps_no_numbers(workspace):
    rule = active_rule(workspace, triggers=[CTR_BELOW_4_PCT])

    result = _run(rule)

    assert result.summary == "No segment matches the rule's scope."
    assert result.evaluation.numbers == b"" and evaluation_segment_rows(result.evaluation) == []
    assert result.decisions == [] and result.fired_segment_ids == []


def test_every_kind__reads_back_from_storage_as_built(workspace, three_segments, costly_segments):
    result = _run(active_rule(workspace, triggers=EVERY_KIND, match="any"))

    assert evaluation_segment_rows(Evaluation.objects.get(pk=result.evaluation.pk)) == result.decisions
    assert {t["kind"] for t in result.decisions[0]["triggers"]} == {t["kind"] for t in EVERY_KIND}


def test_numbers_that_follow_from_others__are_recomputed_not_stored(workspace, three_segments, costly_segments):
    evaluation = _run(active_rule(workspace, triggers=EVERY_KIND)).evaluation

    stored_format = evaluation.inputs["numbers_format"]
    assert stored_format["version"] == 2
    assert [t["derived"] for t in stored_format["triggers"]] == [
        [["value"]], [["value", "baseline"]] * 2, [["value", "baseline", "change_pct"]], [["value", "baseline"]]]
    assert [t["scale"] for t in stored_format["triggers"]] == [1.0, 1.0, 1.0, 1.0]


def test_size__is_the_numbers_left_after_those_compressed(workspace):
    many = segments(fresh_campaign(workspace), 40)
    for segment in many:
        add_buckets(segment, [GOOD, BAD])
    evaluation = _run(active_rule(workspace, triggers=[CTR_DROP])).evaluation

    [stored] = evaluation.inputs["triggers"]
    [stored_format] = evaluation.inputs["numbers_format"]["triggers"]
    floats = sum(len(w["numbers"]) - len(derived)
                 for w, derived in zip(stored["windows"], stored_format["derived"], strict=True))
    codes = 2 + 2 + 2 * len(stored["windows"])  # decision, staleness; trigger status, streak; per window 2
    names = sum(len(s.name.encode()) + 1 for s in many) - 1
    columns = len(many) * (8 * 2 + 2 * codes + 8 * floats) + names
    assert len(zstandard.ZstdDecompressor().decompress(evaluation.numbers)) == columns
    assert len(evaluation.numbers) < columns / 4


def test_a_number_that_would_not_recompute_exactly__is_stored(workspace, three_segments):
    decisions = _run(active_rule(workspace, triggers=[CTR_BELOW_4_PCT])).segments
    numbers = decisions.triggers[0].windows[0].numbers
    numbers["value"] = np.nextafter(numbers["value"], np.inf)  # one bit off what numerator / denominator give

    inputs, stored = decisions.to_stored()

    assert inputs["numbers_format"]["triggers"][0]["derived"] == [[]]
    assert SegmentDecisions.from_stored(inputs, stored).rows() == decisions.rows()


def test_evaluation_stored_as_raw_arrays__reads_the_same_rows(workspace, three_segments, costly_segments):
    result = _run(active_rule(workspace, triggers=EVERY_KIND, match="any"))
    inputs = {key: value for key, value in result.evaluation.inputs.items() if key != "numbers_format"}

    before_format_2 = Evaluation(inputs=inputs, numbers=_stored_as_raw_arrays(result.segments))

    assert evaluation_segment_rows(before_format_2) == result.decisions


def _stored_as_raw_arrays(decisions: SegmentDecisions) -> bytes:
    """Format 1, as evaluations were stored before format 2: every column, uncompressed, one after the other."""
    codes, floats = [decisions.codes, decisions.stale_codes], []
    for trigger_columns in decisions.triggers:
        codes += [trigger_columns.status, trigger_columns.consecutive]
        for window in trigger_columns.windows:
            codes += [window.status, window.reason_codes]
            floats += window.numbers.values()
    return b"".join([np.stack([decisions.segment_ids, decisions.campaign_ids]).astype("<i8").tobytes(),
                     np.stack(codes).astype("<i2").tobytes(), np.stack(floats).astype("<f8").tobytes(),
                     "\0".join(decisions.names).encode()])


def test_inputs_people_read__leave_out_the_key_to_the_stored_bytes(workspace, three_segments):
    evaluation = _run(active_rule(workspace, triggers=[CTR_BELOW_4_PCT])).evaluation

    assert "numbers_format" in evaluation.inputs and "numbers_format" not in evaluation_inputs(evaluation)


def test_evaluation_recorded_before_the_columns__reads_its_json_rows():
    legacy = Evaluation(inputs={"segments": [{"segment_id": 1, "decision": "fired"},
                                             {"segment_id": 2, "decision": "not_fired"}]})

    assert evaluation_segment_rows(legacy, [2]) == [{"segment_id": 2, "decision": "not_fired"}]


def test_empty_decisions__count_nothing():
    empty = SegmentDecisions()

    assert (len(empty), empty.rows(), empty.fired_segment_ids(), empty.to_stored()[1]) == (0, [], [], b"")
    assert set(empty.counts().values()) == {0}
