"""What the header says about syncing: the last success and its age, a run in
progress, the last failure, staleness, and a queued "Sync now"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from batches.models import SyncRun

# The header polls this often while a sync runs or a queued one is awaited.
POLL_SECONDS = 2
# A RUNNING run is not held to its lock this early: sync_all creates the run
# a moment before it claims the lock.
LOCK_GRACE = timedelta(seconds=30)
# How long a queued "Sync now" is awaited before the header stops polling
# and says no worker picked it up.
QUEUE_PATIENCE = timedelta(minutes=2)


@dataclass(frozen=True)
class SyncStatus:
    now: datetime
    latest: SyncRun | None  # the newest run that was not skipped
    previous: SyncRun | None  # the one before it
    last_success: SyncRun | None
    # Set while following a "Sync now": the newest run id when it was
    # pressed and when, so the header waits for a run after it.
    after: int | None = None
    queued_at: datetime | None = None
    newest_id: int = 0

    @classmethod
    def load(cls, *, after: int | None = None, queued_at: datetime | None = None) -> SyncStatus:
        """Read the runs the header needs: one query, two when following."""
        runs = list(SyncRun.objects.for_header())
        attempts = [run for run in runs if run.outcome != SyncRun.Outcome.SKIPPED]
        success = next((run for run in runs if run.outcome == SyncRun.Outcome.SUCCEEDED), None)
        # Newest first: a last success older than the two latest attempts
        # comes third, so the first two are those attempts.
        latest, previous = (attempts + [None, None])[:2]
        newest_id = SyncRun.objects.newest_id() if after is not None else 0
        return cls(timezone.now(), latest, previous, success, after, queued_at, newest_id)

    @property
    def running(self) -> SyncRun | None:
        """The run in progress, if one is (and its worker is alive)."""
        run = self.latest
        if run is None or run.outcome != SyncRun.Outcome.RUNNING:
            return None
        if getattr(run, "holds_lock", False) or self.now - run.started_at < LOCK_GRACE:
            return run
        return None

    @property
    def last_failure(self) -> SyncRun | None:
        """The latest finished run if it failed (or lost its worker): an
        operator should know until a later run succeeds."""
        for run in (self.latest, self.previous):
            if run is None or run is self.running:
                continue
            if run.outcome == SyncRun.Outcome.SUCCEEDED:
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
        return min(100, round(100 * run.pages_fetched / run.page_count))

    def follow_query(self) -> str:
        """The query string that keeps following a queued sync."""
        if self.after is None:
            return ""
        stamp = int((self.queued_at or self.now).timestamp())
        return f"?after={self.after}&queued={stamp}"
