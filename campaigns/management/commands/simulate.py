"""`manage.py simulate`: feed a workspace with simulated metrics, always through the ingestion service."""

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from accounts.models import Workspace
from campaigns.exceptions import BatchRejected
from campaigns.simulator import (
    NAMED_INCIDENTS,
    Incident,
    bucket_floor,
    bucket_range,
    ingested_bucket_starts,
    named_incident,
    newest_ingested_bucket,
    simulate_and_ingest,
)

MINUTES_PER_DAY = 1440


class StreamClock:
    """Simulated time for a stream that starts behind the wall clock (say, after a stop).

    Without a speed it jumps to now; with one it replays the gap `speed` times faster than
    real time, so rules see the buckets arrive one after another as they would have live,
    then it follows the wall clock. It never runs ahead: ingestion refuses future buckets.
    """

    def __init__(self, *, start: datetime, speed: float | None, wall: Callable[[], datetime] = timezone.now):
        self.start = start
        self.speed = speed
        self.wall = wall
        self.wall_start = wall()

    def now(self) -> datetime:
        wall_now = self.wall()
        if self.speed is None:
            return wall_now
        return min(wall_now, self.start + (wall_now - self.wall_start) * self.speed)


class Command(BaseCommand):
    help = (
        "Simulate the market of a workspace (seasonality, bid and budget response, incidents) and "
        "ingest it through campaigns.ingestion: backfill history and/or stream the newest buckets."
    )
    # Tests pin the clock with call_command("simulate", ..., now=<aware datetime>).
    stealth_options = ("now",)

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True, help="Name of the workspace to feed.")
        parser.add_argument(
            "--backfill-days", type=int, default=0,
            help="Fill the buckets of the last N days, up to the last completed one, that hold no "
                 "metrics yet (buckets already ingested are kept: they were made with the bids of their time).",
        )
        parser.add_argument("--stream", action="store_true", help="Keep producing the newest buckets.")
        parser.add_argument("--interval", type=float, default=30.0, help="Seconds between stream ticks.")
        parser.add_argument(
            "--speed", type=float, default=None,
            help="Replay the time since the newest ingested bucket this many times faster than real time "
                 "(default: catch up at once). The stream never runs ahead of the wall clock.",
        )
        parser.add_argument("--ticks", type=int, default=None, help="Stop the stream after this many ticks.")
        parser.add_argument(
            "--incident", action="append", default=[], choices=sorted(NAMED_INCIDENTS),
            help="Inject a named incident from now on (repeatable).",
        )
        parser.add_argument(
            "--incident-lead", type=int, default=0, metavar="MINUTES",
            help="The incidents began this many minutes ago: the stream first re-sends the buckets since then, "
                 "so rules see them at once (the demo uses one rule window).",
        )
        parser.add_argument("--seed", type=int, default=0, help="Seed of the simulator (reproducible draws).")

    def handle(self, *args, workspace, backfill_days, stream, interval, speed, ticks, incident, incident_lead, seed,
               **options):
        if backfill_days <= 0 and not stream:
            raise CommandError("Nothing to do: give --backfill-days N and/or --stream.")
        if speed is not None and speed <= 0:
            raise CommandError("--speed must be positive.")
        target = Workspace.objects.filter(name=workspace).first()
        if target is None:
            raise CommandError(f"No workspace named “{workspace}”.")
        now = options.get("now") or timezone.now()
        incidents_start = now - timedelta(minutes=max(0, incident_lead))
        incidents = [named_incident(name, starts_at=incidents_start) for name in incident]
        if backfill_days > 0:
            self.backfill(target, days=backfill_days, now=now, seed=seed, incidents=incidents)
        if stream:
            resend_from = incidents_start if incidents else now
            self.stream(target, interval=interval, speed=speed, ticks=ticks, seed=seed, incidents=incidents,
                        resend_from=resend_from)

    # --- backfill -------------------------------------------------------------------------

    def backfill(self, workspace: Workspace, *, days: int, now: datetime, seed: int, incidents: list[Incident]):
        minutes = workspace.metric_bucket_minutes
        end = bucket_floor(now, bucket_minutes=minutes)  # completed buckets only; the stream does the rest
        buckets = self._missing_buckets(workspace, start=end - timedelta(days=days), end=end)
        if not buckets:
            self.stdout.write(f"{workspace}: history is up to date.")
            return
        chunks = list(_days_of(buckets, minutes))
        self.stdout.write(f"{workspace}: simulating {len(buckets)} buckets of {minutes} min ({len(chunks)} batches)…")
        for number, chunk in enumerate(chunks, start=1):
            result = simulate_and_ingest(workspace=workspace, bucket_starts=chunk, seed=seed, incidents=incidents)
            rows = result.rows_received if result else 0
            first = f"{_local(chunk[0], workspace):%a %Y-%m-%d %H:%M}"
            self.stdout.write(f"  [{number:>3}/{len(chunks)}] from {first}: {rows} rows")
        filled_to = f"{_local(end, workspace):%Y-%m-%d %H:%M}"
        self.stdout.write(self.style.SUCCESS(f"{workspace}: history filled up to {filled_to}."))

    @staticmethod
    def _missing_buckets(workspace: Workspace, *, start: datetime, end: datetime) -> list[datetime]:
        """Buckets in [start, end) without metrics, and the newest one, which a stream may have left
        half-filled. Buckets already ingested are kept: they were made with the bids of their time."""
        present = ingested_bucket_starts(workspace, since=start)
        newest = max(present, default=None)
        return [
            bucket for bucket in bucket_range(start, end, bucket_minutes=workspace.metric_bucket_minutes)
            if bucket not in present or bucket == newest
        ]

    # --- stream ---------------------------------------------------------------------------

    def stream(self, workspace, *, interval: float, speed: float | None, ticks: int | None, seed: int, incidents,
               resend_from: datetime):
        """Tick by tick, send the buckets from the newest ingested one (or `resend_from`, if earlier)."""
        minutes = workspace.metric_bucket_minutes
        clock = StreamClock(start=newest_ingested_bucket(workspace) or resend_from, speed=speed)
        cursor = bucket_floor(min(clock.start, resend_from), bucket_minutes=minutes)
        names = ", ".join(i.name for i in incidents) or "none"
        self.stdout.write(f"{workspace}: streaming every {interval:g}s (incidents: {names}); Ctrl-C stops.")
        done = 0
        with _stop_on_signals() as stop:
            while not stop.is_set() and (ticks is None or done < ticks):
                cursor = self.tick(workspace, cursor=cursor, as_of=clock.now(), seed=seed, incidents=incidents)
                done += 1
                stop.wait(interval if ticks is None or done < ticks else 0)
        self.stdout.write(f"{workspace}: stream stopped after {done} tick(s).")

    def tick(self, workspace, *, cursor: datetime, as_of: datetime, seed: int, incidents) -> datetime:
        """Send the buckets from `cursor` up to the one still filling at `as_of`; returns the new cursor."""
        # A long-running process must notice connections the database has dropped (as Django
        # does around each request); never mid-transaction, as when a caller wraps us in one.
        if not connection.in_atomic_block:
            close_old_connections()
        buckets = bucket_range(cursor, as_of, bucket_minutes=workspace.metric_bucket_minutes)
        if not buckets:
            return cursor
        try:
            for chunk in _days_of(buckets, workspace.metric_bucket_minutes):
                result = simulate_and_ingest(
                    workspace=workspace, bucket_starts=chunk, seed=seed, incidents=incidents, as_of=as_of
                )
                self._report_tick(workspace, chunk, result)
        except (DatabaseError, BatchRejected) as exc:
            # Transient (a locked database, a segment deleted mid-tick): the next tick re-sends.
            self.stderr.write(f"tick failed, retrying next time: {exc}")
            return cursor
        return buckets[-1]  # still filling: re-sent, with more in it, at the next tick

    def _report_tick(self, workspace, chunk: list[datetime], result) -> None:
        if result is None:
            self.stdout.write("nothing delivers (no active segment)")
            return
        first, last = (f"{_local(b, workspace):%H:%M}" for b in (chunk[0], chunk[-1]))
        span = f"bucket {first}" if first == last else f"buckets {first}–{last}"
        self.stdout.write(
            f"{_local(timezone.now(), workspace):%H:%M:%S} {result.rows_received} rows, {span} "
            f"({workspace.time_zone}): {result.rows_created} new, {result.rows_updated} updated"
        )


def _days_of(buckets: list[datetime], bucket_minutes: int) -> Iterator[list[datetime]]:
    """Batches of at most a day of buckets: bounded ingestion batches and one progress line each."""
    per_day = MINUTES_PER_DAY // bucket_minutes
    for start in range(0, len(buckets), per_day):
        yield buckets[start:start + per_day]


def _local(moment: datetime, workspace: Workspace) -> datetime:
    return moment.astimezone(ZoneInfo(workspace.time_zone))


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM, so the stream ends its tick and exits cleanly."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals are delivered to the main thread only
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
