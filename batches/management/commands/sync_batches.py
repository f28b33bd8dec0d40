"""python manage.py sync_batches: one full sync in the foreground."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from batches.models import SyncRun
from batches.sync import summary_line, sync_all


class Command(BaseCommand):
    help = "Pull every page of Inkit's List Batches into the database, showing progress."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--concurrency",
            type=int,
            default=None,
            help="Pages fetched at once after the first (default: SYNC_CONCURRENCY).",
        )

    def handle(self, *args: object, concurrency: int | None = None, **options: object) -> None:
        if concurrency is not None and concurrency < 1:
            raise CommandError("--concurrency must be at least 1")
        interactive = self.stdout.isatty()

        def show_progress(run: SyncRun) -> None:
            line = f"Page {run.pages_fetched} of {run.page_count or '?'}"
            if interactive:
                self.stdout.write(f"\r{line}", ending="")
                self.stdout.flush()
            elif options["verbosity"] >= 1:
                self.stdout.write(line)

        run = sync_all(
            trigger=SyncRun.Trigger.COMMAND,
            concurrency=concurrency,
            progress=show_progress if options["verbosity"] >= 1 else None,
        )
        if interactive:
            self.stdout.write("")
        if run.outcome == SyncRun.Outcome.SUCCEEDED:
            self.stdout.write(summary_line(run))
            return
        if run.outcome == SyncRun.Outcome.SKIPPED:
            raise CommandError(f"sync skipped: {run.note}", returncode=2)
        raise CommandError(f"sync failed: {run.error}", returncode=1)
