"""What the header says about syncing: the last quick sync and the last full
sweep and their ages, a run in progress, the last failure, staleness, and a
queued "Sync now"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from batches.models import SyncRun

# The header polls this often while a sync runs or a queued one is awaited.
POLL_SECONDS = 2
# A RUNNING run is not held to its lock this early: sync_all creates the run
# a moment before it claims the lock. After that a run counts as running only
# while its heartbeat keeps its lock alive (SYNC_LOCK_SECONDS).
LOCK_GRACE = timedelta(seconds=5)
# How long a queued "Sync now" is awaited before the header stops polling
# and says no worker picked it up.
QUEUE_PATIENCE = timedelta(minutes=2)


@dataclass(frozen=True)
class SyncStatus:
    now: datetime
    latest: SyncRun | None  # the newest run that was not skipped
    previous: SyncRun | None  # the one before it
    last_success: SyncRun | None  # of either kind (succeeded or unverified)
    # Set while following a "Sync now": the newest run id when it was
    # pressed and when, so the header waits for a run after it.
    after: int | None = None
    queued_at: datetime | None = None
    newest_id: int = 0
    attempts: tuple[SyncRun, ...] = ()  # the latest runs of each kind, newest first
    last_quick: SyncRun | None = None
    last_full: SyncRun | None = None

    @classmethod
    def load(cls, *, after: int | None = None, queued_at: datetime | None = None) -> SyncStatus:
        """Read the runs the header needs: one query, two when following."""
        runs = list(SyncRun.objects.for_header())
        attempts = [run for run in runs if run.outcome != SyncRun.Outcome.SKIPPED]
        read = [run for run in runs if run.outcome in SyncRun.READ_OUTCOMES]
        success = next(iter(read), None)
        quick = next((run for run in read if run.kind == SyncRun.Kind.QUICK), None)
        full = next((run for run in read if run.kind == SyncRun.Kind.FULL), None)
        latest, previous = (attempts + [None, None])[:2]
        newest_id = SyncRun.objects.newest_id() if after is not None else 0
        return cls(
            timezone.now(), latest, previous, success, after, queued_at, newest_id,
            tuple(attempts), quick, full,
        )

    def is_alive(self, run: SyncRun) -> bool:
        """A RUNNING run whose heartbeat keeps its lock (or that just began)."""
        return run.outcome == SyncRun.Outcome.RUNNING and (
            getattr(run, "holds_lock", False) or self.now - run.started_at < LOCK_GRACE
        )

    @property
    def running_runs(self) -> list[SyncRun]:
        """The runs in progress (a quick sync may run during a full sweep)."""
        return [run for run in self.attempts or (self.latest,) if run is not None and self.is_alive(run)]

    @property
    def running(self) -> SyncRun | None:
        """The run in progress, a full sweep before a quick sync, if one is
        (and its worker is alive: never once its heartbeat lapsed)."""
        runs = sorted(self.running_runs, key=lambda run: run.kind != SyncRun.Kind.FULL)
        return runs[0] if runs else None

    @property
    def last_failure(self) -> SyncRun | None:
        """The latest finished run if it failed (or lost its worker): an
        operator should know until a later run succeeds."""
        for run in self.attempts or (self.latest, self.previous):
            if run is None or self.is_alive(run):
                continue
            if run.outcome in SyncRun.READ_OUTCOMES:
                return None
            return run
        return None

    @property
    def last_failure_message(self) -> str:
        run = self.last_failure
        if run is None:
            return ""
        if run.outcome == SyncRun.Outcome.RUNNING:
            return "The worker stopped without finishing this sync."
        return run.error or "The sync failed without a message."

    @property
    def stale_after(self) -> timedelta:
        return SyncRun.stale_after()

    @property
    def stale(self) -> bool:
        """No success within three sync intervals (or ever): SyncRun's rule,
        the same as /healthz."""
        return self.last_success is None or self.last_success.is_stale(self.now)

    @property
    def queued(self) -> bool:
        """A "Sync now" was pressed and no run has started since."""
        return (
            self.after is not None
            and self.newest_id <= self.after
            and self.running is None
            and not self.queue_expired
        )

    @property
    def queue_expired(self) -> bool:
        return (
            self.after is not None
            and self.newest_id <= self.after
            and self.queued_at is not None
            and self.now - self.queued_at > QUEUE_PATIENCE
        )

    @property
    def polling(self) -> bool:
        """Whether the header should ask again in POLL_SECONDS."""
        return self.running is not None or self.queued

    @property
    def progress_percent(self) -> int:
        run = self.running
        if run is None or not run.page_count:
            return 0
        return min(100, round(100 * run.pages_done / run.page_count))

    def follow_query(self) -> str:
        """The query string that keeps following a queued sync."""
        if self.after is None:
            return ""
        stamp = int((self.queued_at or self.now).timestamp())
        return f"?after={self.after}&queued={stamp}"
