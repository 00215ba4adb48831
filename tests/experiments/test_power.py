"""Power analysis: the sample each arm needs and how long the campaign's traffic takes to give it."""

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from experiments.models import Experiment, Variant
from experiments.power import power_analysis


def _experiment(**fields) -> Experiment:
    fields = {"primary_metric": "ctr", "alpha": Decimal("0.05"), "power": Decimal("0.80"),
              "minimum_detectable_effect_pct": Decimal("10"), **fields}
    return Experiment(**fields)


def _arms(*weights) -> list[Variant]:
    return [Variant(key=f"arm{i}", weight=Decimal(w), is_control=i == 0) for i, w in enumerate(weights)]


def _history(**counters) -> pd.DataFrame:
    return pd.DataFrame([{"segment_id": 1, **{k: float(v) for k, v in counters.items()}}])


def test_power_analysis__rate_20_pct_mde_10_pct__matches_evan_millers_6347_per_arm():
    plan = power_analysis(_experiment(), _arms(1, 1), _history(clicks=2000, impressions=10_000))

    assert plan.baseline == pytest.approx(0.2)
    assert plan.sample_per_arm == 6347  # REFERENCE_VALUES.md: Evan Miller's calculator
    assert plan.unit == "impressions"
    # 10,000 impressions in 7 days, half to each arm: 6,347 / 714.3 a day = 8.9 -> 9 days.
    assert plan.daily_sample == pytest.approx(10_000 / 7)
    assert plan.expected_days == 9
    assert plan.problem == ""


def test_power_analysis__three_arms__tests_each_at_alpha_over_two_and_waits_for_the_smallest_arm():
    two = power_analysis(_experiment(), _arms(1, 1), _history(clicks=2000, impressions=10_000))
    three = power_analysis(_experiment(), _arms(2, 1, 1), _history(clicks=2000, impressions=10_000))

    assert three.alpha_per_comparison == pytest.approx(0.025)
    assert three.sample_per_arm > two.sample_per_arm
    assert three.smallest_arm_share == pytest.approx(0.25)
    assert three.expected_days == int(np.ceil(three.sample_per_arm / (10_000 / 7 * 0.25)))


def test_power_analysis__ratio_metric__sizes_per_bucket_observations_from_their_spread():
    spend = np.array([10.0, 12, 8, 11, 9, 10, 14, 6] * 7)
    history = pd.DataFrame({"segment_id": 1, "spend": spend, "revenue": spend * 3, "conversions": 1.0})
    history.loc[::2, "revenue"] *= 1.2  # some spread in ROAS
    plan = power_analysis(_experiment(primary_metric="roas"), _arms(1, 1), history)

    roas = history["revenue"] / history["spend"]
    expected = 2 * ((1.959964 + 0.841621) * roas.std() / (0.10 * roas.mean())) ** 2
    assert plan.unit == "segment-buckets"
    assert plan.sample_per_arm == int(np.ceil(expected))
    assert plan.daily_sample == pytest.approx(len(history) / 7)


def test_power_analysis__no_traffic__says_why_instead_of_a_plan():
    plan = power_analysis(_experiment(), _arms(1, 1), _history(clicks=0, impressions=0))

    assert (plan.sample_per_arm, plan.expected_days) == (None, None)
    assert "no traffic" in plan.problem


def test_power_analysis__baseline_too_high_for_the_mde__says_why():
    plan = power_analysis(_experiment(minimum_detectable_effect_pct=Decimal("50")), _arms(1, 1),
                          _history(clicks=900, impressions=1000))

    assert plan.sample_per_arm is None and "no room" in plan.problem
