"""Reads of experiments and of the metric facts their analyses use.

Facts are summed in SQL per (arm, segment, bucket): per-bucket rows are what ratio metrics
are tested on, and their sums are the counts that rate metrics are tested on.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime

import pandas as pd
from django.db.models import Case, CharField, Q, QuerySet, Sum, Value, When

from campaigns.models import MetricFact

from .models import Experiment, ExperimentResult, Variant

# Exposure: the traffic an arm received, against which its intended share is checked (SRM).
EXPOSURE_COUNTER = "impressions"


def variant_facts_filter(variant: Variant) -> Q:
    """Facts tagged with the arm's key, and untagged facts of what the arm links (its segment, creative)."""
    owned = Q(variant=variant.key)
    linked = {}
    if variant.segment_id is not None:
        linked["segment_id"] = variant.segment_id
    if variant.creative_id is not None:
        linked["creative_id"] = variant.creative_id
    if linked:
        owned |= Q(variant="", **linked)
    return owned


def arm_bucket_counters(*, experiment: Experiment, variants: Sequence[Variant], start: datetime, end: datetime,
                        counters: Iterable[str]) -> pd.DataFrame:
    """Counters per (arm key, segment, bucket) of the experiment's campaign in [start, end)."""
    counters = sorted(set(counters))
    arm = Case(*(When(variant_facts_filter(v), then=Value(v.key)) for v in variants), default=Value(""),
               output_field=CharField())
    rows = (
        MetricFact.objects.filter(campaign_id=experiment.campaign_id, bucket_start__gte=start, bucket_start__lt=end)
        .annotate(arm=arm).exclude(arm="")
        .values("arm", "segment_id", "bucket_start")
        .annotate(**{name: Sum(name) for name in counters})
        .order_by("arm", "segment_id", "bucket_start")
    )
    return _frame(rows, ["arm", "segment_id", "bucket_start", *counters], counters)


def campaign_bucket_counters(*, campaign_id: int, start: datetime, end: datetime,
                             counters: Iterable[str]) -> pd.DataFrame:
    """Counters per (segment, bucket) of a campaign in [start, end), every variant included."""
    counters = sorted(set(counters))
    rows = (
        MetricFact.objects.filter(campaign_id=campaign_id, bucket_start__gte=start, bucket_start__lt=end)
        .values("segment_id", "bucket_start")
        .annotate(**{name: Sum(name) for name in counters})
        .order_by("segment_id", "bucket_start")
    )
    return _frame(rows, ["segment_id", "bucket_start", *counters], counters)


def _frame(rows: QuerySet, columns: list[str], counters: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(list(rows), columns=columns)
    for name in counters:
        # Money sums arrive as Decimal: statistics work in floats.
        frame[name] = pd.to_numeric(frame[name]).astype(float)
    return frame


def experiments_running() -> QuerySet[Experiment]:
    return Experiment.objects.filter(status=Experiment.Status.RUNNING)


def experiment_with_variants(pk: int) -> Experiment | None:
    return (Experiment.objects.select_related("workspace", "campaign", "winner")
            .prefetch_related("variants__segment", "variants__creative").filter(pk=pk).first())


def experiment_results(experiment: Experiment) -> QuerySet[ExperimentResult]:
    return experiment.results.order_by("computed_at", "id")


def running_keys_in_campaign(*, campaign_id: int, exclude_experiment_id: int) -> set[str]:
    """Arm keys of the campaign's other running experiments: facts tagged with them are theirs."""
    return set(
        Variant.objects.filter(experiment__campaign_id=campaign_id, experiment__status=Experiment.Status.RUNNING)
        .exclude(experiment_id=exclude_experiment_id).values_list("key", flat=True)
    )
