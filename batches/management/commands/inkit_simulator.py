"""python manage.py inkit_simulator: a stand-in Inkit List Batches API.

For working without an Inkit token: point INKIT_API_BASE_URL at the URL it
prints and INKIT_API_TOKEN at its token. It needs no database.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from batches.simulator import DEFAULT_TOKEN, InkitSimulator


class Command(BaseCommand):
    help = "Serve a simulated Inkit List Batches API (GET /v1/batch) until Ctrl-C."

    # The simulator is a stand-in for a remote server: no checks, no database.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
        parser.add_argument("--port", type=int, default=8001, help="Port (0 picks a free one).")
        parser.add_argument("--batches", type=int, default=500, help="Batches to generate.")
        parser.add_argument("--seed", type=int, default=1, help="Seed for the generated data.")
        parser.add_argument("--token", default=DEFAULT_TOKEN, help="The API token to accept.")
        parser.add_argument(
            "--max-page-size", type=int, default=100, help="Largest page_size served."
        )
        parser.add_argument(
            "--advance-every",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="Evolve the batches every SECONDS (0: never).",
        )
        parser.add_argument(
            "--latency", type=float, default=0.0, metavar="SECONDS", help="Delay every answer."
        )
        parser.add_argument(
            "--error-rate",
            type=float,
            default=0.0,
            metavar="P",
            help="Probability (0 to 1) of a random 500, 502 or 503.",
        )
        parser.add_argument(
            "--rate-limit-every", type=int, default=None, metavar="N", help="Every Nth answer 429."
        )
        parser.add_argument(
            "--bad-json-every",
            type=int,
            default=None,
            metavar="N",
            help="Every Nth answer has a truncated JSON body.",
        )
        parser.add_argument(
            "--retry-after",
            default="1",
            metavar="SECONDS",
            help="The Retry-After header sent with a 429 (seconds or an HTTP date; "
            "'none' sends none).",
        )
        parser.add_argument(
            "--slow-every", type=int, default=None, metavar="N", help="Every Nth answer is slow."
        )
        parser.add_argument(
            "--slow-seconds",
            type=float,
            default=25.0,
            metavar="SECONDS",
            help="How long a slow answer takes (default 25: past the client's read timeout).",
        )
        parser.add_argument(
            "--add-mid-listing",
            type=int,
            default=0,
            metavar="N",
            help="Create N new batches whenever page 2 of the list is served, so every "
            "sync sees batches arrive while it pages.",
        )
        parser.add_argument(
            "--created-at-order",
            choices=["newest", "oldest"],
            default="newest",
            help="Which way an explicit sort=created_at lists: newest first (the vendor's "
            "reading of its example, the default) or oldest first.",
        )
        parser.add_argument(
            "--ignore-descending",
            action="store_true",
            help="Serve sort=-created_at as sort=created_at (the minus ignored).",
        )
        parser.add_argument(
            "--create-while-listing",
            type=int,
            default=0,
            metavar="N",
            help="Create one batch before every Nth page of the list served.",
        )
        parser.add_argument(
            "--delete-while-listing",
            type=int,
            default=0,
            metavar="N",
            help="Delete one batch, chosen at random, before every Nth page of the list served.",
        )
        parser.add_argument(
            "--activity",
            action="store_true",
            help="A realistic account: about 2,000 new batches a day over the history, each "
            "finishing 1 to 6 hours after it was created (1 %% with failures, 0.5 %% never), "
            "and new ones arriving at that rate in real time.",
        )
        parser.add_argument(
            "--now",
            type=datetime.fromisoformat,
            default=None,
            metavar="ISO-8601",
            help="The simulator's clock at start (default: now). Two runs with the same "
            "--seed and --now serve the same batches.",
        )
        parser.add_argument("--verbose", action="store_true", help="Log every request.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Generate the batches, serve them, evolve them, stop on a signal."""
        self._check(options)
        simulator = InkitSimulator(
            batches=options["batches"],
            seed=options["seed"],
            token=options["token"],
            max_page_size=options["max_page_size"],
            now=options["now"],
            activity=options["activity"],
        )
        faults = simulator.faults
        faults.latency_seconds = options["latency"]
        faults.error_rate = options["error_rate"]
        faults.rate_limit_every = options["rate_limit_every"]
        faults.bad_json_every = options["bad_json_every"]
        faults.retry_after = None if options["retry_after"].lower() == "none" else options["retry_after"]
        faults.slow_every = options["slow_every"]
        faults.slow_seconds = options["slow_seconds"]
        faults.add_every_listing = options["add_mid_listing"]
        faults.created_at_order = options["created_at_order"]
        faults.descending_honoured = not options["ignore_descending"]
        faults.create_every_listing = options["create_while_listing"]
        faults.delete_every_listing = options["delete_while_listing"]

        try:
            server = simulator.serve(options["host"], options["port"], verbose=options["verbose"])
        except OSError as error:
            raise CommandError(
                f"cannot listen on {options['host']}:{options['port']}: {error}"
            ) from None

        stop = threading.Event()
        advancer = threading.Thread(
            target=_advance_until,
            args=(simulator, stop, options["advance_every"]),
            name="inkit-simulator-advance",
            daemon=True,
        )
        # Handle SIGINT ourselves too: a shell starts background jobs with it
        # ignored, and process managers may send either signal.
        stop_handler = _stop_on_signal(stop)
        previous = {
            sig: signal.signal(sig, stop_handler) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            advancer.start()
            every = options["advance_every"]
            evolving = f"evolving every {every:g}s" if every > 0 else "frozen"
            self.stdout.write(
                f"Inkit simulator listening on {server.url} with token {options['token']!r}: "
                f"{len(simulator)} batches, {evolving}. Ctrl-C to stop."
            )
            self.stdout.flush()
            # Short waits let the main thread run the signal handler promptly.
            while not stop.wait(0.5):
                pass
        finally:
            stop.set()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            server.stop()
            advancer.join(timeout=5)
        self.stdout.write("Inkit simulator stopped.")

    def _check(self, options: dict[str, Any]) -> None:
        if options["batches"] < 0:
            raise CommandError("--batches must be 0 or more")
        if not 0 <= options["port"] <= 65535:
            raise CommandError("--port must be between 0 and 65535")
        if options["max_page_size"] < 1:
            raise CommandError("--max-page-size must be at least 1")
        if options["advance_every"] < 0:
            raise CommandError("--advance-every must be 0 (frozen) or more")
        if options["latency"] < 0:
            raise CommandError("--latency must be 0 or more")
        if not 0 <= options["error_rate"] <= 1:
            raise CommandError("--error-rate must be between 0 and 1")
        if options["slow_seconds"] < 0 or options["add_mid_listing"] < 0:
            raise CommandError("--slow-seconds and --add-mid-listing must be 0 or more")
        if options["create_while_listing"] < 0 or options["delete_while_listing"] < 0:
            raise CommandError("--create-while-listing and --delete-while-listing must be 0 or more")
        for name in ("rate_limit_every", "bad_json_every", "slow_every"):
            value = options[name]
            if value is not None and value < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
        if not options["token"]:
            raise CommandError("--token must not be empty")


def _advance_until(simulator: InkitSimulator, stop: threading.Event, every: float) -> None:
    """Evolve the simulator every `every` seconds until stop is set."""
    if every <= 0:
        return
    while not stop.wait(every):
        simulator.advance()


def _stop_on_signal(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    """A SIGINT/SIGTERM handler that lets the command stop cleanly."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return handler
