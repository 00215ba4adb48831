"""The analysis on hand-made counters: guards (minimum data, fixed horizon, SRM), direction, ratios, arms."""

import json

import numpy as np
import pandas as pd
import pytest

from campaigns.models import COUNTER_FIELDS, MONEY_FIELDS
from experiments.analysis import Arm, Guardrail, Outcome, Plan, analyse

ARMS = [Arm("a", "Control", True, 1.0), Arm("b", "Variant", False, 1.0)]


def _frame(rows_by_arm: dict[str, list[dict]]) -> pd.DataFrame:
    rows = [{"arm": arm, "segment_id": 1, "bucket_start": i, **row}
            for arm, rows in rows_by_arm.items() for i, row in enumerate(rows)]
    frame = pd.DataFrame(rows)
    # As the selector gives it: every counter a column, 0 where nothing was counted.
    for name in (*COUNTER_FIELDS, *MONEY_FIELDS):
        frame[name] = frame[name].astype(float) if name in frame else 0.0
    return frame.fillna(0.0)


def _rates(**arms) -> pd.DataFrame:
    """arm=(clicks, impressions) as one bucket each."""
    return _frame({arm: [{"clicks": c, "impressions": n}] for arm, (c, n) in arms.items()})


def _plan(**fields) -> Plan:
    return Plan(**{"method": "fixed", "alpha": 0.05, "primary_metric": "ctr", **fields})


def test_analyse__an_arm_below_the_minimum__takes_no_decision():
    analysis = analyse(_plan(min_exposure=50_000), ARMS, _rates(a=(1000, 40_000), b=(2000, 40_000)))

    assert analysis.outcome == Outcome.INSUFFICIENT_DATA and analysis.winner_key is None
    assert "50,000 impressions" in analysis.summary


def test_analyse__fixed_before_the_planned_sample__waits_even_when_significant():
    analysis = analyse(_plan(planned_sample=50_000), ARMS, _rates(a=(1000, 40_000), b=(2000, 40_000)))

    assert analysis.outcome == Outcome.WAITING_FOR_SAMPLE


def test_analyse__fixed_at_the_horizon_without_a_difference__keeps_the_control():
    analysis = analyse(_plan(planned_sample=40_000), ARMS, _rates(a=(1000, 40_000), b=(1010, 40_000)))

    assert analysis.outcome == Outcome.NO_DIFFERENCE and analysis.concludes


def test_analyse__sequential_without_a_difference__goes_on():
    analysis = analyse(_plan(method="sequential"), ARMS, _rates(a=(1000, 40_000), b=(1010, 40_000)))

    assert analysis.outcome == Outcome.INCONCLUSIVE and not analysis.concludes


def test_analyse__variant_better__wins_with_its_effect_and_interval():
    analysis = analyse(_plan(), ARMS, _rates(a=(1000, 40_000), b=(1200, 40_000)))

    assert (analysis.outcome, analysis.winner_key) == (Outcome.TREATMENT_WINS, "b")
    control, variant = analysis.variants
    assert control["verdict"] == "control" and control["value"] == pytest.approx(0.025)
    assert variant["effect"] == pytest.approx(0.2)
    assert 0 < variant["ci_low"] < 0.2 < variant["ci_high"]
    assert variant["p_value"] < 0.05


def test_analyse__lower_is_better_metric__a_lower_variant_wins():
    frame = _frame({"a": [{"bounces": 400, "sessions": 1000}] * 5, "b": [{"bounces": 300, "sessions": 1000}] * 5})
    analysis = analyse(_plan(primary_metric="bounce_rate"), ARMS, frame)

    assert (analysis.outcome, analysis.winner_key) == (Outcome.TREATMENT_WINS, "b")
    assert analysis.variants[1]["effect"] < 0 and analysis.variants[1]["verdict"] == "better"


def test_analyse__every_variant_worse__the_control_wins():
    analysis = analyse(_plan(), ARMS, _rates(a=(1200, 40_000), b=(1000, 40_000)))

    assert (analysis.outcome, analysis.winner_key) == (Outcome.CONTROL_WINS, "a")


def test_analyse__ratio_metric__is_tested_on_per_bucket_values():
    rng = np.random.default_rng(3)
    spend = rng.uniform(50, 150, size=(2, 60))
    revenue = spend * np.array([[2.0], [2.6]]) * rng.normal(1, 0.1, size=(2, 60))
    frame = _frame({arm: [{"spend": s, "revenue": r} for s, r in zip(spend[i], revenue[i], strict=True)]
                    for i, arm in enumerate(("a", "b"))})
    analysis = analyse(_plan(primary_metric="roas"), ARMS, frame)

    assert (analysis.outcome, analysis.winner_key) == (Outcome.TREATMENT_WINS, "b")
    assert analysis.variants[1]["sample"] == 60  # observations, not spend
    assert analysis.variants[1]["effect"] == pytest.approx(0.3, abs=0.05)


def test_analyse__several_variants__the_best_significant_one_wins():
    arms = [*ARMS, Arm("c", "Variant C", False, 1.0)]
    frame = _rates(a=(1000, 40_000), b=(1150, 40_000), c=(1300, 40_000))
    analysis = analyse(_plan(alpha=0.025), arms, frame)

    assert (analysis.outcome, analysis.winner_key) == (Outcome.TREATMENT_WINS, "c")
    assert [row["verdict"] for row in analysis.variants[1:]] == ["better", "better"]


def test_analyse__split_off__is_flagged_and_blocks_the_decision():
    frame = _rates(a=(100, 1000), b=(200, 1200))
    blocked = analyse(_plan(), ARMS, frame)
    bandit = analyse(_plan(check_srm=False), ARMS, frame)

    assert blocked.srm_blocked and blocked.outcome == Outcome.SRM_MISMATCH
    assert blocked.srm_p_value == pytest.approx(2.0079e-05, rel=1e-4)  # REFERENCE_VALUES.md (gbstats)
    assert (bandit.srm_p_value, bandit.outcome) == (None, Outcome.TREATMENT_WINS)


def test_analyse__guardrail_worse_beyond_its_threshold__stops():
    frame = _frame({"a": [{"clicks": 1000, "impressions": 40_000, "bounces": 300, "sessions": 1000}] * 5,
                    "b": [{"clicks": 1200, "impressions": 40_000, "bounces": 400, "sessions": 1000}] * 5})
    harmed = analyse(_plan(guardrails=(Guardrail("bounce_rate", 0.10),)), ARMS, frame)
    tolerated = analyse(_plan(guardrails=(Guardrail("bounce_rate", 0.50),)), ARMS, frame)

    assert harmed.outcome == Outcome.GUARDRAIL_HARM and harmed.stops
    assert harmed.variants[1]["guardrails"][0]["harm"] is True
    assert tolerated.outcome == Outcome.TREATMENT_WINS  # worse, but by less than its threshold


def test_analyse__no_data__is_insufficient_and_json_safe():
    empty = pd.DataFrame(columns=["arm", "segment_id", "bucket_start", "clicks", "impressions"])
    analysis = analyse(_plan(min_exposure=1), ARMS, empty)

    assert analysis.outcome == Outcome.INSUFFICIENT_DATA
    json.dumps(analysis.variants, allow_nan=False)
