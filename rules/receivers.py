"""Receivers of other apps' signals. Connected in RulesConfig.ready()."""

from campaigns.signals import metrics_ingested

from .tasks import evaluate_after_ingestion


def enqueue_evaluation_after_ingestion(sender, *, workspace_id: int, campaign_ids: list[int], **kwargs) -> None:
    """Evaluate the rules touched by new metrics, on a worker.

    `metrics_ingested` is sent after the ingestion transaction commits (never inside it), so a
    plain `.delay()` is right here: the worker will see the facts, and a rolled-back batch
    never reaches this point. The ingestion sends the signal robustly: should the broker be
    down, the error is logged and the beat evaluates the rules at their next interval.
    """
    evaluate_after_ingestion.delay(workspace_id, list(campaign_ids))


def connect() -> None:
    metrics_ingested.connect(enqueue_evaluation_after_ingestion, dispatch_uid="rules.evaluate_after_ingestion")
