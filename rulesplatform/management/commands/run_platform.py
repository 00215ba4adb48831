"""`manage.py run_platform`: the whole platform on one machine, for `make run`.

Migrates, loads (or completes) the demo, then supervises four child processes — the web
server, a Celery worker, the beat scheduler and the simulator streaming metrics with an
incident the demo rules react to — with each output line prefixed by the child's name.
Ctrl-C or SIGTERM stops them all; if one dies, the others are stopped and the exit code is 1.
"""

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from .load_demo import WORKSPACE, logins_table

# The demo's incident is active at every hour, so the demo rules fire whenever it is run
# (`mobile_peak_drop` would only show between 18:00 and 22:00, Paris time).
DEMO_INCIDENT = "mobile_engagement_drop"
# ... and began one demo rule window (30 minutes) before the start: the simulator re-sends those
# buckets with it, so the rules fire at their first evaluation instead of 30-45 minutes later.
DEMO_INCIDENT_LEAD_MINUTES = 30
STOP_GRACE_SECONDS = 15
POLL_SECONDS = 0.5


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        # A session of its own: a terminal's Ctrl-C reaches only us, and we stop the children
        # in order, instead of every process receiving it at once.
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=settings.BASE_DIR, text=True, bufsize=1, start_new_session=True,
        )

    def exit_code(self) -> int | None:
        return self.process.poll()

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)  # the child's own group: it and anything it forked
        except ProcessLookupError:
            pass


class Command(BaseCommand):
    help = (
        "Run the platform locally: migrate, load the demo, then the web server, a Celery worker, "
        "the beat scheduler and the simulator, until Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--days", type=int, default=14, help="Days of history for a new demo.")
        parser.add_argument("--interval", type=float, default=20.0, help="Seconds between simulator ticks.")
        parser.add_argument("--incident", default=DEMO_INCIDENT, help="Simulator incident ('' for none).")

    def handle(self, *args, host, port, days, interval, incident, **options):
        if not settings.DEBUG:
            self.stderr.write(self.style.WARNING(
                "DJANGO_DEBUG is not set: static files and plain HTTP need it locally (make run sets it)."
            ))
        call_command("migrate", interactive=False)
        call_command("load_demo", days=days)
        children = self._children(host=host, port=port, interval=interval, incident=incident)
        code = self._supervise(children, banner=self._banner(host, port))
        if code:
            raise CommandError("The platform stopped because a process died (see above).", returncode=code)

    def _children(self, *, host: str, port: int, interval: float, incident: str) -> list[Child]:
        python, manage = sys.executable, str(settings.BASE_DIR / "manage.py")
        celery = [python, "-m", "celery", "-A", "rulesplatform"]
        simulate = [python, manage, "simulate", "--workspace", WORKSPACE["name"], "--stream",
                    "--interval", f"{interval:g}"]
        if incident:
            simulate += ["--incident", incident, "--incident-lead", str(DEMO_INCIDENT_LEAD_MINUTES)]
        return [
            Child("web", [python, manage, "runserver", f"{host}:{port}", "--noreload"]),
            Child("worker", [*celery, "worker", "-l", "info", "--pool=threads", "--concurrency=2"]),
            Child("beat", [*celery, "beat", "-l", "info"]),
            Child("simulator", simulate),
        ]

    def _banner(self, host: str, port: int) -> str:
        base = f"http://{host}:{port}"
        return "\n".join([
            "",
            f"The platform is starting: admin {base}/admin/ · API docs {base}/api/docs/ · "
            f"schema {base}/api/schema/ · API {base}/api/v1/campaigns/",
            logins_table(),
            "Ctrl-C stops everything.",
            "",
        ])

    # --- supervision ----------------------------------------------------------------------

    def _supervise(self, children: list[Child], *, banner: str) -> int:
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        output_lock = threading.Lock()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            for child in children:
                child.start(env)
                threading.Thread(target=self._relay, args=(child, output_lock), daemon=True).start()
            with output_lock:
                self.stdout.write(self.style.SUCCESS(banner))
            dead = self._wait_for_stop_or_death(children, stop)
        finally:
            self._stop_all(children)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if dead is None:
            self.stdout.write("All processes stopped.")
            return 0
        self.stderr.write(self.style.ERROR(f"{dead.name} exited with code {dead.exit_code()}; stopped the others."))
        return 1

    def _relay(self, child: Child, lock: threading.Lock) -> None:
        prefix = f"{child.name:<9}| "
        for line in child.process.stdout:
            with lock:
                self.stdout.write(prefix + line.rstrip("\n"))

    @staticmethod
    def _wait_for_stop_or_death(children: list[Child], stop: threading.Event) -> Child | None:
        while not stop.wait(POLL_SECONDS):
            for child in children:
                if child.exit_code() is not None:
                    return child
        return None

    def _stop_all(self, children: list[Child]) -> None:
        running = [c for c in children if c.process is not None and c.exit_code() is None]
        if running:
            self.stdout.write(f"Stopping {', '.join(c.name for c in running)}…")
        for child in running:
            child.signal_group(signal.SIGTERM)
        for child in running:
            try:
                child.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{child.name} did not stop in {STOP_GRACE_SECONDS}s; killing it.")
                child.signal_group(signal.SIGKILL)
                child.process.wait()
