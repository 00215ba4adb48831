"""Bandit mode: each cycle, Thompson sampling re-weights the arms and moves budget between their segments.

An arm's new weight is its posterior probability of being the best (Beta posteriors of the
primary rate since the start), with every arm keeping the experiment's floor, so a losing
arm still gathers data (`statistics.thompson_weights`). The arms' segments' daily budgets are
then asked to follow the weights, their total unchanged; each move passes the same caps as
any change and is recorded and applied through the change pipeline, as one batch per cycle.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import numpy as np
from django.db import transaction
from django.utils import timezone

from audit.actors import Actor
from campaigns.metrics import get_metric
from campaigns.models import Segment
from rules.actions import split_exactly
from rules.models import Change
from rules.targets import QUANTUM

from .changes import ChangePlanner, batch_prefix, record_changes
from .models import Experiment, Variant
from .selectors import arm_bucket_counters
from .services import variant_weights_set
from .statistics import thompson_weights

WEIGHT_QUANTUM = Decimal("0.0001")


@dataclass(frozen=True)
class BanditCycle:
    weights: dict[str, Decimal]
    changes: list[Change]


def bandit_batch_id(experiment: Experiment, now: datetime) -> str:
    return f"{batch_prefix(experiment)}bandit:{now:%Y%m%dT%H%M}"


@transaction.atomic
def experiment_rebalance(*, actor: Actor, experiment: Experiment, now: datetime | None = None,
                         rng: np.random.Generator | None = None) -> BanditCycle | None:
    """One bandit cycle; None when the experiment is not a running bandit (any more)."""
    experiment = Experiment.objects.select_for_update().select_related("workspace").get(pk=experiment.pk)
    if experiment.status != Experiment.Status.RUNNING or not experiment.bandit:
        return None
    now = now or timezone.now()
    variants = list(experiment.variants.order_by("pk"))
    # Seeded by experiment and cycle: re-running a cycle draws the same weights.
    rng = rng or np.random.default_rng([experiment.pk, int(now.timestamp()) // 60])
    weights = _thompson(experiment, variants, now, rng)
    variant_weights_set(actor=actor, experiment=experiment, weights=weights, reason="Bandit cycle (Thompson sampling)")
    planned = _budget_moves(experiment, variants, weights, now)
    changes = record_changes(actor=actor, experiment=experiment, planned=planned,
                             batch_id=bandit_batch_id(experiment, now), submit=True, now=now)
    return BanditCycle(weights, changes)


def _thompson(experiment: Experiment, variants: list[Variant], now: datetime,
              rng: np.random.Generator) -> dict[str, Decimal]:
    metric = get_metric(experiment.primary_metric)
    frame = arm_bucket_counters(experiment=experiment, variants=variants, start=experiment.started_at, end=now,
                                counters={metric.numerator, metric.denominator})
    totals = frame.groupby("arm")[[metric.numerator, metric.denominator]].sum() if len(frame) else None
    successes = [_total(totals, v.key, metric.numerator) for v in variants]
    trials = [_total(totals, v.key, metric.denominator) for v in variants]
    shares = thompson_weights(successes, trials, floor=float(experiment.bandit_floor_pct) / 100, rng=rng)
    return {v.key: max(WEIGHT_QUANTUM, Decimal(str(share)).quantize(WEIGHT_QUANTUM))
            for v, share in zip(variants, shares, strict=True)}


def _total(totals, key: str, column: str) -> float:
    return float(totals.at[key, column]) if totals is not None and key in totals.index else 0.0


def _budget_moves(experiment: Experiment, variants: list[Variant], weights: dict[str, Decimal], now: datetime):
    segments = {s.pk: s for s in Segment.objects.filter(pk__in=[v.segment_id for v in variants])
                .select_related("campaign")}
    arms = [(segments[v.segment_id], weights[v.key]) for v in variants]
    total = sum((segment.daily_budget for segment, _ in arms), Decimal(0))
    targets = split_exactly(total, [weight for _, weight in arms])
    givers = [(s, (s.daily_budget - t).quantize(QUANTUM)) for (s, _), t in zip(arms, targets, strict=True)
              if t < s.daily_budget]
    receivers = [(s, (t - s.daily_budget).quantize(QUANTUM)) for (s, _), t in zip(arms, targets, strict=True)
                 if t > s.daily_budget]
    if not givers or not receivers:
        return []

    def reason(segment: Segment, what: str) -> str:
        return (f"Experiment “{experiment.name}” bandit cycle: {segment.name} {what} "
                f"(weights {', '.join(f'{k} {w}' for k, w in weights.items())})")

    return ChangePlanner(experiment, now).move_budget(givers, receivers, reason)
