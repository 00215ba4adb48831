"""Each trigger kind, end to end from metric facts, against hand-computed and SciPy reference values."""

import warnings

import numpy as np
import pytest
from scipy import stats

from rules.engine import evaluate_rules
from rules.triggers import change_pct, ratio
from tests.rules.facts import NOW, SYSTEM, active_rule, add_buckets, fresh_campaign, segments, trigger

pytestmark = pytest.mark.django_db


def _evaluate(rule):
    [result] = evaluate_rules(rule_ids=[rule.pk], now=NOW, source="manual", actor=SYSTEM, dry_run=True)
    return result


def _only_trigger(result) -> dict:
    [decision] = result.decisions
    [row] = decision["triggers"]
    return {**row, "decision": decision["decision"]}


@pytest.fixture
def segment(workspace):
    return segments(fresh_campaign(workspace), 1)[0]


def test_ratio_and_change__undefined_without_a_positive_divisor__without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = ratio(np.array([3.0, 1.0, 2.0, np.nan]), np.array([4.0, 0.0, -1.0, 2.0]), 100.0)
        change = change_pct(np.array([3.0, 1.0, 1.0, 1.0]), np.array([2.0, 0.0, -1.0, np.nan]))
    np.testing.assert_array_equal(value, [75.0, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(change, [50.0, np.nan, np.nan, np.nan])


def test_threshold__cpa_above__fires_with_the_window_value(workspace, segment):
    add_buckets(segment, [{"spend": 90, "conversions": 3}])
    rule = active_rule(workspace, triggers=[trigger(metric="cpa", kind="threshold", direction="above",
                                                    threshold=25)])
    row = _only_trigger(_evaluate(rule))
    assert row["decision"] == "fired"
    assert row["value"] == pytest.approx(30.0)
    assert (row["numerator"], row["denominator"]) == (90.0, 3.0)
    assert row["reason"] == "Cost per acquisition 30.00 is above 25.00"


@pytest.mark.parametrize(("threshold", "decision"), [(30, "fired"), (50, "not_fired")])
def test_relative_change__ctr_down_40_percent__fires_only_past_the_threshold(workspace, segment, threshold, decision):
    add_buckets(segment, [{"impressions": 1000, "clicks": 50}] * 3 + [{"impressions": 1000, "clicks": 30}])
    rule = active_rule(workspace, triggers=[trigger(metric="ctr", kind="relative_change", direction="below",
                                                    threshold=threshold)])
    row = _only_trigger(_evaluate(rule))
    assert row["decision"] == decision
    assert row["baseline"] == pytest.approx(0.05)
    assert row["value"] == pytest.approx(0.03)
    assert row["change_pct"] == pytest.approx(-40.0)


def test_significant_change__rate__matches_the_statsmodels_reference(workspace, segment):
    # statsmodels GH 2969: 5/83 vs 12/99 -> z = -1.4078304151 for p1 - p2, p = 0.1591812918 two-sided.
    add_buckets(segment, [{"impressions": 83, "clicks": 5}, {}, {}, {"impressions": 99, "clicks": 12}])
    rule = active_rule(workspace, triggers=[trigger(metric="ctr", kind="significant_change", direction="either")])
    row = _only_trigger(_evaluate(rule))
    assert row["statistic"] == pytest.approx(1.4078304151, abs=1e-4)  # current minus baseline
    assert row["p_value"] == pytest.approx(0.1591812918, abs=1e-4)
    assert row["decision"] == "not_fired"


@pytest.mark.parametrize(("confidence", "decision"), [("0.95", "not_fired"), ("0.9", "fired")])
def test_significant_change__rate_rising__one_sided_p_decides_at_the_confidence(workspace, segment, confidence,
                                                                                 decision):
    add_buckets(segment, [{"impressions": 83, "clicks": 5}, {}, {}, {"impressions": 99, "clicks": 12}])
    rule = active_rule(workspace, triggers=[trigger(metric="ctr", kind="significant_change", direction="above",
                                                    confidence=confidence)])
    row = _only_trigger(_evaluate(rule))
    assert row["p_value"] == pytest.approx(stats.norm.sf(1.4078304151), abs=1e-6)  # 0.0796
    assert row["decision"] == decision


def test_significant_change__ratio__is_welch_on_per_bucket_values_like_scipy(workspace, segment):
    baseline = [(10, 1), (24, 2), (33, 3), (9, 1)]  # (spend, conversions): CPA 10, 12, 11, 9
    current = [(40, 2), (45, 3)]  # CPA 20, 15
    add_buckets(segment, [{"spend": s, "conversions": c} for s, c in baseline + current])
    rule = active_rule(workspace, triggers=[trigger(metric="cpa", kind="significant_change", direction="either",
                                                    window_minutes=120, baseline_minutes=240)])
    row = _only_trigger(_evaluate(rule))
    reference = stats.ttest_ind([20, 15], [10, 12, 11, 9], equal_var=False)
    assert row["statistic"] == pytest.approx(reference.statistic, rel=1e-9)
    assert row["p_value"] == pytest.approx(reference.pvalue, rel=1e-9)
    assert row["value"] == pytest.approx(85 / 5)  # the window's own CPA: sum over sum
    assert row["baseline"] == pytest.approx(76 / 7)
    assert row["decision"] == ("fired" if reference.pvalue < 0.05 else "not_fired")


def test_control_limit__rate__uses_the_nist_p_chart(workspace, segment):
    # NIST/SEMATECH 6.3.3.2: p̄ = 0.2313, n = 50 -> LCL 0.0524, UCL 0.4102.
    add_buckets(segment, [{"impressions": 10000, "clicks": 2313}, {}, {}, {"impressions": 50, "clicks": 1}])
    rule = active_rule(workspace, triggers=[trigger(metric="ctr", kind="control_limit", direction="below")])
    row = _only_trigger(_evaluate(rule))
    assert row["lower_limit"] == pytest.approx(0.0524, abs=1e-4)
    assert row["upper_limit"] == pytest.approx(0.4102, abs=1e-4)
    assert row["value"] == pytest.approx(0.02)
    assert row["decision"] == "fired"


def test_control_limit__ratio__is_an_x_bar_chart_of_per_bucket_values(workspace, segment):
    dwell = [30, 32, 28, 31, 29]  # baseline buckets: mean 30, sample variance 10 / 4 = 2.5
    current = [{"sessions": 10, "engaged_seconds": 200}, {"sessions": 30, "engaged_seconds": 660}]  # 20 s, 22 s
    add_buckets(segment, [{"sessions": 10, "engaged_seconds": 10 * d} for d in dwell] + current)
    rule = active_rule(workspace, triggers=[trigger(metric="avg_dwell", kind="control_limit", direction="below",
                                                    window_minutes=120, baseline_minutes=300, k_sigma="3")])
    row = _only_trigger(_evaluate(rule))
    # Limits 30 ± 3 * sqrt(2.5) / sqrt(2 buckets) = 30 ± 3.3541; the statistic is the mean per bucket, 21.
    assert row["lower_limit"] == pytest.approx(26.645898, abs=1e-6)
    assert row["upper_limit"] == pytest.approx(33.354102, abs=1e-6)
    assert row["bucket_mean"] == pytest.approx(21.0)
    assert row["value"] == pytest.approx(860 / 40)  # the window's own sum over sum
    assert (row["baseline_bucket_mean"], row["baseline_buckets"], row["buckets"]) == (30.0, 5, 2)
    assert row["baseline_bucket_std"] == pytest.approx(np.sqrt(2.5))
    assert row["decision"] == "fired"


def test_threshold__spend_pace__divides_by_the_budget_pro_rated_over_the_window(workspace, segment):
    # Daily budget 100 over 60-minute buckets: 100/24 per bucket; spending 10 in one is 2.4x the pace.
    add_buckets(segment, [{"spend": 10}])
    rule = active_rule(workspace, triggers=[trigger(metric="spend_pace", kind="threshold", direction="above",
                                                    threshold="1.2")])
    row = _only_trigger(_evaluate(rule))
    assert row["denominator"] == pytest.approx(100 / 24)
    assert row["value"] == pytest.approx(2.4)
    assert row["decision"] == "fired"
