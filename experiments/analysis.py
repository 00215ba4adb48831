"""One analysis of an experiment: from its arms' counters to effects, intervals and a decision.

Pure (no database): `analyse(plan, arms, frame)` takes the counters per (arm, segment, bucket)
since the start. The steps, each of which can end the analysis without a decision:

1. Minimum data: every arm needs `min_exposure` of the primary metric's denominator.
2. Sample ratio mismatch: a χ² test of each arm's impressions against its intended share. A
   split this far off means assignment is broken, so no number may be acted on (not even a
   guardrail's). Bandit experiments move their split on purpose and skip it.
3. Guardrails: a variant significantly worse on a guardrail metric, by at least its harm
   threshold, stops the experiment. Guardrails are looked at on every run, so under the
   fixed-horizon method they are tested sequentially (always valid), not at the horizon.
4. Fixed horizon: no decision before every arm reached the planned sample.
5. The primary metric: a variant significantly better wins (the best of them, by effect);
   the control wins when every variant is significantly worse; at a fixed horizon, anything
   else means no difference (the control is kept); otherwise the analysis goes on.

Effects are relative to the control. "Better" follows the metric's direction (a lower CPA is
better). Rates are tested on their trials; ratios on their per-(segment, bucket) values.
"""

import math
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import pandas as pd

from campaigns.metrics import DerivedMetric, MetricKind, get_metric

from . import statistics as st
from .models import Experiment
from .power import ratio_observations
from .selectors import EXPOSURE_COUNTER

Method = Experiment.Method


class Outcome(StrEnum):
    INSUFFICIENT_DATA = "insufficient_data"
    SRM_MISMATCH = "srm_mismatch"
    GUARDRAIL_HARM = "guardrail_harm"
    WAITING_FOR_SAMPLE = "waiting_for_sample"
    INCONCLUSIVE = "inconclusive"
    TREATMENT_WINS = "treatment_wins"
    CONTROL_WINS = "control_wins"
    NO_DIFFERENCE = "no_difference"


# Outcomes that end the experiment: concluded (a decision) or stopped (harm).
CONCLUDING = frozenset({Outcome.TREATMENT_WINS, Outcome.CONTROL_WINS, Outcome.NO_DIFFERENCE})
STOPPING = frozenset({Outcome.GUARDRAIL_HARM})

BETTER, WORSE, INCONCLUSIVE, INSUFFICIENT = "better", "worse", "inconclusive", "insufficient_data"


@dataclass(frozen=True)
class Arm:
    key: str
    name: str
    is_control: bool
    weight: float


@dataclass(frozen=True)
class Guardrail:
    metric: str
    max_harm: float  # a fraction of the control's value


@dataclass(frozen=True)
class Plan:
    method: str
    alpha: float  # per comparison (already divided over the variants)
    primary_metric: str
    guardrails: tuple[Guardrail, ...] = ()
    min_exposure: int = 0
    planned_sample: int | None = None  # per arm, fixed horizon
    check_srm: bool = True

    @property
    def counters(self) -> set[str]:
        metrics = [get_metric(self.primary_metric), *(get_metric(g.metric) for g in self.guardrails)]
        return {EXPOSURE_COUNTER, *(c for m in metrics for c in (m.numerator, m.denominator))}


@dataclass
class Analysis:
    outcome: Outcome
    summary: str
    winner_key: str | None = None
    srm_chi2: float | None = None
    srm_p_value: float | None = None
    srm_blocked: bool = False
    variants: list[dict] = field(default_factory=list)

    @property
    def concludes(self) -> bool:
        return self.outcome in CONCLUDING

    @property
    def stops(self) -> bool:
        return self.outcome in STOPPING


def analyse(plan: Plan, arms: list[Arm], frame: pd.DataFrame) -> Analysis:
    arms = sorted(arms, key=lambda a: not a.is_control)  # the control first
    primary = get_metric(plan.primary_metric)
    samples = {a.key: _ArmSample.of(primary, frame, a.key) for a in arms}
    comparison = _compare(primary, plan, plan.method, arms, samples)
    guardrails = [_guardrail_rows(plan, g, arms, frame) for g in plan.guardrails]
    rows = _variant_rows(arms, samples, comparison, guardrails, primary)
    analysis = Analysis(Outcome.INCONCLUSIVE, "", variants=rows)
    _check_srm(analysis, plan, arms, frame)
    _decide(analysis, plan, arms, samples, comparison, guardrails, primary)
    return analysis


# --- per-arm samples -------------------------------------------------------------------------


@dataclass(frozen=True)
class _ArmSample:
    numerator: float
    denominator: float
    observations: np.ndarray  # per-(segment, bucket) values, for ratio metrics

    @classmethod
    def of(cls, metric: DerivedMetric, frame: pd.DataFrame, key: str) -> "_ArmSample":
        rows = frame[frame["arm"] == key] if len(frame) else frame
        observations = ratio_observations(metric, rows) if metric.kind == MetricKind.RATIO else np.array([])
        return cls(float(rows[metric.numerator].sum()) if len(rows) else 0.0,
                   float(rows[metric.denominator].sum()) if len(rows) else 0.0, observations)

    def size(self, metric: DerivedMetric) -> float:
        """The statistical sample: trials for a rate, observations for a ratio."""
        return self.denominator if metric.kind == MetricKind.RATE else float(len(self.observations))

    def moments(self) -> tuple[float, float, float]:
        return float(self.observations.sum()), float((self.observations**2).sum()), float(len(self.observations))


# --- comparisons -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Comparison:
    """Each variant against the control, in the order of the variants (arms without the control)."""

    effect: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray  # NaN under the Bayesian method
    chance_to_win: np.ndarray  # NaN under the frequentist methods
    verdict: list[str]  # better / worse / inconclusive / insufficient_data, in the metric's direction


def _compare(metric: DerivedMetric, plan: Plan, method: str, arms: list[Arm],
             samples: dict[str, _ArmSample]) -> _Comparison:
    control, variants = samples[arms[0].key], [samples[a.key] for a in arms[1:]]
    if metric.kind == MetricKind.RATE:
        args = (control.numerator, control.denominator, [v.numerator for v in variants],
                [v.denominator for v in variants])
        tests = (st.frequentist_proportions, st.sequential_proportions, st.bayesian_proportions)
    else:
        args = (*control.moments(), *(list(column) for column in zip(*(v.moments() for v in variants), strict=True)))
        tests = (st.frequentist_means, st.sequential_means, st.bayesian_means)
    frequentist, sequential, bayesian = tests
    if method == Method.BAYESIAN:
        # Either tail decides (variant better, or control better): α/2 each, α in all, as the frequentist tests.
        result = bayesian(*args, alpha=plan.alpha, win_threshold=1 - plan.alpha / 2)
        effect, p_value, chance = result.lift, np.nan, result.chance_to_win
    else:
        if method == Method.SEQUENTIAL:
            result = sequential(*args, alpha=plan.alpha, target_n=_sequential_target(plan))
        else:
            result = frequentist(*args, alpha=plan.alpha)
        effect, p_value, chance = result.effect, result.p_value, np.nan
    count = len(variants)
    decisions = np.atleast_1d(np.asarray(result.decision, dtype=object))
    return _Comparison(
        effect=_array(effect, count), ci_low=_array(result.ci_low, count), ci_high=_array(result.ci_high, count),
        p_value=_array(p_value, count), chance_to_win=_array(chance, count),
        verdict=[_verdict(str(d), metric) for d in decisions],
    )


def _sequential_target(plan: Plan) -> float:
    # The confidence sequence is tightest where the test is expected to end: both arms at plan.
    return 2 * plan.planned_sample if plan.planned_sample else st.DEFAULT_SEQUENTIAL_TARGET_N


def _array(values, count: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(values, dtype=float), (count,))


def _verdict(decision: str, metric: DerivedMetric) -> str:
    higher, lower = (BETTER, WORSE) if metric.higher_is_better else (WORSE, BETTER)
    return {st.Decision.TREATMENT_BETTER: higher, st.Decision.CONTROL_BETTER: lower,
            st.Decision.INCONCLUSIVE: INCONCLUSIVE}.get(decision, INSUFFICIENT)


def _guardrail_rows(plan: Plan, guardrail: Guardrail, arms: list[Arm], frame: pd.DataFrame) -> list[dict]:
    """Per variant: the guardrail metric's comparison and whether it shows harm beyond the threshold."""
    metric = get_metric(guardrail.metric)
    samples = {a.key: _ArmSample.of(metric, frame, a.key) for a in arms}
    method = Method.BAYESIAN if plan.method == Method.BAYESIAN else Method.SEQUENTIAL
    comparison = _compare(metric, plan, method, arms, samples)
    rows = []
    for i, arm in enumerate(arms[1:]):
        effect = comparison.effect[i]
        harm = -effect if metric.higher_is_better else effect
        rows.append({
            "metric": metric.name, "max_harm_pct": guardrail.max_harm * 100,
            "value": metric.value(samples[arm.key].numerator, samples[arm.key].denominator),
            "control_value": metric.value(samples[arms[0].key].numerator, samples[arms[0].key].denominator),
            **_numbers(comparison, i),
            "harm": bool(comparison.verdict[i] == WORSE and harm >= guardrail.max_harm),
        })
    return rows


# --- decision --------------------------------------------------------------------------------


def _check_srm(analysis: Analysis, plan: Plan, arms: list[Arm], frame: pd.DataFrame) -> None:
    if not plan.check_srm or not len(frame):
        return
    exposure = frame.groupby("arm")[EXPOSURE_COUNTER].sum()
    counts = [float(exposure.get(a.key, 0.0)) for a in arms]
    chi2, p_value = st.srm_check(counts, [a.weight for a in arms])
    analysis.srm_chi2, analysis.srm_p_value = _finite(chi2), _finite(p_value)
    analysis.srm_blocked = bool(st.srm_blocks_decision(p_value))


def _decide(analysis: Analysis, plan: Plan, arms: list[Arm], samples: dict[str, _ArmSample],
            comparison: _Comparison, guardrails: list[list[dict]], metric: DerivedMetric) -> None:
    smallest = min(samples[a.key].denominator for a in arms)
    harmed = [(arms[i + 1], row) for rows in guardrails for i, row in enumerate(rows) if row["harm"]]
    smallest_sample = min(samples[a.key].size(metric) for a in arms)
    better = [i for i, v in enumerate(comparison.verdict) if v == BETTER]
    if smallest < plan.min_exposure:
        analysis.outcome = Outcome.INSUFFICIENT_DATA
        analysis.summary = (f"Not enough data yet: every arm needs {plan.min_exposure:,} {metric.denominator}; "
                            f"the smallest has {smallest:,.0f}.")
    elif analysis.srm_blocked:
        analysis.outcome = Outcome.SRM_MISMATCH
        analysis.summary = (f"Sample ratio mismatch (p = {analysis.srm_p_value:.2g}): the arms' traffic does not "
                            f"match their intended split, so no decision is taken until assignment is fixed.")
    elif harmed:
        arm, row = harmed[0]
        analysis.outcome = Outcome.GUARDRAIL_HARM
        analysis.summary = (f"Guardrail harmed: {arm.name} changes {row['metric']} by {row['effect']:+.1%} "
                            f"(harm limit {row['max_harm_pct']:g}%); the experiment stops.")
    elif plan.method == Method.FIXED and plan.planned_sample and smallest_sample < plan.planned_sample:
        analysis.outcome = Outcome.WAITING_FOR_SAMPLE
        analysis.summary = (f"Fixed horizon: {smallest_sample:,.0f} of {plan.planned_sample:,} per arm so far; "
                            f"no decision before the planned sample.")
    elif better:
        sign = 1 if metric.higher_is_better else -1
        best = max(better, key=lambda i: sign * comparison.effect[i])
        winner = arms[best + 1]
        analysis.outcome, analysis.winner_key = Outcome.TREATMENT_WINS, winner.key
        analysis.summary = (f"{winner.name} beats the control on {metric.label.lower()}: "
                            f"{comparison.effect[best]:+.1%} ({_interval(comparison, best)}).")
    elif all(v == WORSE for v in comparison.verdict):
        analysis.outcome, analysis.winner_key = Outcome.CONTROL_WINS, arms[0].key
        analysis.summary = f"The control beats every variant on {metric.label.lower()}."
    elif plan.method == Method.FIXED:
        analysis.outcome = Outcome.NO_DIFFERENCE
        analysis.summary = (f"No significant difference on {metric.label.lower()} at the planned sample: "
                            f"the control is kept.")
    else:
        analysis.outcome = Outcome.INCONCLUSIVE
        analysis.summary = f"No decision yet on {metric.label.lower()}; the analysis goes on."


def _interval(comparison: _Comparison, i: int) -> str:
    return f"interval {comparison.ci_low[i]:+.1%} to {comparison.ci_high[i]:+.1%}"


# --- JSON rows -------------------------------------------------------------------------------


def _variant_rows(arms: list[Arm], samples: dict[str, _ArmSample], comparison: _Comparison,
                  guardrails: list[list[dict]], metric: DerivedMetric) -> list[dict]:
    rows = []
    for index, arm in enumerate(arms):
        sample = samples[arm.key]
        row = {
            "key": arm.key, "name": arm.name, "is_control": arm.is_control, "weight": arm.weight,
            "numerator": sample.numerator, "denominator": sample.denominator, "sample": sample.size(metric),
            "value": _finite(metric.value(sample.numerator, sample.denominator)),
        }
        if arm.is_control:
            row.update(effect=0.0, ci_low=None, ci_high=None, p_value=None, chance_to_win=None, verdict="control",
                       guardrails=[])
        else:
            row.update(_numbers(comparison, index - 1), verdict=comparison.verdict[index - 1],
                       guardrails=[rows_of_guardrail[index - 1] for rows_of_guardrail in guardrails])
        rows.append(row)
    return rows


def _numbers(comparison: _Comparison, i: int) -> dict:
    return {"effect": _finite(comparison.effect[i]), "ci_low": _finite(comparison.ci_low[i]),
            "ci_high": _finite(comparison.ci_high[i]), "p_value": _finite(comparison.p_value[i]),
            "chance_to_win": _finite(comparison.chance_to_win[i]), "verdict": comparison.verdict[i]}


def _finite(value) -> float | None:
    """Plain floats for JSON: NaN and infinities (undefined statistics) become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
