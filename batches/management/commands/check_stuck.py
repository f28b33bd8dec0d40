"""python manage.py check_stuck: evaluate stuck batches and send due alerts now."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from batches.stuck import evaluate_stuck, summary_lines


class Command(BaseCommand):
    help = (
        "Declare and clear stuck batches from the last sync's data, alert the "
        "transitions as one digest, and send (or retry) due alert deliveries. "
        "Exits 1 if a delivery attempted now failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-deliver",
            action="store_true",
            help="Record transitions and alerts but send nothing now (the periodic task will).",
        )

    def handle(self, *args: object, no_deliver: bool = False, **options: object) -> None:
        evaluation = evaluate_stuck(deliver=not no_deliver)
        for line in summary_lines(evaluation):
            self.stdout.write(line)
        failed = [outcome for outcome in evaluation.deliveries if not outcome.sent]
        if failed:
            # Non-zero so a cron wrapper or a person notices; the transitions
            # are recorded and the failed channels are retried with backoff.
            raise CommandError(
                f"{len(failed)} alert deliver{'y' if len(failed) == 1 else 'ies'} failed "
                "(see above); retrying ones are retried with backoff.",
                returncode=1,
            )
