"""Inkit batches as this app keeps them, and the runs that sync them."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    FloatField,
    OuterRef,
    Prefetch,
    Q,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Cast, Greatest
from django.utils import timezone

from .paths import batch_path
from .secrets import scrub

# Inkit's documented batch statuses. Others may appear: they are stored and
# shown as they come, never rejected.
IN_PROGRESS = "In Progress"
COMPLETED = "Completed"

# What the dashboard's list can sort by; each has an index ending in id.
BATCH_SORT_KEYS = (
    "created_at",
    "name",
    "status",
    "total",
    "completed",
    "failed",
    "in_progress",
    "last_progress_at",
    "failure_rate",
)


# What BatchQuerySet.with_destination() names the joined destination row's
# batch_created_at and batch_id, for created_between() and sorted_by().
DESTINATION_CREATED_AT = "destination_created_at"
DESTINATION_BATCH_ID = "destination_batch_id"


# A batch is in flight while In Progress and created, or last seen
# progressing, within this many hours (BatchQuerySet.in_flight).
IN_FLIGHT_HOURS = 24


def stuck_threshold(now: datetime | None = None) -> datetime:
    """The moment before which a batch without progress counts as stuck."""
    return (now or timezone.now()) - timedelta(minutes=settings.STUCK_AFTER_MINUTES)


def stuck_soon_threshold(now: datetime | None = None) -> datetime:
    """The moment before which a batch without progress will be stuck within
    the next quarter of STUCK_AFTER_MINUTES ("stuck in 12 min")."""
    return (now or timezone.now()) - timedelta(minutes=settings.STUCK_AFTER_MINUTES * 3 / 4)


def overdue_threshold(now: datetime | None = None) -> datetime:
    """The moment before which an In Progress batch was created to be overdue."""
    return (now or timezone.now()) - timedelta(hours=settings.OVERDUE_AFTER_HOURS)


# "Finished in the last 24 hours" for the triage panel's batches with failures.
RECENTLY_FINISHED = timedelta(hours=24)


def failure_rate():
    """Failed deliveries as a share of those that ended (completed + failed),
    0 when none has ended; summed over destinations. A new expression each
    call, for sorted_by("failure_rate") and batch_failure_rate_idx, which
    must be the same expression for PostgreSQL to walk the index."""
    return Cast(F("failed"), FloatField()) / Greatest(F("completed") + F("failed"), Value(1))


def seen_progressing() -> Q:
    """Batches this app has seen progress: last_progress_at starts at
    first_seen_at and only moves on progress (Batch.seen_progressing())."""
    return Q(last_progress_at__gt=F("first_seen_at"))


def failures_finished_at():
    """For a batch no longer In Progress with failed documents: when this app
    last knew it active, its last progress if it was seen progressing (its
    status change is progress), else its creation. Null for every other
    batch. A new expression each call, for finished_with_failures() and
    batch_failed_finished_idx, which must be the same expression for
    PostgreSQL to use the index. The index is not partial on purpose:
    PostgreSQL keeps statistics for a full index's expression (not a partial
    one's), and without them it guessed thousands of rows for the few dozen
    of a day and walked every failed batch ever instead (bench/README.md)."""
    known_active = Case(
        When(seen_progressing(), then=F("last_progress_at")),
        default=F("created_at"),
    )
    return Case(
        When(Q(failed__gt=0) & ~Q(status=IN_PROGRESS), then=known_active),
        default=None,
        output_field=models.DateTimeField(),
    )


# What finished_with_failures() names failures_finished_at() in its query.
FAILURES_FINISHED_AT = "failures_finished_at"


def _finished_with_failures_since(since: datetime) -> Q:
    """finished_with_failures()'s condition, on a query that aliased
    failures_finished_at() as FAILURES_FINISHED_AT (null unless the batch
    ended with failures)."""
    return Q(**{f"{FAILURES_FINISHED_AT}__gte": since})


class BatchQuerySet(models.QuerySet["Batch"]):
    def present(self) -> BatchQuerySet:
        """Batches Inkit still lists (not marked gone)."""
        return self.filter(gone_at__isnull=True)

    def in_progress(self) -> BatchQuerySet:
        return self.filter(status=IN_PROGRESS)

    def stuck(self, now: datetime | None = None) -> BatchQuerySet:
        """In Progress batches with no progress for STUCK_AFTER_MINUTES.

        A batch never seen progressing counts from when this app first saw it
        (last_progress_at starts at first_seen_at). Served by batch_stuck_idx.
        """
        return self.present().filter(status=IN_PROGRESS, last_progress_at__lte=stuck_threshold(now))

    def in_flight(self, now: datetime | None = None) -> BatchQuerySet:
        """In Progress, still listed, and created or last seen progressing
        within IN_FLIGHT_HOURS: the batches every quick sync re-reads.

        "Seen progressing" is last_progress_at > first_seen_at, because
        last_progress_at starts at first_seen_at (it is the stuck clock).
        The same rule as Batch.is_in_flight(); served by
        batch_in_progress_created_idx (the created arm) and batch_stuck_idx
        (the progress arm), whose conditions match this one's.
        """
        since = (now or timezone.now()) - timedelta(hours=IN_FLIGHT_HOURS)
        return self.present().filter(status=IN_PROGRESS).filter(
            Q(created_at__gte=since)
            | Q(last_progress_at__gte=since, last_progress_at__gt=F("first_seen_at"))
        )

    def stuck_soon(self, now: datetime | None = None) -> BatchQuerySet:
        """In Progress batches that will be stuck within the next quarter of
        STUCK_AFTER_MINUTES if they make no progress: the range of
        batch_stuck_idx just after stuck()'s. Batch.stuck_in() says when."""
        return self.present().filter(
            status=IN_PROGRESS,
            last_progress_at__gt=stuck_threshold(now),
            last_progress_at__lte=stuck_soon_threshold(now),
        )

    def overdue(self, now: datetime | None = None) -> BatchQuerySet:
        """In Progress batches created more than OVERDUE_AFTER_HOURS ago, however
        they progress: known from the first sync, since Inkit gives created_at.
        Served by batch_in_progress_created_idx; Batch.is_overdue() is the same rule."""
        return self.present().filter(status=IN_PROGRESS, created_at__lte=overdue_threshold(now))

    def finished_with_failures(self, now: datetime | None = None) -> BatchQuerySet:
        """Batches no longer In Progress with failed documents that finished in
        the last 24 hours, as far as this app can tell: created in that time,
        or seen progressing (their status change counts) in it. A batch first
        seen already finished has no finishing time here and is left out
        unless it is that young (failures_finished_at()). Served by
        batch_failed_finished_idx, a range of that one expression."""
        since = (now or timezone.now()) - RECENTLY_FINISHED
        return (
            self.present()
            .alias(**{FAILURES_FINISHED_AT: failures_finished_at()})
            .filter(_finished_with_failures_since(since))
        )

    def needs_attention(self, now: datetime | None = None) -> BatchQuerySet:
        """attention=1: every batch the triage panel lists, stuck or stuck
        soon, overdue, or finished lately with failures. Each arm is one of
        the rules above; PostgreSQL ORs their indexes."""
        now = now or timezone.now()
        in_flight = Q(status=IN_PROGRESS) & (
            Q(last_progress_at__lte=stuck_soon_threshold(now))
            | Q(created_at__lte=overdue_threshold(now))
        )
        finished = _finished_with_failures_since(now - RECENTLY_FINISHED)
        return (
            self.present()
            .alias(**{FAILURES_FINISHED_AT: failures_finished_at()})
            .filter(in_flight | finished)
        )

    def declared_stuck(self) -> BatchQuerySet:
        """Batches the stuck evaluator declared stuck and has not cleared
        (batch_stuck_since_idx)."""
        return self.filter(stuck_since__isnull=False)

    def recovered_from_stuck(self) -> BatchQuerySet:
        """Declared stuck, still listed and In Progress, and progressed since:
        last_progress_at moved past stuck_since (the progress it had then)."""
        return self.declared_stuck().present().in_progress().filter(last_progress_at__gt=F("stuck_since"))

    def finished_while_stuck(self) -> BatchQuerySet:
        """Declared stuck, and no longer In Progress or no longer listed."""
        return self.declared_stuck().filter(~Q(status=IN_PROGRESS) | Q(gone_at__isnull=False))

    def with_failures(self) -> BatchQuerySet:
        """Batches with at least one failed document (batch_failed_idx)."""
        return self.filter(failed__gt=0)

    def with_status(self, *statuses: str) -> BatchQuerySet:
        return self.filter(status__in=statuses)

    def search(self, text: str) -> BatchQuerySet:
        """Batches whose id starts with the text or whose name contains it,
        ignoring case. On PostgreSQL the id prefix is served by
        batch_id_prefix_idx (migration 0007), the name by the trigram index
        of migration 0002."""
        return self.filter(Q(id__istartswith=text) | Q(name__icontains=text))

    def created_between(self, after: datetime | None, before: datetime | None) -> BatchQuerySet:
        """Created on or after `after` and before `before` (either may be
        None). After with_destination(), the range is asked of the joined
        row's copy of created_at, which the destination indexes hold in
        order; asked of the batch's own, PostgreSQL would join every batch
        created in the range to find the few at the destination."""
        column = DESTINATION_CREATED_AT if self._narrowed_to_destination() else "created_at"
        qs = self
        if after is not None:
            qs = qs.filter(**{f"{column}__gte": after})
        if before is not None:
            qs = qs.filter(**{f"{column}__lt": before})
        return qs

    def with_destination(
        self, destination: str, *, status: str | None = None, failing: bool = False
    ) -> BatchQuerySet:
        """Batches that send to the named destination; with status, those
        whose destination is in that status (Inkit's destination_name +
        destination_status); with failing, those with failed documents there.

        One join to the destination's row, which is unique per batch and
        name, so no batch comes twice. Every condition goes in this one
        filter(): Django joins a multi-valued relation afresh for each
        filter() call, so call this once. The row's copy of created_at is
        aliased for created_between() and sorted_by("created_at"), whose
        order dest_created_idx, dest_status_created_idx and
        dest_failed_created_idx hold: PostgreSQL walks one and stops after
        the page."""
        conditions = Q(destinations__name=destination)
        if status is not None:
            conditions &= Q(destinations__status=status)
        if failing:
            conditions &= Q(destinations__failed__gt=0)
        # Aliased after the filter, so that the aliases reuse its join.
        return self.filter(conditions).alias(
            **{
                DESTINATION_CREATED_AT: F("destinations__batch_created_at"),
                DESTINATION_BATCH_ID: F("destinations__batch_id"),
            }
        )

    def sorted_by(self, key: str, descending: bool = False) -> BatchQuerySet:
        """Order by one of BATCH_SORT_KEYS with id breaking ties, in the
        directions the sort indexes are built in, so PostgreSQL walks an index
        (backwards for ascending created_at, or descending other keys) rather
        than sorting the table. Null names count as the highest, on SQLite as
        on PostgreSQL."""
        if key not in BATCH_SORT_KEYS:
            raise ValueError(f"cannot sort batches by {key!r}")
        if key == "failure_rate":
            # Never null; batch_failure_rate_idx is (the same expression, id).
            rate = failure_rate()
            if descending:
                return self.order_by(rate.desc(), F("id").desc())
            return self.order_by(rate.asc(), F("id").asc())
        column, id_column = key, "id"
        if key == "created_at" and self._narrowed_to_destination():
            # Narrowed to one destination (with_destination()): the same order,
            # read from the joined row's copies, which the destination indexes
            # hold in it. Ordered by the batch's own created_at, PostgreSQL
            # would read every match to sort it.
            column, id_column = DESTINATION_CREATED_AT, DESTINATION_BATCH_ID
        if descending:
            order = F(column).desc(nulls_first=True)
        else:
            order = F(column).asc(nulls_last=True)
        # batch_created_idx is (-created_at, id), and the destination indexes
        # likewise; the others are (key, id).
        ids_descending = descending != (key == "created_at")
        return self.order_by(order, F(id_column).desc() if ids_descending else F(id_column).asc())

    def _narrowed_to_destination(self) -> bool:
        """Whether with_destination() joined a destination's row."""
        return DESTINATION_CREATED_AT in self.query.annotations

    def capped_count(self, cap: int) -> int:
        """Count matching rows, stopping at cap + 1: a large table is never
        counted in full on a page view."""
        return self.order_by()[: cap + 1].count()

    def summary(self) -> dict:
        """Figures for the dashboard's summary strip. This scans the tables,
        so it runs once per sync, never on a page view."""
        from . import trends  # It writes these models: imported when used.

        present = self.present()
        by_status = dict(
            present.order_by().values_list("status").annotate(n=Count("pk")).values_list("status", "n")
        )
        totals = present.aggregate(
            batches=Count("pk"),
            documents=Sum("total", default=0),
            failed=Sum("failed", default=0),
            in_progress=Sum("in_progress", default=0),
        )
        destinations = list(
            BatchDestination.objects.filter(batch__gone_at__isnull=True)
            .order_by()
            .values("name")
            .annotate(
                batches=Count("pk"),
                count=Sum("count"),
                completed=Sum("completed"),
                failed=Sum("failed"),
                in_progress=Sum("in_progress"),
            )
            .order_by("name")
        )
        return {
            "by_status": by_status,
            "batches": totals["batches"],
            "documents": totals["documents"],
            "failed_documents": totals["failed"],
            "in_progress_documents": totals["in_progress"],
            "destinations": destinations,
            "gone": self.filter(gone_at__isnull=False).count(),
            # Each destination card's last 24 hours and the triage panel's
            # failure-rate comparison, from the rollups (batches/trends.py):
            # read once per sync with the rest, never on a page view.
            "trends": trends.summary_trends(timezone.now()),
        }


class Batch(models.Model):
    """One Inkit batch, as last listed by GET /v1/batch."""

    id = models.CharField(primary_key=True, max_length=100)
    name = models.TextField(null=True, blank=True)
    status = models.CharField(max_length=100)
    total = models.IntegerField()
    created_at = models.DateTimeField()

    # Sums over destinations, kept on the batch so the list can sort and
    # filter on them without a join.
    count = models.IntegerField(default=0)
    completed = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)
    in_progress = models.IntegerField(default=0)

    first_seen_at = models.DateTimeField()
    # Last time anything Inkit reports about the batch changed.
    last_changed_at = models.DateTimeField()
    # Last time completed + failed grew or the status changed: what "stuck"
    # is measured from. Starts at first_seen_at.
    last_progress_at = models.DateTimeField()
    # Set when this app declared the batch stuck (and alerted), to its
    # last_progress_at then: the start of the stuck period, so progress is
    # last_progress_at moving past it. Cleared when it recovers or finishes.
    stuck_since = models.DateTimeField(null=True, blank=True)
    # When the API last showed this batch (a page or GET /v1/batch/{id}),
    # written by every sync run that read it; a write never replaces the
    # data of a newer read (batches.sync.writes). Null: never read since
    # this column exists.
    checked_at = models.DateTimeField(null=True, blank=True)
    # Set when this app declared the batch overdue (and alerted): once per
    # batch, never cleared, so it is never alerted twice (batches/stuck.py).
    declared_overdue_at = models.DateTimeField(null=True, blank=True)
    # Set when a complete sync no longer listed the batch. Rows are never
    # deleted: a batch that comes back has this cleared.
    gone_at = models.DateTimeField(null=True, blank=True)

    # The item exactly as last received, for the detail page...
    raw = models.JSONField()
    # ...and a 64-bit digest of it, so a sync tells an unchanged batch from
    # its digest alone (batches.sync.fingerprint).
    fingerprint = models.BigIntegerField(default=0)

    objects = BatchQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "batches"
        indexes = [
            # The list's default order (newest first) and created_after/before.
            models.Index(fields=["-created_at", "id"], name="batch_created_idx"),
            # The list's capped count over created_after/before, from the
            # index alone: it only ever counts batches still listed.
            models.Index(
                fields=["created_at"], condition=Q(gone_at__isnull=True), name="batch_present_created_idx"
            ),
            # status=... with the default order.
            models.Index(fields=["status", "-created_at"], name="batch_status_created_idx"),
            # sort=<key> on the list page, id as the tie-breaker.
            models.Index(fields=["name", "id"], name="batch_name_idx"),
            models.Index(fields=["status", "id"], name="batch_status_idx"),
            models.Index(fields=["total", "id"], name="batch_total_idx"),
            models.Index(fields=["completed", "id"], name="batch_completed_idx"),
            models.Index(fields=["failed", "id"], name="batch_failed_sort_idx"),
            models.Index(fields=["in_progress", "id"], name="batch_in_progress_idx"),
            models.Index(fields=["last_progress_at", "id"], name="batch_progress_idx"),
            # failed=1 with the default order.
            models.Index(
                fields=["-created_at"], condition=Q(failed__gt=0), name="batch_failed_idx"
            ),
            # BatchQuerySet.stuck(): In Progress, present, oldest progress first.
            models.Index(
                fields=["last_progress_at"],
                condition=Q(status=IN_PROGRESS, gone_at__isnull=True),
                name="batch_stuck_idx",
            ),
            # In Progress and present, by created_at: BatchQuerySet.overdue()
            # (and the stuck evaluator's overdue candidates) and the
            # created-within-24-hours arm of BatchQuerySet.in_flight() (its
            # progress arm is batch_stuck_idx, on the same condition).
            models.Index(
                fields=["created_at"],
                condition=Q(status=IN_PROGRESS, gone_at__isnull=True),
                name="batch_in_progress_created_idx",
            ),
            # checked_at has no index on purpose: every sync run writes it
            # on every row it reads, and an indexed column would turn those
            # cheap in-place (HOT) updates into updates of every index.
            # sort=failure_rate: the expression failure_rate() builds, id last.
            models.Index(failure_rate(), F("id"), name="batch_failure_rate_idx"),
            # finished_with_failures(): batches that ended with failures, by
            # when they were last known active (failures_finished_at(),
            # null for the others).
            models.Index(failures_finished_at(), name="batch_failed_finished_idx"),
            # status=...&sort=failure_rate (status=In Progress with the worst
            # failure rate first, say).
            models.Index(F("status"), failure_rate(), F("id"), name="batch_status_failure_rate_idx"),
            # The stuck evaluator's "declared stuck" set.
            models.Index(
                fields=["stuck_since"], condition=Q(stuck_since__isnull=False), name="batch_stuck_since_idx"
            ),
        ]

    def __str__(self) -> str:
        return self.name or self.id

    def get_absolute_url(self) -> str:
        """The detail page's path, for any id (batches/paths.py)."""
        return batch_path(self.id)

    def is_stuck(self, now: datetime | None = None) -> bool:
        """The same rule as BatchQuerySet.stuck(), for one loaded batch."""
        return (
            self.gone_at is None
            and self.status == IN_PROGRESS
            and self.last_progress_at <= stuck_threshold(now)
        )

    def is_in_flight(self, now: datetime | None = None) -> bool:
        """The same rule as BatchQuerySet.in_flight(), for one loaded batch."""
        since = (now or timezone.now()) - timedelta(hours=IN_FLIGHT_HOURS)
        return (
            self.gone_at is None
            and self.status == IN_PROGRESS
            and (
                self.created_at >= since
                or (self.last_progress_at >= since and self.last_progress_at > self.first_seen_at)
            )
        )

    def stuck_for(self, now: datetime | None = None) -> timedelta:
        """How long the batch has gone without progress."""
        return (now or timezone.now()) - self.last_progress_at

    def stuck_in(self, now: datetime | None = None) -> timedelta | None:
        """How long until it is stuck without progress (In Progress and not
        stuck yet); None otherwise. stuck_soon() is this under a quarter of
        STUCK_AFTER_MINUTES."""
        if self.status != IN_PROGRESS or self.gone_at is not None:
            return None
        left = self.last_progress_at - stuck_threshold(now)
        return left if left > timedelta(0) else None

    def is_overdue(self, now: datetime | None = None) -> bool:
        """The same rule as BatchQuerySet.overdue(), for one loaded batch."""
        return (
            self.gone_at is None
            and self.status == IN_PROGRESS
            and self.created_at <= overdue_threshold(now)
        )

    def seen_progressing(self) -> bool:
        """Whether this app has seen the batch progress (the Q seen_progressing())."""
        return self.last_progress_at > self.first_seen_at

    @property
    def failure_rate(self) -> float:
        """The same figure as failure_rate(): failed over completed + failed."""
        return self.failed / max(self.completed + self.failed, 1)


class BatchDestination(models.Model):
    """One destination's generation counts within a batch. Destination names
    are data: new ones may appear at any time."""

    batch = models.ForeignKey(
        Batch, on_delete=models.CASCADE, related_name="destinations", db_index=False
    )
    name = models.CharField(max_length=100)
    count = models.IntegerField()
    completed = models.IntegerField()
    failed = models.IntegerField()
    in_progress = models.IntegerField()
    # Inkit's lowercase per-destination status; undocumented, so optional.
    status = models.CharField(max_length=100, null=True, blank=True)
    # The batch's created_at (which never changes), copied so an index on
    # this table gives a destination's batches in the list's order.
    batch_created_at = models.DateTimeField()

    class Meta:
        constraints = [
            # Also the index for "destinations of these batches" (the sync's
            # per-page read and the list's per-row destinations).
            models.UniqueConstraint(fields=["batch", "name"], name="destination_unique_per_batch"),
        ]
        # Migration 0009 also turns off parallel scans of this table on
        # PostgreSQL: a destination view's capped count was planned with
        # workers that took longer to start than the count takes.
        indexes = [
            # destination=... on the list page, newest first (walked backwards
            # for sort=created_at): BatchQuerySet.with_destination() with
            # sorted_by("created_at").
            models.Index(fields=["name", "-batch_created_at", "batch"], name="dest_created_idx"),
            # destination=...&destination_status=..., in the same orders.
            models.Index(
                fields=["name", "status", "-batch_created_at", "batch"],
                name="dest_status_created_idx",
            ),
            # destination=...&failed=1 (failed documents there), in the same orders.
            models.Index(
                fields=["name", "-batch_created_at", "batch"],
                condition=Q(failed__gt=0),
                name="dest_failed_created_idx",
            ),
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.batch_id} → {self.name}"


class BatchEvent(models.Model):
    """One entry in a batch's history: what changed and when this app saw it."""

    class Kind(models.TextChoices):
        CHANGED = "changed", "Changed"
        STUCK = "stuck", "Became stuck"
        OVERDUE = "overdue", "Became overdue"
        RECOVERED = "recovered", "Recovered"
        FINISHED = "finished", "Finished"
        GONE = "gone", "No longer listed"
        RETURNED = "returned", "Listed again"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="events", db_index=False)
    seen_at = models.DateTimeField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # The batch's state after the event.
    status = models.CharField(max_length=100)
    completed = models.IntegerField()
    failed = models.IntegerField()
    in_progress = models.IntegerField()
    # CHANGED and RETURNED (batches.sync): what changed, as [old, new] pairs,
    # {"status": [old, new], "destinations": {name: {field: [old, new]} or "removed"}};
    # RETURNED may be empty, GONE always is. The stuck transitions
    # (batches.stuck) are not pairs: STUCK {"stuck_since": iso,
    # "stuck_after_minutes": n}; RECOVERED {"stuck_since": iso,
    # "stuck_for_seconds": n}; FINISHED the same plus "reason" ("status",
    # with the new "status", or "gone").
    changes = models.JSONField(default=dict, blank=True)
    # For the stuck transitions: the alert that told people about it (null
    # only between the claim and the alert, or if its evaluator died there).
    alert = models.ForeignKey(
        "Alert", null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )

    # The kinds the stuck evaluator records, each alerted once.
    TRANSITIONS = (Kind.STUCK, Kind.OVERDUE, Kind.RECOVERED, Kind.FINISHED)

    class Meta:
        indexes = [
            # A batch's timeline on the detail page.
            models.Index(fields=["batch", "seen_at"], name="event_batch_timeline_idx"),
            # Transitions no alert took yet (alerts.has_orphaned_transitions).
            models.Index(
                fields=["seen_at"],
                condition=Q(alert__isnull=True, kind__in=["stuck", "overdue", "recovered", "finished"]),
                name="event_unalerted_idx",
            ),
        ]
        ordering = ["seen_at", "pk"]

    def __str__(self) -> str:
        return f"{self.batch_id} {self.kind} at {self.seen_at:%Y-%m-%d %H:%M:%S}"

    @property
    def stuck_since(self) -> datetime | None:
        """For a stuck transition: the batch's last progress before it stuck,
        where its stuck period began."""
        since = self.changes.get("stuck_since") if self.kind in self.TRANSITIONS else None
        return datetime.fromisoformat(since) if since else None

    @property
    def stuck_for(self) -> timedelta | None:
        """For a stuck transition: how long the batch had gone without
        progress when it was declared stuck, or when its stuck period ended."""
        if self.kind == self.Kind.STUCK:
            since = self.stuck_since
            return self.seen_at - since if since else None
        seconds = self.changes.get("stuck_for_seconds") if self.kind in self.TRANSITIONS else None
        return None if seconds is None else timedelta(seconds=seconds)


# The synced data is stale, for the dashboard's header and /healthz alike,
# once the last successful sync ended more than this many sync intervals
# ago (SyncRun.stale_after). The "syncing is stale" alert has its own,
# SYNC_STALE_AFTER_MINUTES: see batches/stuck.py.
STALE_AFTER_SYNC_INTERVALS = 3


class SyncRunQuerySet(models.QuerySet["SyncRun"]):
    def finished(self) -> SyncRunQuerySet:
        return self.exclude(outcome__in=[SyncRun.Outcome.RUNNING, SyncRun.Outcome.SKIPPED])

    def succeeded(self) -> SyncRunQuerySet:
        """Runs that read what they set out to read and wrote it all:
        succeeded (verified complete) or unverified (completeness not
        proven). Their data is fresh; only a succeeded full sweep may have
        marked batches gone. Served by syncrun_last_success_idx."""
        return self.filter(outcome__in=SyncRun.READ_OUTCOMES)

    def last_success(self) -> SyncRun | None:
        return self.succeeded().order_by("-started_at").first()

    def full_sweeps(self) -> SyncRunQuerySet:
        return self.filter(kind=SyncRun.Kind.FULL)

    def quick_syncs(self) -> SyncRunQuerySet:
        return self.filter(kind=SyncRun.Kind.QUICK)

    def for_header(self) -> SyncRunQuerySet:
        """The runs the sync status header needs, in one query: for each kind
        of run, the two latest that were not skipped (a running one and the
        one before it) and the last success, each marked holds_lock (a
        RUNNING run without a live lock has lost its worker)."""
        picks = Q()
        for kind in SyncRun.Kind.values:
            attempts = self.filter(kind=kind).exclude(outcome=SyncRun.Outcome.SKIPPED)
            success = self.filter(kind=kind).succeeded()
            picks |= Q(pk__in=attempts.order_by("-started_at").values("pk")[:2])
            picks |= Q(pk__in=success.order_by("-started_at").values("pk")[:1])
        return (
            self.filter(picks)
            .annotate(
                holds_lock=Exists(
                    SyncLock.objects.filter(holder=OuterRef("pk"), expires_at__gte=timezone.now())
                )
            )
            .defer("summary", "api_responses")
            .order_by("-started_at")
        )

    def newest_id(self) -> int:
        """The id of the newest run of any outcome, 0 when there is none."""
        return self.order_by("-pk").values_list("pk", flat=True).first() or 0

    def last_summary(self) -> dict | None:
        """The dashboard summary computed by the most recent sync that made one."""
        return (
            self.filter(summary__isnull=False)
            .order_by("-started_at")
            .values_list("summary", flat=True)
            .first()
        )

    def with_alert_deliveries(self) -> SyncRunQuerySet:
        """Runs with run.alert_deliveries.all() prefetched, each with its
        alert: one extra query for a whole page of runs (/sync-runs/)."""
        return self.prefetch_related(
            Prefetch(
                "alert_deliveries",
                queryset=AlertDelivery.objects.select_related("alert").order_by("alert_id", "channel"),
            )
        )


class SyncRun(models.Model):
    """One run of the sync: a full sweep (every page of List Batches) or a
    quick sync (new and in-flight batches). See batches/sync/."""

    class Kind(models.TextChoices):
        FULL = "full", "Full sweep"
        QUICK = "quick", "Quick sync"

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        # Read everything it set out to, wrote it all, and proved the
        # listing complete (a full sweep) or reached known batches (a quick
        # sync).
        SUCCEEDED = "succeeded", "Succeeded"
        # Finished and wrote everything it read, but completeness could not
        # be verified within its bounds (the note says why): nothing was
        # marked gone. Issue 10 adds "degraded" beside it.
        UNVERIFIED = "unverified", "Unverified"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    # Outcomes of runs whose data is fresh (SyncRunQuerySet.succeeded()).
    READ_OUTCOMES = (Outcome.SUCCEEDED, Outcome.UNVERIFIED)

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        MANUAL = "manual", "Sync now"
        COMMAND = "command", "Command"

    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.RUNNING)
    trigger = models.CharField(max_length=20, choices=Trigger.choices, default=Trigger.SCHEDULE)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.FULL)

    page_count = models.IntegerField(null=True, blank=True)
    pages_fetched = models.IntegerField(default=0)
    batches_seen = models.IntegerField(default=0)
    batches_created = models.IntegerField(default=0)
    batches_updated = models.IntegerField(default=0)
    batches_unchanged = models.IntegerField(default=0)
    batches_gone = models.IntegerField(default=0)
    api_requests = models.IntegerField(default=0)
    api_retries = models.IntegerField(default=0)
    # Responses by HTTP status ("200": 12, "429": 1) and failures without one
    # ("timeout", "connection", "bad-json").
    api_responses = models.JSONField(default=dict, blank=True)
    # True when the listing was read end to end and checked consistent, which
    # is what allows marking absent batches gone.
    complete = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    # Something an operator should know that did not fail the run.
    note = models.TextField(blank=True)
    # The dashboard's summary strip as of the end of this run (null when the
    # run changed nothing and the previous summary still holds).
    summary = models.JSONField(null=True, blank=True)

    objects = SyncRunQuerySet.as_manager()

    class Meta:
        indexes = [
            # Latest runs first: the header, /sync-runs/ and the health check.
            models.Index(fields=["-started_at"], name="syncrun_recent_idx"),
            models.Index(
                fields=["-started_at"],
                condition=Q(outcome__in=["succeeded", "unverified"]),
                name="syncrun_last_success_idx",
            ),
            # The header's and /metrics' latest runs of each kind.
            models.Index(fields=["kind", "-started_at"], name="syncrun_kind_recent_idx"),
            # last_summary(): the dashboard's summary strip on every page view,
            # past the runs that changed nothing.
            models.Index(
                fields=["-started_at"],
                condition=Q(summary__isnull=False),
                name="syncrun_summary_idx",
            ),
        ]
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"Sync #{self.pk} {self.outcome}"

    def save(self, *args, **kwargs) -> None:
        # The error and note quote text from outside (Inkit's error bodies,
        # exception messages): whoever set them, no secret is stored.
        self.error, self.note = scrub(self.error), scrub(self.note)
        super().save(*args, **kwargs)

    @property
    def duration(self) -> timedelta | None:
        if self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def pages_done(self) -> int:
        """Progress through the listing: pages read, at most its page count
        (a full sweep reads a few pages twice to prove it complete)."""
        return min(self.pages_fetched, self.page_count) if self.page_count else self.pages_fetched

    @property
    def requests_per_minute(self) -> float | None:
        """Requests to Inkit per minute over the run (None until it ends)."""
        duration = self.duration
        if duration is None:
            return None
        return self.api_requests * 60 / max(duration.total_seconds(), 1.0)

    @property
    def lock_name(self) -> str:
        return SyncLock.name_for(self.kind)

    @staticmethod
    def stale_after() -> timedelta:
        """How old the last success may be before the synced data counts as
        stale: STALE_AFTER_SYNC_INTERVALS sync intervals."""
        return timedelta(seconds=STALE_AFTER_SYNC_INTERVALS * settings.SYNC_INTERVAL_SECONDS)

    def is_stale(self, now: datetime) -> bool:
        """Whether the data this run read is stale by now: the one rule the
        header and /healthz apply to the last successful sync."""
        return now - (self.finished_at or self.started_at) > self.stale_after()


class SyncLock(models.Model):
    """The single-flight locks for sync runs: one row per kind of run
    ("sync" for full sweeps, "quick" for quick syncs), so never two sweeps
    or two quick syncs at once, while a quick sync may run during a long
    sweep. Claimed with a conditional update; a heartbeat every few seconds
    keeps the claim, and SYNC_LOCK_SECONDS after the last one a killed
    worker's claim may be taken over."""

    NAME = "sync"  # The full sweep's (the name today's lock row has).
    QUICK = "quick"

    name = models.CharField(primary_key=True, max_length=50)
    holder = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.SET_NULL)
    expires_at = models.DateTimeField(null=True, blank=True)

    @classmethod
    def name_for(cls, kind: str) -> str:
        return cls.QUICK if kind == SyncRun.Kind.QUICK else cls.NAME

    @classmethod
    def acquire(cls, run: SyncRun, seconds: int) -> tuple[bool, int | None]:
        """Claim run's lock. Returns (acquired, id of the run whose expired
        claim was taken over, if any)."""
        name = run.lock_name
        try:
            with transaction.atomic():
                cls.objects.get_or_create(name=name)
        except IntegrityError:
            pass  # Another process created the row first: fine.
        now = timezone.now()
        previous = cls.objects.filter(name=name).values_list("holder_id", flat=True).first()
        claimed = (
            cls.objects.filter(name=name)
            .filter(Q(holder__isnull=True) | Q(expires_at__lt=now) | Q(expires_at__isnull=True))
            .update(holder=run, expires_at=now + timedelta(seconds=seconds))
        )
        return claimed == 1, previous if claimed == 1 else None

    @classmethod
    def current_holder(cls, name: str = NAME) -> int | None:
        return (
            cls.objects.filter(name=name, expires_at__gte=timezone.now())
            .values_list("holder_id", flat=True)
            .first()
        )

    @classmethod
    def heartbeat(cls, run: SyncRun, seconds: int) -> bool:
        """Push the expiry forward; False means the lock was lost."""
        return (
            cls.objects.filter(name=run.lock_name, holder=run).update(
                expires_at=timezone.now() + timedelta(seconds=seconds)
            )
            == 1
        )

    @classmethod
    def release(cls, run: SyncRun) -> None:
        cls.objects.filter(name=run.lock_name, holder=run).update(holder=None, expires_at=None)


class SyncListing(models.Model):
    """What the sync learnt about Inkit's listing, kept between runs (one
    row): which sort parameter lists in which order, how big it was, and
    when a full sweep last verified it complete. A quick sync needs a
    learned order and a verified sweep; without them it runs a full sweep."""

    NAME = "batches"

    class Order(models.TextChoices):
        ASCENDING = "ascending", "Oldest first"
        DESCENDING = "descending", "Newest first"

    name = models.CharField(primary_key=True, max_length=50)
    # The sort parameter sent ("created_at" or "-created_at") and the order
    # the items came in with it.
    sort = models.CharField(max_length=50, blank=True)
    order = models.CharField(max_length=20, choices=Order.choices, blank=True)
    total_count = models.IntegerField(null=True, blank=True)
    page_size = models.IntegerField(null=True, blank=True)
    learned_at = models.DateTimeField(null=True, blank=True)
    # The start of the last full sweep that verified the listing complete.
    verified_at = models.DateTimeField(null=True, blank=True)

    @classmethod
    def load(cls) -> SyncListing:
        return cls.objects.filter(name=cls.NAME).first() or cls(name=cls.NAME)

    @property
    def ready_for_quick_syncs(self) -> bool:
        return bool(self.sort and self.order and self.verified_at and self.page_size)


# Alerts --------------------------------------------------------------------------


class Alert(models.Model):
    """One message to on-call: the stuck, recovered and finished transitions
    one evaluation claimed (BatchEvent.alert), and syncing going stale or
    coming back, as a single digest. Its content is frozen when it is made,
    so every channel and every retry says the same; each channel's sending
    is an AlertDelivery. See batches/alerts.py."""

    created_at = models.DateTimeField()
    # The sync run after which it was evaluated (the latest finished one when
    # the evaluation ran on its own); null before any sync finished.
    sync_run = models.ForeignKey(
        SyncRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    subject = models.CharField(max_length=200)
    stuck = models.IntegerField(default=0)
    overdue = models.IntegerField(default=0)
    recovered = models.IntegerField(default=0)
    finished = models.IntegerField(default=0)
    # "stale" or "recovered" when syncing changed state in this alert.
    sync_state = models.CharField(max_length=20, blank=True)
    # What the channels send (alerts.build_payload): no secret is ever in it.
    payload = models.JSONField()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Alert #{self.pk}: {self.subject}"


class AlertDeliveryQuerySet(models.QuerySet["AlertDelivery"]):
    def queue(self, channel: str) -> AlertDeliveryQuerySet:
        """A channel's deliveries still to send, oldest alert first: the order
        they go out in (alert_delivery_queue_idx)."""
        return self.filter(channel=channel, status__in=AlertDelivery.OPEN).order_by("alert_id")


class AlertDelivery(models.Model):
    """One alert on one channel. Each attempt is claimed with a conditional
    update (a lease until next_attempt_at), so however many workers deliver,
    one makes it; a failure is retried later on this row alone, never
    re-sending what the other channel delivered."""

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # Waiting for its first attempt or a retry.
        SENDING = "sending", "Sending"  # Claimed; the attempt's lease ends at next_attempt_at.
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"  # Given up.

    OPEN = (Status.PENDING, Status.SENDING)

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    # The alert's run, copied so /sync-runs/ prefetches a page of runs'
    # deliveries in one query (SyncRunQuerySet.with_alert_deliveries).
    sync_run = models.ForeignKey(
        SyncRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="alert_deliveries"
    )
    channel = models.CharField(max_length=20, choices=Channel.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.IntegerField(default=0)
    # Pending: when the next attempt is due. Sending: when the attempt under
    # way counts as abandoned (its worker died). Null once sent or given up.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # The last failure in words for an operator; scrubbed of secrets.
    error = models.TextField(blank=True)

    objects = AlertDeliveryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "alert deliveries"
        constraints = [
            # Also the index for an alert's deliveries.
            models.UniqueConstraint(fields=["alert", "channel"], name="alert_delivery_unique_channel"),
        ]
        indexes = [
            # AlertDeliveryQuerySet.queue(): a channel's open deliveries, oldest first.
            models.Index(
                fields=["channel", "alert"],
                condition=Q(status__in=["pending", "sending"]),
                name="alert_delivery_queue_idx",
            ),
        ]
        ordering = ["alert_id", "channel"]

    def __str__(self) -> str:
        return f"Alert #{self.alert_id} by {self.channel}: {self.status}"

    def is_due(self, now: datetime) -> bool:
        return self.status in self.OPEN and self.next_attempt_at is not None and self.next_attempt_at <= now

    def claim(self, now: datetime, lease: timedelta) -> bool:
        """Take this delivery for one attempt; False if another worker holds
        it or it was settled meanwhile."""
        claimed = AlertDelivery.objects.filter(
            pk=self.pk, status__in=self.OPEN, next_attempt_at__lte=now
        ).update(
            status=self.Status.SENDING,
            attempts=F("attempts") + 1,
            last_attempt_at=now,
            next_attempt_at=now + lease,
        )
        if claimed == 1:
            self.refresh_from_db(fields=["status", "attempts", "last_attempt_at", "next_attempt_at"])
        return claimed == 1

    def record_sent(self, now: datetime) -> bool:
        return self._settle(status=self.Status.SENT, sent_at=now, next_attempt_at=None, error="")

    def record_failure(self, error: str, retry_at: datetime | None) -> bool:
        """Pending again until retry_at, or failed for good when it is None."""
        status = self.Status.PENDING if retry_at is not None else self.Status.FAILED
        return self._settle(status=status, next_attempt_at=retry_at, error=error)

    def give_up(self, now: datetime, reason: str) -> bool:
        """Fail a delivery without attempting it (too old, channel removed)."""
        updated = AlertDelivery.objects.filter(
            pk=self.pk, status__in=self.OPEN, next_attempt_at__lte=now
        ).update(status=self.Status.FAILED, next_attempt_at=None, error=reason)
        if updated == 1:
            self.status, self.next_attempt_at, self.error = self.Status.FAILED, None, reason
        return updated == 1

    def _settle(self, **fields: object) -> bool:
        # Only the attempt that holds the claim records its outcome: if the
        # lease ran out and another worker took over, that one records.
        updated = AlertDelivery.objects.filter(
            pk=self.pk, status=self.Status.SENDING, attempts=self.attempts
        ).update(**fields)
        if updated == 1:
            for name, value in fields.items():
                setattr(self, name, value)
        return updated == 1


class SyncHealth(models.Model):
    """Whether this app has declared syncing stale: no successful sync for
    SYNC_STALE_AFTER_MINUTES, so stuck batches cannot be seen. One row,
    changed by conditional updates so the "stale" and "recovered" alerts go
    out once however many evaluators run."""

    NAME = "sync"

    name = models.CharField(primary_key=True, max_length=50)
    # When the blindness began (the last success's end, or the first attempt
    # if none ever succeeded); null while syncing is healthy.
    stale_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "sync health"

    @classmethod
    def declared_stale_since(cls) -> datetime | None:
        return cls.objects.filter(name=cls.NAME).values_list("stale_since", flat=True).first()

    @classmethod
    def declare_stale(cls, since: datetime) -> bool:
        """Claim the move to stale; False if it was already declared."""
        try:
            with transaction.atomic():
                cls.objects.get_or_create(name=cls.NAME)
        except IntegrityError:
            pass  # Another evaluator created the row first: fine.
        return cls.objects.filter(name=cls.NAME, stale_since__isnull=True).update(stale_since=since) == 1

    @classmethod
    def clear_stale(cls) -> datetime | None:
        """Claim the move back to healthy; returns when the blindness began,
        or None if another evaluator cleared it first (or it was not stale)."""
        since = cls.declared_stale_since()
        if since is None:
            return None
        cleared = cls.objects.filter(name=cls.NAME, stale_since=since).update(stale_since=None)
        return since if cleared == 1 else None


# Trends --------------------------------------------------------------------------
# Hourly rollups the sync writes as it sees counts change (batches/trends.py),
# read by the trends page and the summary strip: never the batch table.


class DestinationTrend(models.Model):
    """Documents that completed and failed at one destination in one UTC
    hour, as the sync saw the counts rise. A batch seen for the first time
    counts at the hour it was created (see batches/trends.py)."""

    hour = models.DateTimeField()  # The start of the hour, UTC.
    destination = models.CharField(max_length=100)
    completed = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # The sync's upsert target, and the index of every chart: a range
            # of hours, every destination (TRENDS_RETENTION_DAYS of them).
            models.UniqueConstraint(fields=["hour", "destination"], name="destination_trend_unique_hour"),
        ]
        ordering = ["hour", "destination"]

    def __str__(self) -> str:
        return f"{self.destination} {self.hour:%Y-%m-%d %H}:00 ✓{self.completed} ✕{self.failed}"


class CreationTrend(models.Model):
    """Batches (and their documents) created in one UTC hour, counted when
    the sync first sees them."""

    hour = models.DateTimeField(unique=True)  # The start of the hour, UTC; its index serves every range.
    batches = models.IntegerField(default=0)
    documents = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["hour"]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00: {self.batches} batches"
