"""Rules and runs of the change pipeline for tests of actions, changes, tasks and integration."""

from datetime import datetime, timedelta
from decimal import Decimal

from rules.pipeline import PlannedChange, changes_for_evaluation
from tests.rules.facts import NOW, SYSTEM, WINDOW_END, active_rule, trigger

WINDOW_START = WINDOW_END - timedelta(hours=1)


def rule_with_action(workspace, action: str, value=None, *, name: str = "Pipeline rule", **fields):
    """An active rule whose trigger never matters here: tests pass the fired segments themselves."""
    if value is not None:
        fields["action_value"] = Decimal(str(value))
    return active_rule(
        workspace, name=name, action=action,
        triggers=[trigger(metric="ctr", kind="threshold", direction="below", threshold=Decimal("0.01"))], **fields,
    )


def run(rule, fired, *, now: datetime = NOW, window_end: datetime = WINDOW_END, dry_run: bool = False,
        actor=SYSTEM, evaluation=None) -> list[PlannedChange]:
    return changes_for_evaluation(
        actor=actor, rule=rule, evaluation=evaluation, fired_segment_ids=[s.pk for s in fired],
        window_start=window_end - timedelta(hours=1), window_end=window_end, now=now, dry_run=dry_run,
    )


def reloaded(*objects):
    for obj in objects:
        obj.refresh_from_db()
    return objects
