from django.core.management.base import BaseCommand, CommandError

from audit.chain import verify_chain


class Command(BaseCommand):
    help = "Check the hash chain of audit events; name the first broken event and exit non-zero if any."

    def add_arguments(self, parser):
        parser.add_argument("--progress-every", type=int, default=10_000, help="Report progress every N events.")

    def handle(self, *args, progress_every: int, **options):
        report = verify_chain(
            progress=lambda n: self.stderr.write(f"… {n} events checked"), progress_every=progress_every
        )
        if not report.ok:
            raise CommandError(
                f"Audit chain broken at event #{report.broken_event_id}: {report.problem}. "
                f"{report.checked} events before it are intact."
            )
        self.stdout.write(self.style.SUCCESS(f"OK: {report.checked} audit events, chain intact."))
