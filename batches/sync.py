"""The sync service: pull every page of Inkit's List Batches into the database.

`sync_all()` is the one entry point; the Celery task, the `sync_batches`
command and the tests all call it.

Why the listing is read oldest first (sort=created_at): a batch is created
with the newest created_at, so while a sync pages through the list new
batches can only join the end of it. Pages already read never shift, nothing
is skipped or read twice, and the sync follows the page count as it grows.
Each page is checked to be in that order and the pages to follow one
another; with the count of distinct batches seen equal to the total_count
the last page reports, the listing is complete. Only then are batches the
database has but the listing lacks candidates for "gone", and each is
confirmed with Inkit (GET /v1/batch/{id}) before it is marked: a batch
deleted on an earlier page mid-sync shifts the next one onto a page already
read without upsetting the counts, and that one must not be marked gone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from hashlib import blake2b
from itertools import islice
from queue import Queue

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from . import trends
from .inkit import BatchData, DestinationData, InkitClient, InkitError, Page
from .models import Batch, BatchDestination, BatchEvent, SyncLock, SyncRun
from .secrets import scrub
from .stuck import evaluate_after_sync

log = logging.getLogger(__name__)

SORT = "created_at"  # oldest first: see the module docstring.
PROGRESS_EVERY_SECONDS = 1.0
HEARTBEAT_EVERY_SECONDS = 10.0
GONE_CHUNK = 1000
# Unlisted batches confirmed gone one by one (GET /v1/batch/{id}) per sync;
# a mass disappearance is worked through over several syncs.
GONE_CONFIRMATIONS = 100
MAX_REPORTED_REJECTS = 5

DESTINATION_FIELDS = ["count", "completed", "failed", "in_progress", "status"]


class SyncError(Exception):
    """The sync cannot go on; the message is meant for an operator."""


class SyncLockLost(SyncError):
    pass


class SyncStopped(SyncError):
    pass


# Set when the process is shutting down (a Celery worker on SIGTERM): the
# sync stops between pages, records itself and releases the lock, well
# within a platform's shutdown grace period. The next sync carries on.
shutdown_requested = threading.Event()
STOPPED = "stopped because the worker is shutting down; the next sync carries on"
TIME_LIMIT = "stopped at its time limit (SYNC_TIME_LIMIT_SECONDS); the next sync carries on"


@dataclass
class UpsertResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


# Writing one page -------------------------------------------------------------


def fingerprint(raw: dict) -> tuple[str, int]:
    """An item's canonical JSON and a 64-bit digest of it: comparing digests
    tells an unchanged batch without reading its stored JSON back."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = blake2b(text.encode(), digest_size=8).digest()
    return text, int.from_bytes(digest, "big", signed=True)


def _stored_fingerprints(ids: list[str]) -> dict[str, tuple[int | None, datetime | None]]:
    """The stored digest and gone_at of those of these batches already
    stored: all that an unchanged page costs in SQL. On PostgreSQL the ids
    go as one array parameter; Django's IN with a parameter per id spent
    longer preparing a page's hundred than PostgreSQL spent answering (a
    no-change re-sync of 100,000 batches: about 1 ms a page, a tenth)."""
    if connection.vendor != "postgresql":
        return {
            batch_id: (digest, gone_at)
            for batch_id, digest, gone_at in Batch.objects.filter(pk__in=ids).values_list(
                "id", "fingerprint", "gone_at"
            )
        }
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, fingerprint, gone_at FROM {connection.ops.quote_name(Batch._meta.db_table)} "
            "WHERE id = ANY(%s)",
            [ids],
        )
        return {batch_id: (digest, gone_at) for batch_id, digest, gone_at in cursor.fetchall()}


@dataclass(slots=True)
class _BatchRow:
    """The columns of one batch as upsert_batches writes them."""

    item: BatchData
    raw_json: str
    digest: int
    first_seen_at: datetime
    last_progress_at: datetime
    sums: tuple[int, int, int, int]

    @property
    def status(self) -> str:
        return self.item.status

    @property
    def completed(self) -> int:
        return self.sums[1]

    @property
    def failed(self) -> int:
        return self.sums[2]

    @property
    def in_progress(self) -> int:
        return self.sums[3]


def upsert_batches(items: Iterable[BatchData], now: datetime) -> UpsertResult:
    """Write one page of batches, touching only rows that changed.

    An unchanged page costs one query; a page with new or changed batches a
    few more, whatever its size. Progress (completed + failed grew, or the
    status changed) moves last_progress_at; every change of status or counts
    adds a BatchEvent.
    """
    by_id = {item.id: item for item in items}  # The last copy wins within a page.
    result = UpsertResult()
    if not by_id:
        return result
    prints = {batch_id: fingerprint(item.raw) for batch_id, item in by_id.items()}
    stored = _stored_fingerprints(list(by_id))
    changed_ids = [
        batch_id
        for batch_id, (digest, gone_at) in stored.items()
        if digest != prints[batch_id][1] or gone_at is not None
    ]
    old_batches: dict[str, dict] = {}
    old_destinations: dict[str, dict[str, dict]] = {batch_id: {} for batch_id in changed_ids}
    if changed_ids:
        old_batches = {
            row["id"]: row
            for row in Batch.objects.filter(pk__in=changed_ids).values(
                "id", "status", "completed", "failed", "in_progress", "first_seen_at",
                "last_progress_at", "gone_at",
            )
        }
        for dest in BatchDestination.objects.filter(batch_id__in=changed_ids).values(
            "id", "batch_id", "name", "batch_created_at", *DESTINATION_FIELDS
        ):
            old_destinations[dest["batch_id"]][dest["name"]] = dest

    batch_rows: list[_BatchRow] = []
    destination_rows: list[tuple[BatchData, DestinationData]] = []
    removed_destinations: list[int] = []
    events: list[BatchEvent] = []

    for batch_id, item in by_id.items():
        raw_json, digest = prints[batch_id]
        if batch_id not in stored:
            result.created += 1
            batch_rows.append(_BatchRow(item, raw_json, digest, now, now, item.sums()))
            destination_rows.extend((item, dest) for dest in item.destinations)
            continue
        old = old_batches.get(batch_id)
        if old is None:
            result.unchanged += 1
            continue
        result.updated += 1
        row = _BatchRow(item, raw_json, digest, old["first_seen_at"], now, item.sums())
        if not _progressed(old, row):
            row.last_progress_at = old["last_progress_at"]
        batch_rows.append(row)
        old_dests = old_destinations[batch_id]
        destination_changes: dict[str, object] = {}
        for dest in item.destinations:
            before = old_dests.get(dest.name)
            after = {key: getattr(dest, key) for key in DESTINATION_FIELDS}
            if before is None or any(before[key] != after[key] for key in DESTINATION_FIELDS):
                destination_rows.append((item, dest))
                destination_changes[dest.name] = _diff(before or {}, after)
            elif before["batch_created_at"] != item.created_at:
                # Inkit does not change a batch's created_at; should it ever,
                # the copy the list sorts a destination's batches by follows.
                destination_rows.append((item, dest))
        listed = {dest.name for dest in item.destinations}
        for name, before in old_dests.items():
            if name not in listed:
                removed_destinations.append(before["id"])
                destination_changes[name] = "removed"
        event = _change_event(old, row, destination_changes, now)
        if event is not None:
            events.append(event)

    if not batch_rows:  # Unchanged: nothing to write, no transaction.
        return result
    with transaction.atomic():
        _relax_commit()
        if batch_rows:
            _write_batches(batch_rows, now, new=result.created == len(batch_rows))
        if removed_destinations:
            BatchDestination.objects.filter(pk__in=removed_destinations).delete()
        if destination_rows:
            _write_destinations(destination_rows, new=not result.updated)
        if events:
            BatchEvent.objects.bulk_create(events)
        # Trends hook (batches/trends.py): the page's new batches and, for each
        # changed one, its destinations as stored before, in this transaction.
        trends.record_page(
            new=[item for batch_id, item in by_id.items() if batch_id not in stored],
            changed=[(old_destinations[batch_id], by_id[batch_id]) for batch_id in old_batches],
            now=now,
        )
    return result


# The writes are spelt out rather than left to bulk_create(update_conflicts=
# True): preparing every value of every field through the ORM cost more than
# the database's own work and capped a first sync near 2,000 batches/s. Rows
# are upserted with INSERT ... ON CONFLICT DO UPDATE, which PostgreSQL and
# SQLite both speak, every value a parameter. A page of only new batches (a
# first sync, mostly) goes through PostgreSQL's COPY instead, about twice as
# fast again; the sync's lock means no other writer can insert them first.
_BATCH_COLUMNS = (
    "id", "name", "status", "total", "created_at", "count", "completed", "failed",
    "in_progress", "first_seen_at", "last_changed_at", "last_progress_at", "gone_at",
    "raw", "fingerprint",
)
_BATCH_UPDATED = tuple(c for c in _BATCH_COLUMNS if c not in ("id", "first_seen_at"))
_DESTINATION_COLUMNS = ("batch_id", "name", *DESTINATION_FIELDS, "batch_created_at")
_DESTINATION_UPDATED = (*DESTINATION_FIELDS, "batch_created_at")
_UPSERT_CHUNK = 500


def _write_batches(rows: list[_BatchRow], now: datetime, *, new: bool) -> None:
    copying = new and connection.vendor == "postgresql"
    adapt = (lambda value: value) if copying else connection.ops.adapt_datetimefield_value
    changed_at = adapt(now)
    values = [
        (
            row.item.id,
            row.item.name,
            row.item.status,
            row.item.total,
            adapt(row.item.created_at),
            *row.sums,
            adapt(row.first_seen_at),
            changed_at,
            adapt(row.last_progress_at),
            None,
            row.raw_json,
            row.digest,
        )
        for row in rows
    ]
    if copying:
        _copy(Batch, _BATCH_COLUMNS, values)
    else:
        _upsert(Batch, _BATCH_COLUMNS, ("id",), _BATCH_UPDATED, values, json_columns=("raw",))


def _write_destinations(rows: list[tuple[BatchData, DestinationData]], *, new: bool) -> None:
    copying = new and connection.vendor == "postgresql"
    adapt = (lambda value: value) if copying else connection.ops.adapt_datetimefield_value
    values = [
        (b.id, d.name, d.count, d.completed, d.failed, d.in_progress, d.status, adapt(b.created_at))
        for b, d in rows
    ]
    if copying:
        _copy(BatchDestination, _DESTINATION_COLUMNS, values)
    else:
        conflict = ("batch_id", "name")
        _upsert(BatchDestination, _DESTINATION_COLUMNS, conflict, _DESTINATION_UPDATED, values)


def _relax_commit() -> None:
    """Let PostgreSQL acknowledge this page's commit before its WAL reaches
    disk. A crash could lose the last few pages written, never corrupt them,
    and the next sync writes them again; waiting for the flush on every page
    would cost more than the rest of the page."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _copy(model: type[models.Model], columns: Sequence[str], rows: list[tuple]) -> None:
    quote = connection.ops.quote_name
    sql = f"COPY {quote(model._meta.db_table)} ({', '.join(map(quote, columns))}) FROM STDIN"
    # psycopg's own cursor does COPY; Django's wrapper turns its errors into
    # Django's (IntegrityError for a batch another writer inserted first).
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)


def _upsert(
    model: type[models.Model],
    columns: Sequence[str],
    conflict: Sequence[str],
    update: Sequence[str],
    rows: list[tuple],
    json_columns: Sequence[str] = (),
) -> None:
    quote = connection.ops.quote_name
    # JSON arrives as text; PostgreSQL's jsonb column wants it cast.
    cast = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
    placeholders = "(" + ", ".join(cast if c in json_columns else "%s" for c in columns) + ")"
    head = f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(map(quote, columns))}) VALUES "
    tail = (
        f" ON CONFLICT ({', '.join(map(quote, conflict))}) DO UPDATE SET "
        + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in update)
    )
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _UPSERT_CHUNK):
            chunk = rows[start : start + _UPSERT_CHUNK]
            cursor.execute(
                head + ", ".join([placeholders] * len(chunk)) + tail,
                [value for row in chunk for value in row],
            )


def _progressed(old: dict, new: _BatchRow) -> bool:
    """Progress is completed + failed growing, or the status changing."""
    return new.status != old["status"] or new.completed + new.failed > old["completed"] + old["failed"]


def _diff(before: dict, after: dict) -> dict:
    return {
        key: [before.get(key), value] for key, value in after.items() if before.get(key) != value
    }


def _change_event(old: dict, new: _BatchRow, destinations: dict, now: datetime) -> BatchEvent | None:
    """A history entry when the status or any count changed, None otherwise."""
    changes = _diff(
        {key: old[key] for key in ("status", "completed", "failed", "in_progress")},
        {
            "status": new.status,
            "completed": new.completed,
            "failed": new.failed,
            "in_progress": new.in_progress,
        },
    )
    if destinations:
        changes["destinations"] = destinations
    returned = old["gone_at"] is not None
    if not changes and not returned:
        return None
    return BatchEvent(
        batch_id=new.item.id,
        seen_at=now,
        kind=BatchEvent.Kind.RETURNED if returned else BatchEvent.Kind.CHANGED,
        status=new.status,
        completed=new.completed,
        failed=new.failed,
        in_progress=new.in_progress,
        changes=changes,
    )


def unlisted(seen: array) -> list[str]:
    """Present batches whose id hash is not in `seen` (sorted): the ones a
    complete listing did not include."""
    missing: list[str] = []
    for batch_id in Batch.objects.present().values_list("id", flat=True).iterator(chunk_size=5000):
        key = hash(batch_id)
        position = bisect_left(seen, key)
        if position == len(seen) or seen[position] != key:
            missing.append(batch_id)
    return missing


def mark_gone(batch_ids: list[str], now: datetime) -> int:
    """Mark these batches gone, each with a history entry; return how many."""
    marked = 0
    for start in range(0, len(batch_ids), GONE_CHUNK):
        chunk = batch_ids[start : start + GONE_CHUNK]
        with transaction.atomic():
            rows = list(
                Batch.objects.present()
                .filter(pk__in=chunk)
                .values("id", "status", "completed", "failed", "in_progress")
            )
            Batch.objects.filter(pk__in=[row["id"] for row in rows]).update(gone_at=now)
            BatchEvent.objects.bulk_create(
                BatchEvent(batch_id=row.pop("id"), seen_at=now, kind=BatchEvent.Kind.GONE, **row)
                for row in rows
            )
        marked += len(rows)
    return marked


# Reading the whole listing ------------------------------------------------------


@dataclass
class _Listing:
    """What the sync learnt about the listing as a whole, to decide whether
    it was read completely and consistently."""

    seen: array = field(default_factory=lambda: array("q"))
    bounds: dict[int, tuple[datetime, datetime]] = field(default_factory=dict)
    last: Page | None = None  # The highest-numbered page fetched...
    last_number: int = 0  # ...and the number it was asked for by.
    # The batches on pages that were not full, which may be read again.
    partial_pages: dict[int, set[str]] = field(default_factory=dict)
    page_count: int = 0
    rejected: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, requested: int, page: Page) -> list[BatchData]:
        """Take in a fetched page; return its batches this listing has not
        seen yet (all of them, but for a last page read again)."""
        items = page.items
        known = self.partial_pages.get(requested)
        if known is not None:
            # A page that was not full, read again after the listing grew:
            # batches created meanwhile filled it up. Only those are new.
            items = [item for item in items if item.id not in known]
        if len(page.items) < page.page_size:
            self.partial_pages[requested] = (known or set()) | {item.id for item in items}
        self.seen.extend(hash(item.id) for item in items)
        self.rejected.extend(
            reason
            for reason in (f"page {requested}: {reason}" for reason in page.rejected)
            if reason not in self.rejected
        )
        self.page_count = max(self.page_count, page.page_count)
        if page.number != requested:
            self.problems.append(f"asked for page {requested}, Inkit answered page {page.number}")
        if requested >= self.last_number:
            self.last, self.last_number = page, requested
        if page.items:
            created = [item.created_at for item in page.items]
            if any(later < earlier for earlier, later in zip(created, created[1:])):
                self.problems.append(f"page {requested} was not in created_at order")
            self.bounds[requested] = (created[0], created[-1])
        elif requested < page.page_count:
            self.problems.append(f"page {requested} of {page.page_count} was empty")
        return items

    def pages_to_fetch(self) -> tuple[int, int]:
        """The pages still to read, first and last, as far as the pages read
        so far say (an empty range when there are none). A last page that was
        not full is read again: new batches fill it before they start another."""
        last = self.last
        pages = self.page_count
        if last is not None and last.items and not last.is_last:
            pages = max(pages, self.last_number + 1)
        first = self.last_number + 1
        if last is not None and pages > self.last_number and len(last.items) < last.page_size:
            first = self.last_number
        return first, pages

    def check(self) -> list[str]:
        """Reasons the listing cannot be trusted as complete; empty if it can."""
        problems = list(self.problems)
        pages = sorted(self.bounds)
        for before, after in zip(pages, pages[1:]):
            if self.bounds[after][0] < self.bounds[before][1]:
                problems.append(f"page {after} starts before page {before} ends")
                break
        self.seen = array("q", sorted(self.seen))
        duplicates = sum(1 for a, b in zip(self.seen, self.seen[1:]) if a == b)
        if duplicates:
            problems.append(f"{duplicates} batches were listed twice")
        total = self.last.total_count if self.last else 0
        distinct = len(self.seen) - duplicates + len(self.rejected)
        if total is None:
            problems.append("Inkit did not report total_count")
        elif distinct != total:
            problems.append(f"{distinct} batches listed but Inkit reported {total}")
        return problems


class _PageWriters:
    """Writes pages on a few threads, each with its own database connection.

    One writer leaves PostgreSQL waiting on Python between pages and Python
    waiting on PostgreSQL during them; two keep both busy, which took a first
    sync of 100,000 batches from about 3,900 to 5,400 batches/s on a 2-core
    machine. The queue holds at most one page per writer, so memory stays
    flat. The first error stops the writing and is raised to the caller.
    """

    def __init__(self, count: int, write: Callable[[list[BatchData]], None]):
        self.write = write
        self.error: BaseException | None = None
        self.queue: Queue[list[BatchData] | None] = Queue(maxsize=count)
        self.threads = [
            threading.Thread(target=self._work, name=f"sync-writer-{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def put(self, items: list[BatchData]) -> None:
        self.raise_error()
        self.queue.put(items)

    def close(self, *, raise_error: bool = True) -> None:
        """Wait for every queued page to be written, then stop the threads."""
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()
        if raise_error:
            self.raise_error()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _work(self) -> None:
        try:
            while (items := self.queue.get()) is not None:
                if self.error is None:  # After an error, only drain the queue.
                    try:
                        self.write(items)
                    except BaseException as error:  # Handed to the sync's thread.
                        self.error = self.error or error
        finally:
            connection.close()  # This thread's own connection.


class _Sync:
    """One sync run in progress: fetches pages (concurrently after the first),
    writes each as it arrives, keeps the run's record and the lock fresh."""

    def __init__(
        self,
        run: SyncRun,
        client: InkitClient,
        *,
        concurrency: int,
        writers: int,
        page_size: int,
        deadline: float,
        progress: Callable[[SyncRun], None] | None,
    ):
        self.run = run
        self.client = client
        self.concurrency = concurrency
        self.writers = writers
        self.page_size = page_size
        self.deadline = deadline
        self.progress = progress
        self.listing = _Listing()
        self.wrote = False
        self._lock = threading.Lock()  # Guards the run's counters across writers.
        self._saved_at = 0.0
        self._heartbeat_at = time.monotonic()

    def sync(self) -> None:
        writers = _PageWriters(self.writers, self.write) if self.writers > 1 else None
        try:
            self.arrived(1, self.fetch(1), writers)
            # Follow the page count as it grows: new batches join the end.
            while True:
                first, last = self.listing.pages_to_fetch()
                if first > last:
                    break
                self.fetch_concurrently(range(first, last + 1), writers)
        except BaseException:
            if writers is not None:
                writers.close(raise_error=False)  # The error in hand comes first.
            raise
        if writers is not None:
            writers.close()
        self.keep_fresh(force=True)  # The last page's progress, whatever the clock.
        self.finish_listing()

    def fetch(self, number: int) -> Page:
        return self.client.list_batches(page=number, page_size=self.page_size, sort=SORT)

    def fetch_concurrently(self, numbers: Iterable[int], writers: _PageWriters | None) -> None:
        """Fetch pages on up to `concurrency` threads and pass each on as it
        arrives. A failure stops the rest and is raised."""
        numbers = iter(numbers)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="inkit-page")
        pending: dict[Future, int] = {}
        try:
            for number in islice(numbers, self.concurrency):
                pending[pool.submit(self.fetch, number)] = number
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    number = pending.pop(future)
                    self.arrived(number, future.result(), writers)
                    for following in islice(numbers, 1):
                        pending[pool.submit(self.fetch, following)] = following
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def arrived(self, number: int, page: Page, writers: _PageWriters | None) -> None:
        """Note what the page says of the listing, then write it: here, or
        on a writer thread."""
        items = self.listing.add(number, page)
        if writers is None:
            self.write(items)
        else:
            writers.put(items)

    def write(self, items: list[BatchData], *, page: bool = True) -> None:
        check_going(self.deadline)
        try:
            result = upsert_batches(items, timezone.now())
        except IntegrityError:
            # Another writer inserted one of these batches first: the listing
            # shifted, putting a batch on two pages. Written again, the page
            # finds it stored and updates it.
            result = upsert_batches(items, timezone.now())
        with self._lock:
            run = self.run
            run.pages_fetched += page
            run.page_count = max(run.page_count or 0, self.listing.page_count)
            run.batches_seen += len(items)
            run.batches_created += result.created
            run.batches_updated += result.updated
            run.batches_unchanged += result.unchanged
            self.wrote = self.wrote or bool(result.created or result.updated)
            self.keep_fresh()

    def keep_fresh(self, force: bool = False) -> None:
        """Save progress about once a second and renew the lock about every
        ten, rather than on every page."""
        now = time.monotonic()
        if force or now - self._saved_at >= PROGRESS_EVERY_SECONDS:
            self._saved_at = now
            _copy_stats(self.run, self.client)
            SyncRun.objects.filter(pk=self.run.pk).update(
                page_count=self.run.page_count,
                pages_fetched=self.run.pages_fetched,
                batches_seen=self.run.batches_seen,
                batches_created=self.run.batches_created,
                batches_updated=self.run.batches_updated,
                batches_unchanged=self.run.batches_unchanged,
                api_requests=self.run.api_requests,
                api_retries=self.run.api_retries,
            )
            if self.progress:
                self.progress(self.run)
        if force or now - self._heartbeat_at >= HEARTBEAT_EVERY_SECONDS:
            self._heartbeat_at = now
            if not SyncLock.heartbeat(self.run, settings.SYNC_LOCK_SECONDS):
                raise SyncLockLost(
                    "lost the sync lock (no heartbeat for SYNC_LOCK_SECONDS); another sync took over"
                )

    def finish_listing(self) -> None:
        listing = self.listing
        if listing.rejected:
            shown = "; ".join(listing.rejected[:MAX_REPORTED_REJECTS])
            more = len(listing.rejected) - MAX_REPORTED_REJECTS
            raise SyncError(
                f"{len(listing.rejected)} batches could not be read: {shown}"
                + (f" (and {more} more)" if more > 0 else "")
            )
        problems = listing.check()
        if problems:
            self.add_note(
                "The listing changed while it was read ("
                + "; ".join(problems)
                + "), so no batch was marked gone this time; the next sync will catch up."
            )
            return
        self.run.complete = True
        missing = unlisted(listing.seen)
        gone = self.confirm_gone(missing[:GONE_CONFIRMATIONS])
        self.run.batches_gone = mark_gone(gone, timezone.now())
        if len(missing) > GONE_CONFIRMATIONS:
            self.add_note(
                f"{len(missing) - GONE_CONFIRMATIONS} more unlisted batches are left for the "
                f"next syncs to confirm gone ({GONE_CONFIRMATIONS} a sync)."
            )
        self.wrote = self.wrote or self.run.batches_gone > 0

    def confirm_gone(self, candidates: list[str]) -> list[str]:
        """Ask Inkit for each batch a complete listing lacked; return those it
        no longer has (404). A listing can look complete yet have skipped a
        batch: one deleted on an earlier page while the sync paged shifts the
        next one back onto a page already read, and the counts still agree.
        Such a batch answers, and is written instead of marked gone."""
        if not candidates:
            return []
        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="inkit-batch") as pool:
                answers = list(pool.map(self.client.get_batch, candidates))
        except InkitError as error:
            self.add_note(f"No batch was marked gone: confirming with Inkit failed ({error}).")
            return []
        found = [batch for batch in answers if batch is not None]
        if found:
            self.write(found, page=False)
            self.add_note(
                f"{len(found)} batches missing from the listing were still in Inkit (the "
                "listing shifted while it was read) and were written, not marked gone."
            )
        return [batch_id for batch_id, batch in zip(candidates, answers, strict=True) if batch is None]

    def add_note(self, text: str) -> None:
        self.run.note = f"{self.run.note} {text}".strip()


def _copy_stats(run: SyncRun, client: InkitClient) -> None:
    stats = client.stats
    run.api_requests = stats.requests
    run.api_retries = stats.retries
    run.api_responses = dict(stats.responses)


# The entry point -----------------------------------------------------------------


def build_client(deadline: float) -> InkitClient:
    """An InkitClient configured from settings, whose waits between retries
    end with the sync (see wait_unless_stopping)."""
    if not settings.INKIT_API_TOKEN:
        raise SyncError("INKIT_API_TOKEN is not set, so there is nothing to sync from")
    return InkitClient(
        settings.INKIT_API_BASE_URL,
        settings.INKIT_API_TOKEN,
        version=settings.VERSION,
        read_timeout=settings.INKIT_TIMEOUT_SECONDS,
        max_retries=settings.INKIT_MAX_RETRIES,
        pool_size=settings.SYNC_CONCURRENCY,
        sleep=partial(wait_unless_stopping, deadline),
    )


def wait_unless_stopping(deadline: float, seconds: float) -> None:
    """The client's wait between retries: cut short when the worker shuts
    down (a backoff must not outlast the platform's grace period), and
    refused when it would end past the sync's time limit."""
    if time.monotonic() + seconds > deadline:
        raise SyncStopped(TIME_LIMIT)
    if shutdown_requested.wait(seconds):
        raise SyncStopped(STOPPED)


def check_going(deadline: float) -> None:
    """Raise if the sync must stop: the worker is shutting down, or the sync
    ran past SYNC_TIME_LIMIT_SECONDS."""
    if shutdown_requested.is_set():
        raise SyncStopped(STOPPED)
    if time.monotonic() > deadline:
        raise SyncStopped(TIME_LIMIT)


def describe(error: BaseException) -> str:
    """One line for an operator, never a secret: an error's message may
    quote text from outside (Inkit's body, a database driver's message)."""
    if isinstance(error, (InkitError, SyncError)):
        return scrub(str(error))
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return scrub(f"unexpected error: {type(error).__name__}: {error}")


def sync_all(
    *,
    trigger: str = SyncRun.Trigger.SCHEDULE,
    client: InkitClient | None = None,
    concurrency: int | None = None,
    writers: int | None = None,
    progress: Callable[[SyncRun], None] | None = None,
) -> SyncRun:
    """Pull every page of List Batches into the database; return the SyncRun.

    Never raises for a failed sync: the outcome and error are on the run.
    Only one sync runs at a time; a sync that finds another running is
    recorded as skipped.
    """
    run = SyncRun.objects.create(trigger=trigger)
    acquired, expired_holder = SyncLock.acquire(run, settings.SYNC_LOCK_SECONDS)
    if not acquired:
        run.outcome = SyncRun.Outcome.SKIPPED
        run.note = f"Another sync (#{SyncLock.current_holder()}) was running."
        run.finished_at = timezone.now()
        run.save()
        log.info("sync #%s skipped: another sync is running", run.pk)
        return run
    if expired_holder:
        SyncRun.objects.filter(pk=expired_holder, outcome=SyncRun.Outcome.RUNNING).update(
            outcome=SyncRun.Outcome.FAILED,
            finished_at=timezone.now(),
            error="The worker stopped without finishing (its lock expired).",
        )

    # Celery's threads pool cannot stop a task at its time limit, so the sync
    # keeps its own: checked between pages and before every retry wait.
    deadline = time.monotonic() + settings.SYNC_TIME_LIMIT_SECONDS
    owns_client = client is None
    sync: _Sync | None = None
    try:
        client = client or build_client(deadline)
        sync = _Sync(
            run,
            client,
            concurrency=concurrency or settings.SYNC_CONCURRENCY,
            writers=_writers(writers),
            page_size=settings.INKIT_PAGE_SIZE,
            deadline=deadline,
            progress=progress,
        )
        sync.sync()
        run.outcome = SyncRun.Outcome.SUCCEEDED
    except BaseException as error:
        run.outcome = SyncRun.Outcome.FAILED
        run.error = describe(error)
        if not isinstance(error, (InkitError, SyncError)):
            log.exception("sync #%s failed unexpectedly", run.pk)
        if not isinstance(error, Exception):
            raise  # Interrupted: record the run (below), then let it stop.
    finally:
        _finish(run, client, wrote=sync is not None and sync.wrote)
        if owns_client and client is not None:
            client.close()
    # After the lock is released, and never raising: alerting cannot fail or
    # hold up syncing. A failed run is evaluated too (it can reveal staleness).
    evaluate_after_sync(run)
    return run


def _writers(asked: int | None) -> int:
    """How many threads write pages. SQLite takes one writer at a time, so
    more would only wait; inside a transaction (a test's, say) other threads'
    connections could neither see its rows nor be rolled back with it."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return 1
    return asked or settings.SYNC_WRITERS


def _finish(run: SyncRun, client: InkitClient | None, *, wrote: bool) -> None:
    run.finished_at = timezone.now()
    if client is not None:
        _copy_stats(run, client)
    # The summary strip is computed here, once per sync that changed something.
    if wrote or not SyncRun.objects.filter(summary__isnull=False).exists():
        run.summary = Batch.objects.summary()
    run.save()
    SyncLock.release(run)
    log.info("%s", summary_line(run))


def summary_line(run: SyncRun) -> str:
    """The one-line account of a run that the log and the command print."""
    seconds = run.duration.total_seconds() if run.duration else 0.0
    head = f"sync #{run.pk} {run.outcome} in {seconds:.1f}s"
    if run.outcome == SyncRun.Outcome.SKIPPED:
        return f"{head}: {run.note}"
    line = (
        f"{head}: {run.pages_fetched} of {run.page_count or 0} pages, "
        f"{run.batches_seen} batches ({run.batches_created} new, {run.batches_updated} changed, "
        f"{run.batches_unchanged} unchanged, {run.batches_gone} gone), "
        f"{run.api_requests} API requests, {run.api_retries} retries"
    )
    if run.error:
        line += f"; error: {run.error}"
    elif run.note:
        line += f"; note: {run.note}"
    return line
