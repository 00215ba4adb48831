"""Rollups and writers at once, on PostgreSQL: a write during a refresh keeps its day stale."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction

from campaigns.models import MetricDay, MetricFact
from campaigns.rollups import RollupsRefreshed
from tests.campaigns.builders import write_fact
from tests.campaigns.test_rollups import DAY, HOUR, MIDNIGHT, refresh, stale_days, stale_version

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL"),
    pytest.mark.django_db(transaction=True),
]


def _in_thread(work) -> threading.Thread:
    """Run `work` in a thread of its own, on its own connection."""

    def run():
        try:
            work()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_until_blocked(statement_start: str) -> None:
    """Until a backend running a statement that starts with `statement_start` waits for a lock."""
    for _ in range(200):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                           [statement_start + "%"])
            if cursor.fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError(f"no statement {statement_start!r}... waited for a lock")


def test_a_write_during_a_refresh__keeps_the_day_stale(workspace, segment):
    write_fact(segment, MIDNIGHT + 2 * HOUR, clicks=10)
    metric_days = MetricDay._meta.db_table
    held, release = threading.Event(), threading.Event()

    def hold_the_rollup_table():  # the refresh stops there, once it holds the day's mark
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {metric_days} IN ACCESS EXCLUSIVE MODE")
            held.set()
            release.wait(30)

    holder = _in_thread(hold_the_rollup_table)
    held.wait(30)
    refresher = _in_thread(lambda: refresh(workspace))
    _wait_until_blocked(f'DELETE FROM "{metric_days}"')
    writer = _in_thread(lambda: write_fact(segment, MIDNIGHT + 3 * HOUR, clicks=5))
    _wait_until_blocked(f'INSERT INTO "{MetricFact._meta.db_table}"')  # its trigger waits for the mark
    release.set()
    for thread in (holder, refresher, writer):
        thread.join(30)

    assert MetricDay.objects.get(segment=segment, hours=24).clicks == 10  # built without the write
    assert stale_days(workspace) == [DAY]  # so the day is read from the facts until rebuilt
    refresh(workspace)
    assert MetricDay.objects.get(segment=segment, hours=24).clicks == 15


def test_a_day_being_written__is_skipped_by_a_refresh_without_waiting(workspace, segment):
    write_fact(segment, MIDNIGHT + 2 * HOUR, clicks=10)
    written, commit = threading.Event(), threading.Event()

    def write_and_wait():
        with transaction.atomic():
            write_fact(segment, MIDNIGHT + 3 * HOUR, clicks=5)
            written.set()
            commit.wait(30)

    writer = _in_thread(write_and_wait)
    written.wait(30)
    try:
        assert refresh(workspace) == RollupsRefreshed(days=0, rows=0)
    finally:
        commit.set()
        writer.join(30)

    assert stale_version(workspace) == 2 and not MetricDay.objects.exists()
    assert refresh(workspace, before=MIDNIGHT + timedelta(days=1)).days == 1
