"""python manage.py sync_batches: one full sweep (or, with --quick, one
quick sync) in the foreground."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from batches.models import SyncRun
from batches.sync import summary_line, sync_all


class Command(BaseCommand):
    help = (
        "Pull Inkit's List Batches into the database, showing progress: a full sweep "
        "of every page (the default, or --full), or a quick sync of new and in-flight "
        "batches (--quick)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--concurrency",
            type=int,
            default=None,
            help="Pages fetched at once after the first (default: SYNC_CONCURRENCY).",
        )
        kind = parser.add_mutually_exclusive_group()
        kind.add_argument(
            "--full", dest="kind", action="store_const", const=SyncRun.Kind.FULL,
            help="A full sweep: every page, and batches no longer listed marked gone (the default).",
        )
        kind.add_argument(
            "--quick", dest="kind", action="store_const", const=SyncRun.Kind.QUICK,
            help="A quick sync: batches created since the last run and those in flight.",
        )
        parser.set_defaults(kind=SyncRun.Kind.FULL)

    def handle(self, *args: object, concurrency: int | None = None, **options: object) -> None:
        if concurrency is not None and concurrency < 1:
            raise CommandError("--concurrency must be at least 1")
        interactive = self.stdout.isatty()

        def show_progress(run: SyncRun) -> None:
            line = f"Page {run.pages_done} of {run.page_count or '?'}"
            if interactive:
                self.stdout.write(f"\r{line}", ending="")
                self.stdout.flush()
            elif options["verbosity"] >= 1:
                self.stdout.write(line)

        run = sync_all(
            kind=options["kind"],
            trigger=SyncRun.Trigger.COMMAND,
            concurrency=concurrency,
            progress=show_progress if options["verbosity"] >= 1 else None,
        )
        if interactive:
            self.stdout.write("")
        if run.outcome in SyncRun.READ_OUTCOMES:
            self.stdout.write(summary_line(run))
            return
        if run.outcome == SyncRun.Outcome.SKIPPED:
            raise CommandError(f"sync skipped: {run.note}", returncode=2)
        raise CommandError(f"sync failed: {run.error}", returncode=1)
