"""Sync runs: the full sweep and the quick sync, and `sync_all()`, the one
entry point the Celery task, the `sync_batches` command and the tests call.

A full sweep reads every page and proves the listing complete (listing.py
says how); only a verified sweep marks batches gone, each confirmed with
GET /v1/batch/{id}. A quick sync reads what can have changed: the batches
created since the last run (from the newest end until it meets known ones)
and the batches in flight (their pages near the newest end, or one GET
each), so its cost follows activity, not the account's size.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from queue import Empty, Queue

from django.conf import settings
from django.db import IntegrityError, connection
from django.db.models import F
from django.utils import timezone

from ..inkit import BatchData, InkitClient, InkitError, Page
from ..models import IN_FLIGHT_HOURS, Batch, SyncListing, SyncLock, SyncRun
from . import budget as budgets
from . import listing as completeness
from .errors import (
    STOPPED,
    TIME_LIMIT,
    SyncError,
    SyncLockLost,
    SyncStopped,
    describe,
    shutdown_requested,
)
from .listing import Order, Read
from .writes import UpsertResult, mark_gone, unlisted, upsert_batches

log = logging.getLogger("batches.sync")

PROGRESS_EVERY_SECONDS = 1.0
# Unlisted batches confirmed gone one by one (GET /v1/batch/{id}) per
# sweep; a mass disappearance is worked through over several sweeps.
GONE_CONFIRMATIONS = 100
# More than this share of the stored batches unlisted at once is not
# believed: nothing is marked gone and the note says so.
MASS_GONE_SHARE = 0.5
MAX_REPORTED_REJECTS = 5
# Bounds on the re-reads that make a sweep complete.
MAX_ROUNDS = 5  # re-reads of the newest end for batches created meanwhile
MAX_HEAD_PAGES = 50  # pages read at the newest end in one round
MAX_TAIL_PAGES = 200  # pages the oldest end may grow by while a sweep reads
REPAIR_ATTEMPTS = 4  # reads spent on one suspicious page boundary
REPAIR_SLACK = 3  # positions either side, for batches moving meanwhile
# A quick sync reads at most this many pages of new batches (more means a
# burst the next full sweep takes in), and this many extra GETs of the
# stalest other In Progress batches.
QUICK_NEW_PAGES = 20
QUICK_EXTRA = 5

SORTS = {"created_at": "-created_at", "-created_at": "created_at"}


def heartbeat_seconds() -> float:
    """How often a run renews its lock: nine beats to a lock's life."""
    return max(1.0, settings.SYNC_LOCK_SECONDS / 9)


class Heartbeat:
    """Keeps a run's lock alive from its own thread, every few seconds,
    while the run waits on Inkit, on the budget or on the database. Inside
    a transaction (a test's) another connection could not see the run, so
    the run's own thread beats instead (beat())."""

    def __init__(self, run: SyncRun, *, threaded: bool):
        self.run = run
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._last = time.monotonic()
        self._thread = (
            threading.Thread(target=self._loop, name=f"sync-heartbeat-{run.pk}", daemon=True)
            if threaded
            else None
        )

    def start(self) -> None:
        if self._thread is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def beat(self, force: bool = False) -> None:
        """The run's own beat (a no-op when the thread beats)."""
        if self._thread is not None and not force:
            return
        now = time.monotonic()
        if force or now - self._last >= heartbeat_seconds():
            self._last = now
            self._renew()

    def _renew(self) -> None:
        if not SyncLock.heartbeat(self.run, settings.SYNC_LOCK_SECONDS):
            self.lost.set()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(heartbeat_seconds()):
                try:
                    self._renew()
                except Exception:  # The database blinked: try again next beat.
                    log.warning("sync #%s: heartbeat failed; trying again", self.run.pk)
                if self.lost.is_set():
                    return
        finally:
            connection.close()


class _PageWriters:
    """Writes pages on a few threads, each with its own database connection.

    One writer leaves PostgreSQL waiting on Python between pages and Python
    waiting on PostgreSQL during them; two keep both busy. The queue holds
    at most one page per writer, so memory stays flat. The first error stops
    the writing and is raised to the caller.
    """

    def __init__(self, count: int, write: Callable[[list[BatchData], datetime], None]):
        self.write = write
        self.error: BaseException | None = None
        self.queue: Queue[tuple[list[BatchData], datetime] | None] = Queue(maxsize=count)
        self.threads = [
            threading.Thread(target=self._work, name=f"sync-writer-{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def put(self, items: list[BatchData], read_at: datetime) -> None:
        self.raise_error()
        self.queue.put((items, read_at))

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
            while (job := self.queue.get()) is not None:
                if self.error is None:  # After an error, only drain the queue.
                    try:
                        self.write(*job)
                    except BaseException as error:  # Handed to the sync's thread.
                        self.error = self.error or error
        finally:
            connection.close()  # This thread's own connection.


@dataclass
class _Fetched:
    """A page fetched on a reading thread, for the run's thread to write."""

    page: Page
    read: Read
    read_at: datetime


class _Run:
    """What both kinds of run share: reading through the budget and the
    clock, writing each batch once, keeping the run's record and lock fresh."""

    def __init__(
        self,
        run: SyncRun,
        client: InkitClient,
        *,
        concurrency: int,
        writers: int,
        deadline: float,
        progress: Callable[[SyncRun], None] | None,
        heartbeat: Heartbeat,
        listing: SyncListing,
    ):
        self.run = run
        self.client = client
        self.concurrency = concurrency
        self.writer_count = writers
        self.deadline = deadline
        self.progress = progress
        self.heartbeat = heartbeat
        self.listing = listing
        self.page_size = settings.INKIT_PAGE_SIZE
        self.sort = listing.sort or "created_at"
        self.clock = completeness.Clock()
        self.tally = completeness.Tally()
        self.seen = completeness.SeenBatches()
        self.rejected: list[str] = []
        self.result = UpsertResult()
        self.wrote = False
        self.notes: list[str] = []
        self.latest_total: int | None = None
        self._lock = threading.Lock()  # Guards the run's counters across writers.
        self._saved_at = 0.0
        self.writers: _PageWriters | None = None
        self.stop_segments = threading.Event()  # Segment threads stop when one fails.
        self.head_problem = ""
        self.gets = 0
        self.extras = 0
        self.last_known: set[str] = set()

    # -- stopping --

    def check_going(self) -> None:
        """Raise if the run must stop: the worker is shutting down, it ran
        past SYNC_TIME_LIMIT_SECONDS, or it lost its lock."""
        check_going(self.deadline)
        if self.heartbeat.lost.is_set():
            raise SyncLockLost(
                "lost the sync lock (no heartbeat for SYNC_LOCK_SECONDS); another sync took over"
            )

    # -- reading --

    def fetch(self, number: int, size: int | None = None) -> _Fetched:
        """One page, as served (not written yet)."""
        self.check_going()
        read_at = timezone.now()
        sent = self.clock.tick()
        page = self.client.list_batches(
            page=number, page_size=size or self.page_size, sort=self.sort
        )
        read = Read.of(page, number, sent, self.clock.tick())
        return _Fetched(page, read, read_at)

    def read(self, number: int, size: int | None = None) -> Read:
        """One page, fetched and written here and now."""
        fetched = self.fetch(number, size)
        self.take(fetched)
        return fetched.read

    def take(self, fetched: _Fetched) -> int:
        """Write a fetched page's batches not read before in this run (the
        first copy of a batch is the one written); return how many were new
        to the run."""
        page = fetched.page
        self.tally.pages += 1
        if page.total_count is not None:
            self.latest_total = page.total_count
        self.rejected.extend(
            reason
            for reason in (f"page {fetched.read.page}: {r}" for r in page.rejected)
            if reason not in self.rejected
        )
        fresh = []
        for item in page.items:
            if self.seen.add(item.id):
                fresh.append(item)
        self.write(fresh, fetched.read_at, page_count=page.page_count, pages=1)
        return len(fresh)

    def write(
        self, items: list[BatchData], read_at: datetime, *, page_count: int = 0, pages: int = 0
    ) -> None:
        with self._lock:
            self.run.pages_fetched += pages
            self.run.page_count = max(self.run.page_count or 0, page_count)
        if self.writers is not None:
            self.writers.put(items, read_at)
        else:
            self.write_now(items, read_at)

    def write_now(self, items: list[BatchData], read_at: datetime) -> UpsertResult:
        self.check_going()
        try:
            result = upsert_batches(items, timezone.now(), read_at)
        except IntegrityError:
            # Another writer inserted one of these batches first (a quick
            # sync beside a sweep, or the listing put a batch on two pages):
            # written again, the page finds it stored and updates it.
            result = upsert_batches(items, timezone.now(), read_at)
        with self._lock:
            run = self.run
            run.batches_created += result.created
            run.batches_updated += result.updated
            run.batches_unchanged += result.unchanged
            self.result.add(UpsertResult(stale=result.stale, checked=result.checked))
            self.wrote = self.wrote or bool(result.created or result.updated)
            self.keep_fresh()
        return result

    def get_batches(self, batch_ids: list[str]) -> dict[str, BatchData | None]:
        """GET /v1/batch/{id} for each (concurrently), written here; the
        answer for each id (None: Inkit no longer has it)."""
        if not batch_ids:
            return {}
        self.check_going()
        read_at = timezone.now()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="inkit-batch") as pool:
            answers = list(pool.map(self._get_one, batch_ids))
        found = [batch for batch in answers if batch is not None]
        for batch in found:
            self.seen.add(batch.id)
        if found:
            self.write_now(found, read_at)
        return dict(zip(batch_ids, answers, strict=True))

    def _get_one(self, batch_id: str) -> BatchData | None:
        self.check_going()
        return self.client.get_batch(batch_id)

    # -- the record --

    def keep_fresh(self, force: bool = False) -> None:
        """Save progress about once a second (and beat, when the run's own
        thread keeps the lock)."""
        now = time.monotonic()
        if force or now - self._saved_at >= PROGRESS_EVERY_SECONDS:
            self._saved_at = now
            run = self.run
            run.batches_seen = len(self.seen)
            copy_stats(run, self.client)
            SyncRun.objects.filter(pk=run.pk).update(
                page_count=run.page_count,
                pages_fetched=run.pages_fetched,
                batches_seen=run.batches_seen,
                batches_created=run.batches_created,
                batches_updated=run.batches_updated,
                batches_unchanged=run.batches_unchanged,
                api_requests=run.api_requests,
                api_retries=run.api_retries,
            )
            if self.progress:
                self.progress(run)
        self.heartbeat.beat(force)

    def note(self, text: str) -> None:
        self.notes.append(describe(text))

    def finish_reading(self) -> None:
        if self.writers is not None:
            writers, self.writers = self.writers, None
            writers.close()
        self.seen.freeze()
        self.run.batches_seen = len(self.seen)
        self.keep_fresh(force=True)

    def raise_rejected(self) -> None:
        if self.rejected:
            shown = "; ".join(self.rejected[:MAX_REPORTED_REJECTS])
            more = len(self.rejected) - MAX_REPORTED_REJECTS
            raise SyncError(
                describe(
                    f"{len(self.rejected)} batches could not be read: {shown}"
                    + (f" (and {more} more)" if more > 0 else "")
                )
            )

    def save_listing(self, **fields: object) -> None:
        listing = self.listing
        for name, value in fields.items():
            setattr(listing, name, value)
        listing.total_count = self.latest_total
        listing.page_size = self.page_size if listing.page_size is None else listing.page_size
        listing.save()


# The full sweep ------------------------------------------------------------------


class FullSweep(_Run):
    """Every page, read so that the reads provably cover the listing."""

    def sweep(self) -> None:
        if self.writer_count > 1:
            self.writers = _PageWriters(self.writer_count, self.write_now)
        try:
            order, probe, reason = self.learn_order()
            self.tally.total_at_start = probe.total_count
            if order is None:
                chain: list[Read] = []
                self.read_everything(probe)
            elif probe.is_last and probe.page == 1:
                chain = [probe]  # One page in one answer: a consistent snapshot.
            elif order == Order.ASCENDING:
                chain = self.read_oldest_first(probe)
            else:
                chain = self.read_newest_first(probe)
            if order is not None and len(chain) > 1:
                # Repairs first, the newest end last: batches created while
                # the repairs read are then read too, in this run.
                for _ in range(MAX_ROUNDS):
                    if order == Order.DESCENDING:
                        self.repair(chain, order)
                    chain = self.read_new_head(chain, order)
                    if not any(not b.clean for b in self.boundaries(chain, order)):
                        break
        except BaseException:
            if self.writers is not None:
                self.writers.close(raise_error=False)  # The error in hand comes first.
                self.writers = None
            raise
        self.finish_reading()
        self.tally.total_at_end = self.latest_total
        self.raise_rejected()
        problems = [problem for problem in (reason, self.head_problem) if problem]
        if order is not None:
            verdict = completeness.verify(chain, order)
            problems += verdict.problems
            if verdict.suspicious:
                problems.append(
                    f"{len(verdict.suspicious)} page boundaries could not be proven joined "
                    "(batches moved while it read)"
                )
        if (
            self.latest_total is not None
            and len(self.seen) + len(self.rejected) < self.latest_total
        ):
            problems.append(
                f"{len(self.seen):,} batches read but Inkit reported {self.latest_total:,}"
            )
        if problems:
            sentence = self.tally.sentence(complete=False, gone=0, reason="; ".join(problems))
            self.run.note = " ".join([sentence, *self.notes])
            self.run.outcome = SyncRun.Outcome.UNVERIFIED
            self.save_listing()
            return
        self.run.complete = True
        self.run.outcome = SyncRun.Outcome.SUCCEEDED
        self.save_listing(verified_at=self.run.started_at)
        self.run.batches_gone = self.mark_unlisted_gone()
        self.run.note = " ".join(
            [self.tally.sentence(complete=True, gone=self.run.batches_gone), *self.notes]
        )

    # -- the order --

    def learn_order(self) -> tuple[Order | None, Read, str]:
        """Read page 1 and learn from its items which way the listing runs;
        when it runs newest first, try the opposite sort, which may run
        oldest first (the order whose reading nothing can slip past).
        Returns (order, the page-1 read to start from, why not verifiable)."""
        first = self.read(1)
        seen = first.seen
        remembered = self.listing.order
        if seen == completeness.Seen.ASCENDING:
            return self.learned(Order.ASCENDING, first)
        if seen == completeness.Seen.AMBIGUOUS:
            if first.is_last:  # A single page in one answer: any order will do.
                return self.learned(Order(remembered or Order.DESCENDING), first)
            if remembered:
                return self.learned(Order(remembered), first)
        if seen in (completeness.Seen.DESCENDING, completeness.Seen.AMBIGUOUS):
            self.sort, asked = SORTS[self.sort], self.sort
            other = self.read(1)
            other_seen = other.seen
            if other_seen == completeness.Seen.ASCENDING:
                return self.learned(Order.ASCENDING, other)
            if seen == completeness.Seen.DESCENDING and other_seen != completeness.Seen.MIXED:
                self.sort = asked
                return self.learned(Order.DESCENDING, first)
            if other_seen == completeness.Seen.DESCENDING:
                return self.learned(Order.DESCENDING, other)
            return None, other, "the order of the listing could not be learned from its items"
        return None, first, "page 1 was not in created_at order with either sort"

    def learned(self, order: Order, probe: Read) -> tuple[Order, Read, str]:
        if (self.listing.sort, self.listing.order) != (self.sort, order.value):
            self.save_listing(sort=self.sort, order=order.value, learned_at=timezone.now())
        return order, probe, ""

    # -- reading --

    def read_oldest_first(self, probe: Read) -> list[Read]:
        """Segments of pages, each read from its top page down on its own
        thread; then each seam re-read from the top down until a re-read
        overlaps the lower segment's own read of that page."""
        segments = completeness.planned_segments(1, probe.page_count, self.concurrency)
        reads = self.read_segments(segments, Order.ASCENDING)
        chain = list(reads[-1])
        while chain and not chain[0].is_last:
            chain.pop(0)  # The top segment's look for the last page, as it moved.
        lower = list(reversed(reads[:-1]))
        for segment, first in zip(lower, self.first_rereads(lower), strict=True):
            chain += self.stitch(segment, Order.ASCENDING, first)
        return chain

    def read_newest_first(self, probe: Read) -> list[Read]:
        """The same forward from page 2 (page 1 is the probe), the last
        segment following the listing as it grows."""
        segments = completeness.planned_segments(2, probe.page_count, self.concurrency)
        reads = self.read_segments(segments, Order.DESCENDING)
        chain = [probe, *reads[0]] if reads else [probe]
        for segment, first in zip(reads[1:], self.first_rereads(reads[1:]), strict=True):
            chain += self.stitch(segment, Order.DESCENDING, first)
        if not chain[-1].is_last and not chain[-1].past_end:
            chain += self.follow_tail(chain[-1])
        return self.settle_tail(chain)

    def settle_tail(self, chain: list[Read]) -> list[Read]:
        """Newest first, batches deleted while the sweep read can leave its
        last read past the end (an empty page): drop it and read the last
        page as the listing now reports it, which must overlap the read
        before (bounded)."""
        if len(chain) < 2 or not chain[-1].past_end:
            return chain
        empties = []
        while len(chain) > 1 and chain[-1].past_end:
            empties.append(chain.pop())
        page_count = empties[0].page_count
        for _ in range(REPAIR_ATTEMPTS):
            last = self.read(max(page_count, 1))
            if last.overlaps(chain[-1]) and last.is_last:
                return [*chain, last]
            page_count = last.page_count
        return [*chain, *reversed(empties)]

    def read_segments(self, segments: list[list[int]], order: Order) -> list[list[Read]]:
        """Read each segment on its own thread, in the order's direction;
        pages are written on this thread as they arrive. Returns the reads
        of each segment, in reading order."""
        if not segments:
            return []
        # Bounded: readers wait for the writing, so memory stays flat.
        arrivals: Queue[tuple[int, _Fetched | None, BaseException | None]] = Queue(
            maxsize=max(2, len(segments))
        )
        results: list[list[Read]] = [[] for _ in segments]
        top = len(segments) - 1

        def work(index: int, pages: list[int]) -> None:
            try:
                for fetched in self.segment_pages(pages, order, last=index == top):
                    arrivals.put((index, fetched, None))
            except BaseException as error:
                arrivals.put((index, None, error))
            else:
                arrivals.put((index, None, None))

        threads = [
            threading.Thread(target=work, args=(n, pages), name=f"inkit-segment-{n}", daemon=True)
            for n, pages in enumerate(segments)
        ]
        for thread in threads:
            thread.start()
        running, error = len(threads), None
        try:
            while running:
                index, fetched, failed = arrivals.get()
                if fetched is None:
                    running -= 1
                    error = error or failed
                    if failed is not None:
                        self.stop_segments.set()
                    continue
                if error is None:
                    self.take(fetched)
                    results[index].append(fetched.read)
        finally:
            self.stop_segments.set()
            while any(thread.is_alive() for thread in threads):
                try:  # A reader may be waiting to hand over a page: take it.
                    arrivals.get(timeout=0.05)
                except Empty:
                    pass
            self.stop_segments.clear()
        if error is not None:
            raise error
        return results

    def segment_pages(self, pages: list[int], order: Order, *, last: bool) -> Iterable[_Fetched]:
        """The reads of one segment: oldest first from its top page down
        (the top segment first finds the listing's last page); newest
        first from its first page up."""
        if order == Order.ASCENDING:
            number = pages[-1]
            if last:
                for _ in range(MAX_HEAD_PAGES):
                    fetched = self.fetch_for_segment(number)
                    yield fetched
                    if fetched.read.is_last:
                        break
                    number = max(fetched.read.page_count, 1)
                number -= 1
            while number >= pages[0]:
                yield self.fetch_for_segment(number)
                number -= 1
        else:
            for number in pages:
                yield self.fetch_for_segment(number)

    def fetch_for_segment(self, number: int) -> _Fetched:
        if self.stop_segments.is_set():
            raise SyncStopped("another page failed")
        return self.fetch(number)

    def first_rereads(self, segments: list[list[Read]]) -> list[Read | None]:
        """The first re-read of every seam, all at once: each only has to
        come after the segments' reads, which have all ended; written here
        in order."""
        pages = [segment[0].page if segment else None for segment in segments]
        wanted = [page for page in pages if page is not None]
        if not wanted:
            return [None] * len(pages)
        with ThreadPoolExecutor(min(self.concurrency, len(wanted)), thread_name_prefix="inkit-seam") as pool:
            fetched = iter(list(pool.map(self.fetch, wanted)))
        firsts: list[Read | None] = []
        for page in pages:
            if page is None:
                firsts.append(None)
                continue
            one = next(fetched)
            self.take(one)
            firsts.append(one.read)
        return firsts

    def stitch(self, segment: list[Read], order: Order, first: Read | None = None) -> list[Read]:
        """Join a segment to the chain read so far: re-read its pages from
        its first (in reading order; `first` when already re-read), one by
        one now that the previous segment has ended, until a re-read
        overlaps the segment's own read of that page; the rest of the
        segment's reads then follow."""
        own = {read.page: n for n, read in enumerate(segment)}
        joined: list[Read] = []
        number = segment[0].page if segment else None
        while number is not None and number in own:
            again, first = first or self.read(number), None
            joined.append(again)
            original = segment[own[number]]
            if again.overlaps(original):
                return joined + segment[own[number] :]
            number = completeness.next_towards_oldest(order, number)
        return joined

    def follow_tail(self, last: Read) -> list[Read]:
        """Newest first, the oldest end moves on as batches are created:
        read on until a page is the last one."""
        reads: list[Read] = []
        number = last.page
        for _ in range(MAX_TAIL_PAGES):
            number += 1
            read = self.read(number)
            reads.append(read)
            if read.is_last or read.past_end:
                break
        return reads

    def read_everything(self, probe: Read) -> None:
        """Unknown order: read every page anyway (written as read), prove nothing."""
        number = probe.page
        while number < probe.page_count:
            number += 1
            read = self.read(number)
            if read.is_last or not read.count:
                break

    def read_new_head(self, chain: list[Read], order: Order) -> list[Read]:
        """Rounds at the newest end: read from it towards the oldest until
        meeting the chain read so far, again while a round finds batches
        created meanwhile (bounded: MAX_ROUNDS)."""
        for _ in range(MAX_ROUNDS):
            head = chain[0]
            reads, found = self.head_round(head, order)
            self.tally.created_while_reading += found
            if not reads:
                self.head_problem = f"the newest end did not settle within {MAX_HEAD_PAGES} pages"
                return chain
            # Meeting the chain joins the round to it; otherwise the round
            # went end to end and is a chain by itself.
            chain = reads + chain if reads[-1].overlaps(head) else reads
            if not found:
                return chain
            self.tally.rounds += 1
        self.head_problem = f"batches were still being created after {MAX_ROUNDS} rounds"
        return chain

    def head_round(self, head: Read, order: Order) -> tuple[list[Read], int]:
        reads: list[Read] = []
        found = 0
        number = self.latest_page_count() if order == Order.ASCENDING else 1
        for _ in range(MAX_HEAD_PAGES):
            fetched = self.fetch(number)
            found += self.take(fetched)
            read = fetched.read
            if order == Order.ASCENDING and not reads and not read.is_last:
                number = max(read.page_count, 1)  # Not the last page any more: go there.
                continue
            reads.append(read)
            if read.overlaps(head):
                return reads, found
            if order == Order.ASCENDING and read.page == 1:
                return reads, found
            if order == Order.DESCENDING and read.is_last:
                return reads, found
            number = completeness.next_towards_oldest(order, number)
        return [], found

    @staticmethod
    def boundaries(chain: list[Read], order: Order) -> list[completeness.Boundary]:
        return [completeness.classify(a, b, order) for a, b in itertools.pairwise(chain)]

    def latest_page_count(self) -> int:
        total = self.latest_total or 0
        return max(1, -(-total // self.page_size))

    def repair(self, chain: list[Read], order: Order) -> None:
        """Newest first, a boundary where batches may have slipped past (no
        overlap, and the total dropped): re-read until one answer holds a
        batch from each side, which holds everything between them."""
        index = 0
        while index < len(chain) - 1:
            boundary = completeness.classify(chain[index], chain[index + 1], order)
            if boundary.clean or boundary.out_of_order:
                index += 1
                continue
            self.tally.boundaries_rechecked += 1
            spanning = self.find_spanning(boundary, order)
            if spanning is not None:
                chain.insert(index + 1, spanning)
            index += 1

    def find_spanning(self, boundary: completeness.Boundary, order: Order) -> Read | None:
        """A read holding a batch from each side of the boundary. When the
        older side was read, its first batch stood at the start of its page
        and whatever slipped past (at most the gap bound) just before it:
        one page spanning those positions, with some slack for further
        shifts, holds both sides; each miss re-aims from where the batches
        stand now."""
        newer, older = boundary.newer, boundary.older
        gap = boundary.gap_bound if boundary.gap_bound is not None else older.size
        high = (older.page - 1) * older.size
        low = high - gap - 1
        for _ in range(REPAIR_ATTEMPTS):
            place = completeness.window(max(0, low - REPAIR_SLACK), high + REPAIR_SLACK, older.size)
            if place is None:
                return None
            read = self.read(*place)
            if completeness.between(read, newer, older, order) is not None:
                return read
            positions = [completeness.position_of(read, i) for i in read.ids if i in older.id_set]
            if positions:
                high = min(positions)
                low = high - gap - 1
                continue
            positions = [completeness.position_of(read, i) for i in read.ids if i in newer.id_set]
            if not positions:
                return None
            low = max(positions)
            high = low + gap + 1
        return None

    # -- gone --

    def mark_unlisted_gone(self) -> int:
        """Ask Inkit about each present batch a verified listing lacked, and
        mark gone those it no longer has."""
        missing = unlisted(self.seen)
        if not missing:
            return 0
        present = Batch.objects.present().count()
        if len(missing) > max(GONE_CONFIRMATIONS, present * MASS_GONE_SHARE):
            self.note(
                f"{len(missing):,} of {present:,} stored batches were not listed: too many to "
                "believe at once, so none was marked gone."
            )
            return 0
        candidates = missing[:GONE_CONFIRMATIONS]
        try:
            answers = self.get_batches(candidates)
        except InkitError as error:
            self.note(
                f"No batch was marked gone: confirming with Inkit failed ({describe(error)})."
            )
            return 0
        found = sum(1 for batch in answers.values() if batch is not None)
        if found:
            self.note(
                f"{found} batches missing from the listing were still in Inkit and were "
                "written, not marked gone."
            )
        if len(missing) > GONE_CONFIRMATIONS:
            self.note(
                f"{len(missing) - GONE_CONFIRMATIONS} more unlisted batches are left for the "
                f"next sweeps to confirm gone ({GONE_CONFIRMATIONS} a sweep)."
            )
        gone = [batch_id for batch_id, batch in answers.items() if batch is None]
        marked = mark_gone(gone, timezone.now())
        self.wrote = self.wrote or marked > 0
        return marked


# The quick sync ------------------------------------------------------------------


class QuickSync(_Run):
    """New batches from the newest end, then the batches in flight."""

    def quick(self) -> None:
        order = Order(self.listing.order)
        self.sort = self.listing.sort
        reached_known = self.read_new(order)
        self.read_in_flight(order)
        self.read_stalest()
        self.finish_reading()
        self.raise_rejected()
        self.save_listing()
        sentence = (
            f"Read {self.tally.pages:,} pages and {self.gets:,} batches one by one "
            f"({self.extras} of them the In Progress batches read longest ago); "
            f"{self.run.batches_created:,} new, {self.run.batches_updated:,} changed"
        )
        if reached_known:
            self.run.outcome = SyncRun.Outcome.SUCCEEDED
            self.run.note = " ".join([sentence + ".", *self.notes])
        else:
            self.run.outcome = SyncRun.Outcome.UNVERIFIED
            self.run.note = " ".join(
                [
                    sentence + f"; the new batches did not end within {QUICK_NEW_PAGES} pages, "
                    "so the next full sweep reads the rest.",
                    *self.notes,
                ]
            )

    def read_new(self, order: Order) -> bool:
        """From the newest end towards the oldest until a page holds a batch
        stored before this run: every batch created since is then read."""
        total = self.listing.total_count or 0
        number = max(1, -(-total // self.page_size)) if order == Order.ASCENDING else 1
        found_head = order == Order.DESCENDING
        for _ in range(QUICK_NEW_PAGES + MAX_HEAD_PAGES):
            fetched = self.fetch(number)
            read = fetched.read
            if not found_head and not read.is_last:
                self.take(fetched)
                number = max(read.page_count, 1)
                continue
            found_head = True
            self.last_known = set()
            self.take(fetched)
            if self.last_known or not read.count:
                return True
            if (order == Order.ASCENDING and read.page == 1) or (
                order == Order.DESCENDING and read.is_last
            ):
                return True
            if self.tally.pages >= QUICK_NEW_PAGES:
                return False
            number = completeness.next_towards_oldest(order, number)
        return False

    def write_now(self, items: list[BatchData], read_at: datetime) -> UpsertResult:
        result = super().write_now(items, read_at)
        self.last_known = result.known
        return result

    def read_in_flight(self, order: Order) -> None:
        """The in-flight batches not read yet: a page when it holds two or
        more of them (positions from the count of newer stored batches), one
        GET each otherwise, and for any not found where expected."""
        now = timezone.now()
        flying = [
            (batch_id, created)
            for batch_id, created in Batch.objects.in_flight(now).values_list("id", "created_at")
            if batch_id not in self.seen
        ]
        if not flying:
            return
        total = self.latest_total or self.listing.total_count or 0
        # Positions only for the recent ones (a day of batches to count);
        # an old batch seen progressing lately is fetched by itself.
        recent = now - timedelta(hours=IN_FLIGHT_HOURS)
        newest_first = list(
            Batch.objects.present()
            .filter(created_at__gte=recent)
            .order_by("-created_at", "-id")
            .values_list("id", flat=True)
        )
        rank = {batch_id: n for n, batch_id in enumerate(newest_first)}
        by_page: dict[int, list[str]] = defaultdict(list)
        singles: list[str] = []
        for batch_id, _ in flying:
            position = rank.get(batch_id)
            if position is None:
                singles.append(batch_id)
                continue
            if order == Order.ASCENDING:
                position = total - 1 - position
            if position < 0:
                singles.append(batch_id)
                continue
            by_page[position // self.page_size + 1].append(batch_id)
        for number, ids in sorted(by_page.items()):
            if len(ids) < 2:
                singles.extend(ids)
                continue
            fetched = self.fetch(number)
            self.take(fetched)
            on_page = {item.id for item in fetched.page.items}
            singles.extend(batch_id for batch_id in ids if batch_id not in on_page)
        self.get_each([batch_id for batch_id in singles if batch_id not in self.seen])

    def read_stalest(self) -> None:
        """A fixed few other In Progress batches, those read longest ago, so
        stalled ones are re-read between sweeps too. Always the same number,
        so a quick sync's cost depends on activity alone (the budget paces
        them like any request)."""
        stalest = [
            batch_id
            for batch_id in Batch.objects.present()
            .in_progress()
            .order_by(F("checked_at").asc(nulls_first=True), "id")
            .values_list("id", flat=True)[: QUICK_EXTRA + len(self.seen)]
            if batch_id not in self.seen
        ][:QUICK_EXTRA]
        self.extras = len(stalest)
        self.get_each(stalest)

    def get_each(self, batch_ids: list[str]) -> None:
        if not batch_ids:
            return
        answers = self.get_batches(batch_ids)
        self.gets += len(batch_ids)
        missing = sum(1 for batch in answers.values() if batch is None)
        if missing:
            self.note(
                f"{missing} batches were not found in Inkit; the next full sweep checks them."
            )


# Running one -------------------------------------------------------------------------


def copy_stats(run: SyncRun, client: InkitClient) -> None:
    """The client's figures since the run began (a client may serve several
    runs: the tests')."""
    stats = client.stats
    base = getattr(client, "stats_at_start", {}).get(run.pk, (0, 0, {}))
    run.api_requests = stats.requests - base[0]
    run.api_retries = stats.retries - base[1]
    run.api_responses = {
        status: count - base[2].get(status, 0)
        for status, count in stats.responses.items()
        if count - base[2].get(status, 0)
    }


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
        pool_size=max(settings.SYNC_CONCURRENCY, 4),
        sleep=partial(wait_unless_stopping, deadline),
    )


def wait_unless_stopping(deadline: float, seconds: float) -> None:
    """The client's wait between retries (and the budget's): cut short when
    the worker shuts down (a backoff must not outlast the platform's grace
    period), and refused when it would end past the sync's time limit."""
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


def _gate(
    client: InkitClient,
    budget: budgets.Budget,
    *,
    sweep: bool,
    deadline: float,
    heartbeat: Heartbeat,
):
    """Put the budget in front of every request the client makes."""

    def keep_going(seconds: float) -> None:
        if heartbeat.lost.is_set():
            raise SyncLockLost("lost the sync lock while waiting for the request budget")
        wait_unless_stopping(deadline, seconds)

    client.before_request = lambda: budget.wait(sweep=sweep, keep_going=keep_going)
    client.on_rate_limited = budget.refused
    client.budget = budget


def sync_all(
    *,
    kind: str = SyncRun.Kind.FULL,
    trigger: str = SyncRun.Trigger.SCHEDULE,
    client: InkitClient | None = None,
    concurrency: int | None = None,
    writers: int | None = None,
    progress: Callable[[SyncRun], None] | None = None,
) -> SyncRun:
    """Run one full sweep (the default) or quick sync; return the SyncRun.

    Never raises for a failed run: the outcome and error are on the run.
    Never two runs of one kind at once (a run that finds one running is
    recorded as skipped); a quick sync may run during a sweep. A quick sync
    without a learned listing runs as a full sweep and says so.
    """
    listing = SyncListing.load()
    notes: list[str] = []
    if kind == SyncRun.Kind.QUICK and not listing.ready_for_quick_syncs:
        kind = SyncRun.Kind.FULL
        notes.append(
            "No full sweep had verified the listing yet, so this quick sync ran as a full sweep."
        )
    run = SyncRun.objects.create(trigger=trigger, kind=kind)
    acquired, expired_holder = SyncLock.acquire(run, settings.SYNC_LOCK_SECONDS)
    if not acquired:
        run.outcome = SyncRun.Outcome.SKIPPED
        run.note = f"Another {run.get_kind_display().lower()} (#{SyncLock.current_holder(run.lock_name)}) was running."
        run.finished_at = timezone.now()
        run.save()
        log.info("sync #%s skipped: another %s is running", run.pk, run.get_kind_display().lower())
        return run
    if expired_holder:
        SyncRun.objects.filter(pk=expired_holder, outcome=SyncRun.Outcome.RUNNING).update(
            outcome=SyncRun.Outcome.FAILED,
            finished_at=timezone.now(),
            error="The worker stopped without finishing (its lock expired).",
        )

    # Celery's threads pool cannot stop a task at its time limit, so the sync
    # keeps its own: checked between pages and before every wait.
    deadline = time.monotonic() + settings.SYNC_TIME_LIMIT_SECONDS
    heartbeat = Heartbeat(run, threaded=not connection.in_atomic_block)
    heartbeat.start()
    owns_client = client is None
    work: _Run | None = None
    try:
        client = client or build_client(deadline)
        starts = getattr(client, "stats_at_start", {})
        starts[run.pk] = (client.stats.requests, client.stats.retries, dict(client.stats.responses))
        client.stats_at_start = starts
        _gate(
            client,
            budgets.from_settings(),
            sweep=kind == SyncRun.Kind.FULL,
            deadline=deadline,
            heartbeat=heartbeat,
        )
        options = dict(
            concurrency=concurrency or settings.SYNC_CONCURRENCY,
            writers=_writers(writers) if kind == SyncRun.Kind.FULL else 1,
            deadline=deadline,
            progress=progress,
            heartbeat=heartbeat,
            listing=listing,
        )
        if kind == SyncRun.Kind.FULL:
            work = FullSweep(run, client, **options)
            work.sweep()
        else:
            work = QuickSync(run, client, **options)
            work.quick()
    except BaseException as error:
        run.outcome = SyncRun.Outcome.FAILED
        run.error = describe(error)
        if not isinstance(error, (InkitError, SyncError)):
            log.exception("sync #%s failed unexpectedly", run.pk)
        if not isinstance(error, Exception):
            heartbeat.stop()
            _finish(run, client, wrote=work is not None and work.wrote, notes=notes)
            raise  # Interrupted: recorded, then let it stop.
    heartbeat.stop()
    _finish(run, client, wrote=work is not None and work.wrote, notes=notes)
    if owns_client and client is not None:
        client.close()
    handoff(run)
    return run


def _writers(asked: int | None) -> int:
    """How many threads write pages. SQLite takes one writer at a time, so
    more would only wait; inside a transaction (a test's, say) other threads'
    connections could neither see its rows nor be rolled back with it."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return 1
    return asked or settings.SYNC_WRITERS


def _finish(run: SyncRun, client: InkitClient | None, *, wrote: bool, notes: list[str]) -> None:
    run.finished_at = timezone.now()
    if notes:
        run.note = " ".join([*notes, run.note]).strip()
    if client is not None:
        copy_stats(run, client)
    # The summary strip is computed here, once per run that changed something.
    if wrote or not SyncRun.objects.filter(summary__isnull=False).exists():
        run.summary = Batch.objects.summary()
    run.save()
    SyncLock.release(run)
    log.info("%s", summary_line(run))


def handoff(run: SyncRun) -> None:
    """After a run, stuck evaluation and alert delivery are their own task's
    (the minutely check_stuck catches up if the broker cannot take it)."""
    from ..tasks import queue_evaluation  # The tasks module imports this one.

    queue_evaluation(run)


def summary_line(run: SyncRun) -> str:
    """The one-line account of a run that the log and the command print."""
    seconds = run.duration.total_seconds() if run.duration else 0.0
    head = f"sync #{run.pk} {run.outcome} in {seconds:.1f}s"
    if run.outcome == SyncRun.Outcome.SKIPPED:
        return f"{head}: {run.note}"
    line = (
        f"{head}: {run.pages_done} of {run.page_count or 0} pages ({run.pages_fetched} reads), "
        f"{run.batches_seen} batches ({run.batches_created} new, {run.batches_updated} changed, "
        f"{run.batches_unchanged} unchanged, {run.batches_gone} gone), "
        f"{run.api_requests} API requests, {run.api_retries} retries, "
        f"{run.get_kind_display().lower()}"
    )
    if run.error:
        line += f"; error: {run.error}"
    elif run.note:
        line += f"; note: {run.note}"
    return line
