"""Celery tasks of the rules app: thin, taking ids, idempotent (so `acks_late` is safe).

  evaluate_due_rules        beat, every minute (rules.schedules): claims the rules that are due
                            and fans them out as chunk tasks, per workspace, at most
                            RULES_EVALUATION_CHUNK_SIZE rules per task, so that one large
                            workspace spreads over several workers;
  evaluate_rules_chunk      evaluates a chunk of rules as of the beat's time;
  evaluate_after_ingestion  enqueued by rules.receivers when metrics were ingested: evaluates the
                            rules whose scope the new metrics touch, at once;
  refresh_metric_days       beat, every 15 minutes (rules.schedules): rolls up the days that are
                            over and changed since, in every workspace (campaigns.rollups), so
                            that the first cycle after midnight finds them done;
  escalate_overdue_changes  beat, every minute: changes past their approval level's SLA escalate,
                            each claimed once by a conditional update (rules.approvals);
  expire_waiting_changes    beat, every 5 minutes: changes waiting past their expiry expire;
  resend_lost_pushes        beat, every 5 minutes: pending pushes whose task was lost (the broker
                            down when their change committed) are claimed and enqueued again;
  deliver_notification      one e-mail or webhook (rules.notifications), enqueued on commit;
  push_change               one applied change to one connector (rules.pushes), enqueued on commit,
                            behind the connector's circuit breaker.

Re-running any of them is harmless: an evaluation over a window already recorded creates and
applies no change (the pipeline's idempotency keys). Database outages (OperationalError)
are retried with exponential backoff; a worker lost mid-task gives the message back.
"""

import logging
from collections import defaultdict
from datetime import datetime

from celery import shared_task
from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import timezone

from accounts.models import Workspace
from audit.actors import Actor
from campaigns.rollups import metric_days_refresh

from .approvals import changes_escalate_overdue, changes_expire
from .engine import evaluate_rules
from .exceptions import CircuitOpen, DeliveryFailed
from .models import Evaluation, Rule
from .notifications import notification_deliver
from .pushes import change_push_attempt, pushes_resend_lost
from .selectors import rules_due, rules_touching

logger = logging.getLogger(__name__)

_IDEMPOTENT_TASK = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(**_IDEMPOTENT_TASK)
def evaluate_due_rules() -> int:
    """Fan the due rules out as chunk tasks; returns how many rules were enqueued."""
    now = timezone.now()
    chunks = _chunks_by_workspace(_claim_due_rules(now), settings.RULES_EVALUATION_CHUNK_SIZE)
    for rule_ids in chunks:
        evaluate_rules_chunk.delay(rule_ids, now.isoformat(), Evaluation.Source.SCHEDULE)
    return sum(len(chunk) for chunk in chunks)


@shared_task(**_IDEMPOTENT_TASK)
def evaluate_rules_chunk(rule_ids: list[int], window_end_iso: str, source: str) -> int:
    """Evaluate these rules as of `window_end_iso` (the engine floors it to a whole bucket)."""
    results = evaluate_rules(rule_ids=rule_ids, now=datetime.fromisoformat(window_end_iso), source=source,
                             actor=Actor.worker("evaluate_rules_chunk"))
    return len(results)


@shared_task(**_IDEMPOTENT_TASK)
def evaluate_after_ingestion(workspace_id: int, campaign_ids: list[int]) -> int:
    rule_ids = list(rules_touching(workspace_id=workspace_id, campaign_ids=campaign_ids).values_list("pk", flat=True))
    if not rule_ids:
        return 0
    results = evaluate_rules(rule_ids=rule_ids, now=timezone.now(), source=Evaluation.Source.EVENT,
                             actor=Actor.worker("evaluate_after_ingestion"))
    return len(results)


@shared_task(**_IDEMPOTENT_TASK)
def refresh_metric_days() -> int:
    """Roll up the stale days that are over, in every workspace; returns how many. Each day is
    its own transaction: a task stopped by its time limit leaves the rest to the next run."""
    workspace_ids = list(Workspace.objects.values_list("pk", flat=True))
    return metric_days_refresh(workspace_ids=workspace_ids, before=timezone.now()).days


def _claim_due_rules(now: datetime) -> list[tuple[int, int]]:
    """(rule id, workspace id) of the due rules, claimed so the next beat does not enqueue them again.

    When workers lag behind the beat, a rule still waiting in the queue is due again a minute
    later; marking it evaluated now (a conditional claim, as healthchecks does with its flips)
    keeps it from piling up. The engine sets the time again when the evaluation is recorded.
    Rows locked by another claimer are skipped rather than waited for.
    """
    with transaction.atomic():
        due = list(rules_due(now=now).select_for_update(skip_locked=True, of=("self",))
                   .order_by("workspace_id", "pk").values_list("pk", "workspace_id"))
        Rule.objects.filter(pk__in=[pk for pk, _ in due]).update(last_evaluated_at=now)
    return due


def _chunks_by_workspace(rules: list[tuple[int, int]], size: int) -> list[list[int]]:
    by_workspace: dict[int, list[int]] = defaultdict(list)
    for rule_id, workspace_id in rules:
        by_workspace[workspace_id].append(rule_id)
    return [ids[start:start + size] for ids in by_workspace.values() for start in range(0, len(ids), size)]


# --- governance ------------------------------------------------------------------------------

@shared_task(**_IDEMPOTENT_TASK)
def escalate_overdue_changes() -> int:
    return len(changes_escalate_overdue())


@shared_task(**_IDEMPOTENT_TASK)
def expire_waiting_changes() -> int:
    return len(changes_expire())


@shared_task(**_IDEMPOTENT_TASK)
def resend_lost_pushes() -> int:
    return len(pushes_resend_lost(now=timezone.now()))


# Sending is retried longer than a database hiccup: an endpoint may be down for a while. The
# last attempt marks the row failed (kept in the delivery or push log) instead of raising.
_DELIVERY_TASK = {
    **_IDEMPOTENT_TASK,
    "autoretry_for": (OperationalError, DeliveryFailed, CircuitOpen),
    "retry_backoff": 30,
    "retry_backoff_max": 3600,  # rules.pushes.PUSH_RETRY_LOST_AFTER waits longer than this
    "max_retries": 10,
}


@shared_task(bind=True, **_DELIVERY_TASK)
def deliver_notification(self, delivery_id: int) -> str | None:
    delivery = notification_deliver(delivery_id=delivery_id, final=self.request.retries >= self.max_retries)
    return delivery.status if delivery else None


@shared_task(bind=True, **_DELIVERY_TASK)
def push_change(self, push_id: int) -> str | None:
    push = change_push_attempt(push_id=push_id, final=self.request.retries >= self.max_retries)
    return push.status if push else None
