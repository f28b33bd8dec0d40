"""Whether a listing read page by page is complete: pure logic, no HTTP, no
database. The README's "How the sync works" explains it; in short:

Inkit pages List Batches by offset (page, page_size) in created_at order,
while batches are created (always at the newest end) and sometimes deleted
(anywhere). One page as served is a consistent snapshot of a stretch of the
listing: every batch that exists at that moment between its newest and its
oldest item is on it. So a set of reads covers the listing when the
stretches join up from the newest end to the oldest, and two neighbouring
stretches join up ("the boundary is clean") when

- they share a batch (an overlap), whatever their order; or
- oldest first (ascending), they are neighbouring pages and the upper
  (newer) one was served first: creations land above every boundary and a
  deletion below it only pulls batches down into the page still to read,
  so nothing can slip past (at worst a batch is read twice); or
- newest first (descending), they are neighbouring pages, the lower (newer)
  one was served first and total_count did not drop between them: a gap
  there means more deletions than creations below the boundary, and then
  the total drops by at least the gap.

A boundary that is none of these is suspicious, with a bound on the gap
where one is known (the drop in total_count). `verify()` checks a chain of
reads from the newest end to the oldest; the orchestration (runs.py) builds
the chain and repairs suspicious boundaries with more reads.

Ties on equal created_at are never compared by key: batches are identified
by id, and order only by where they appear.
"""

from __future__ import annotations

import itertools
import threading
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from ..inkit import Page


class Order(StrEnum):
    ASCENDING = "ascending"  # oldest first at page 1: read from the last page back
    DESCENDING = "descending"  # newest first at page 1: read forward


class Seen(StrEnum):
    """The order one page's items show."""

    ASCENDING = "ascending"
    DESCENDING = "descending"
    AMBIGUOUS = "ambiguous"  # fewer than two distinct created_at values
    MIXED = "mixed"  # neither


def seen_order(created: Sequence[datetime]) -> Seen:
    """The order a page's created_at values are in (equal neighbours are
    ties, allowed in either order)."""
    up = any(b > a for a, b in itertools.pairwise(created))
    down = any(b < a for a, b in itertools.pairwise(created))
    if up and down:
        return Seen.MIXED
    if up:
        return Seen.ASCENDING
    if down:
        return Seen.DESCENDING
    return Seen.AMBIGUOUS


class Clock:
    """Ticks for telling which of two requests was served first: A was
    served before B if A's answer arrived before B's request went out."""

    def __init__(self) -> None:
        self._ticks = itertools.count(1)
        self._lock = threading.Lock()

    def tick(self) -> int:
        with self._lock:
            return next(self._ticks)


# A read keeps the ids at each end of its page, this many each side: what
# overlaps with a neighbouring page or a re-read of the same page shifted by
# fewer batches than this. A shift of more (a burst of creations or
# deletions mid-read) only costs more re-reads: an overlap is a sufficient
# proof, never a necessary one. So a sweep's memory stays flat.
EDGE = 12


class Read:
    """One page as served, as far as completeness is concerned."""

    __slots__ = (
        "_index",
        "count",
        "first_created",
        "ids",
        "last_created",
        "page",
        "page_count",
        "received",
        "seen",
        "sent",
        "size",
        "total_count",
    )

    def __init__(
        self,
        page: int,
        size: int,
        page_count: int,
        total_count: int | None,
        ids: Sequence[str],
        created: Sequence[datetime],
        sent: int = 0,
        received: int = 0,
    ):
        self.page = page  # the number asked for
        self.size = size  # the page size served
        self.page_count = page_count
        self.total_count = total_count
        self.count = len(ids)
        kept = (
            range(len(ids))
            if len(ids) <= 2 * EDGE
            else [*range(EDGE), *range(len(ids) - EDGE, len(ids))]
        )
        self.ids = tuple(ids[i] for i in kept)
        self._index = {ids[i]: i for i in kept}
        self.first_created = created[0] if created else None
        self.last_created = created[-1] if created else None
        self.seen = seen_order(created)
        self.sent = sent  # Clock ticks
        self.received = received

    @classmethod
    def of(cls, page: Page, asked: int, sent: int = 0, received: int = 0) -> Read:
        return cls(
            page=asked,
            size=page.page_size,
            page_count=page.page_count,
            total_count=page.total_count,
            ids=[item.id for item in page.items],
            created=[item.created_at for item in page.items],
            sent=sent,
            received=received,
        )

    def __repr__(self) -> str:
        return f"Read(page={self.page}, size={self.size}, count={self.count}, sent={self.sent})"

    @property
    def is_last(self) -> bool:
        """The last page when it was served (an empty listing's page 1 too)."""
        return self.page == max(self.page_count, 1)

    @property
    def past_end(self) -> bool:
        return self.page > max(self.page_count, 1)

    def served_before(self, other: Read) -> bool:
        return self.received < other.sent

    @property
    def id_set(self):
        """The ids kept, as a set-like view."""
        return self._index.keys()

    def overlaps(self, other: Read) -> bool:
        return not self._index.keys().isdisjoint(other._index.keys())

    def index_of(self, batch_id: str) -> int | None:
        return self._index.get(batch_id)

    def newest_end(self, order: Order) -> datetime | None:
        return self.last_created if order == Order.ASCENDING else self.first_created

    def oldest_end(self, order: Order) -> datetime | None:
        return self.first_created if order == Order.ASCENDING else self.last_created


def next_towards_oldest(order: Order, page: int) -> int:
    """The page after `page` in the reading direction (towards page 1 when
    oldest first, forward when newest first)."""
    return page - 1 if order == Order.ASCENDING else page + 1


@dataclass(frozen=True)
class Boundary:
    newer: Read
    older: Read
    clean: bool
    # For a suspicious boundary: at most this many batches may be missing
    # (None: no bound known).
    gap_bound: int | None = None
    # A clean boundary whose pages do not abut in order: the server does
    # not behave as modelled.
    out_of_order: bool = False


def classify(newer: Read, older: Read, order: Order) -> Boundary:
    """Whether nothing can hide between two reads of neighbouring stretches
    of the listing (see the module docstring)."""
    if newer.overlaps(older):
        return Boundary(newer, older, clean=True)
    out_of_order = _ends_cross(newer, older, order)
    if order == Order.ASCENDING:
        neighbours = newer.page == older.page + 1 and newer.size == older.size
        if neighbours and newer.served_before(older):
            return Boundary(newer, older, clean=True, out_of_order=out_of_order)
        return Boundary(newer, older, clean=False, out_of_order=out_of_order)
    neighbours = older.page == newer.page + 1 and newer.size == older.size
    if neighbours and newer.served_before(older):
        if newer.total_count is None or older.total_count is None:
            return Boundary(newer, older, clean=False, out_of_order=out_of_order)
        dropped = newer.total_count - older.total_count
        if dropped <= 0:
            return Boundary(newer, older, clean=True, out_of_order=out_of_order)
        return Boundary(newer, older, clean=False, gap_bound=dropped, out_of_order=out_of_order)
    return Boundary(newer, older, clean=False, out_of_order=out_of_order)


def _ends_cross(newer: Read, older: Read, order: Order) -> bool:
    low, high = newer.oldest_end(order), older.newest_end(order)
    return low is not None and high is not None and low < high


@dataclass
class Verdict:
    """What verify() found about a chain of reads."""

    problems: list[str] = field(default_factory=list)  # the server did not behave as modelled
    suspicious: list[Boundary] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems and not self.suspicious


def verify(chain: Sequence[Read], order: Order) -> Verdict:
    """Whether the reads, from the newest end of the listing to the oldest,
    cover it: its ends are the listing's ends, no page is out of order, and
    every boundary is clean."""
    verdict = Verdict()
    if not chain:
        verdict.problems.append("nothing was read")
        return verdict
    head, tail = chain[0], chain[-1]
    newest_end_read = head.is_last if order == Order.ASCENDING else head.page == 1
    oldest_end_read = tail.page == 1 if order == Order.ASCENDING else tail.is_last
    if not newest_end_read:
        verdict.problems.append("the newest end of the listing was not read")
    if not oldest_end_read:
        verdict.problems.append("the oldest end of the listing was not read")
    for read in chain:
        problem = page_problem(read, order)
        if problem:
            verdict.problems.append(problem)
    for newer, older in itertools.pairwise(chain):
        boundary = classify(newer, older, order)
        if boundary.out_of_order:
            verdict.problems.append(f"pages {newer.page} and {older.page} do not follow in order")
        elif not boundary.clean:
            verdict.suspicious.append(boundary)
    return verdict


def page_problem(read: Read, order: Order) -> str | None:
    """Why one page cannot be part of a verified listing, if it cannot."""
    seen = read.seen
    if seen == Seen.MIXED or seen not in (Seen.AMBIGUOUS, Seen(order.value)):
        return f"page {read.page} was not in created_at order"
    if not read.count and read.page < read.page_count:
        return f"page {read.page} of {read.page_count} was empty"
    return None


def window(low: int, high: int, max_size: int) -> tuple[int, int] | None:
    """A (page, page_size) whose one page holds positions low..high
    (0-based, inclusive) with page_size at most max_size, or None."""
    if low < 0 or high < low:
        return None
    for size in range(max_size, high - low, -1):
        if low // size == high // size:
            return low // size + 1, size
    return None


def position_of(read: Read, batch_id: str) -> int | None:
    """Where a batch stood in the listing when the read was served."""
    index = read.index_of(batch_id)
    return None if index is None else (read.page - 1) * read.size + index


def between(read: Read, newer: Read, older: Read, order: Order) -> list[str] | None:
    """When `read` holds a batch of each side of a boundary (then everything
    between them is on it, and was written with it): the ids it kept from
    between them; None when it does not span the boundary."""
    at = read._index
    newer_at = [at[batch_id] for batch_id in read.ids if batch_id in newer.id_set]
    older_at = [at[batch_id] for batch_id in read.ids if batch_id in older.id_set]
    if not newer_at or not older_at:
        return None
    if order == Order.ASCENDING:
        low, high = max(older_at), min(newer_at)
    else:
        low, high = max(newer_at), min(older_at)
    if low >= high:
        return None
    return [batch_id for batch_id in read.ids if low < at[batch_id] < high]


def planned_segments(first: int, last: int, count: int) -> list[list[int]]:
    """Pages first..last cut into at most `count` contiguous runs of
    nearly equal length, lowest pages first."""
    pages = list(range(first, last + 1))
    if not pages:
        return []
    count = max(1, min(count, len(pages)))
    size, extra = divmod(len(pages), count)
    runs, start = [], 0
    for n in range(count):
        end = start + size + (1 if n < extra else 0)
        runs.append(pages[start:end])
        start = end
    return runs


@dataclass
class Tally:
    """Counts for the run's note."""

    pages: int = 0
    rounds: int = 1
    boundaries_rechecked: int = 0
    created_while_reading: int = 0
    total_at_start: int | None = None
    total_at_end: int | None = None

    def sentence(self, *, complete: bool, gone: int, reason: str = "") -> str:
        """One readable sentence: what was read and whether it is complete."""
        parts = [f"Read {self.pages:,} page{'s' if self.pages != 1 else ''}"]
        if self.rounds > 1:
            parts[0] += f" in {self.rounds} rounds"
        if self.created_while_reading:
            parts.append(f"{self.created_while_reading:,} batches created while it read")
        if self.total_at_start is not None and self.total_at_end is not None:
            deleted = self.total_at_start + self.created_while_reading - self.total_at_end
            if deleted > 0:
                parts.append(f"about {deleted:,} deleted while it read")
        if self.boundaries_rechecked:
            plural = "ies" if self.boundaries_rechecked != 1 else "y"
            parts.append(f"{self.boundaries_rechecked} page boundar{plural} re-checked")
        if gone:
            parts.append(f"{gone:,} gone")
        end = "complete." if complete else f"completeness not verified: {reason}."
        return "; ".join(parts) + "; " + end


class SeenBatches:
    """The batches a run has read, by a 64-bit hash of the id: exact
    membership in flat memory. The newest are in a set; every RECENT of
    them are merged into a sorted array (8 bytes a batch: a million take
    8 MB), searched by bisection."""

    RECENT = 20_000

    def __init__(self) -> None:
        self._recent: set[int] = set()
        self._sorted = array("q")

    def add(self, batch_id: str) -> bool:
        """Note the batch; False when this run read it already."""
        key = hash(batch_id)
        if key in self._recent or self._in_sorted(key):
            return False
        self._recent.add(key)
        if len(self._recent) >= self.RECENT:
            self.freeze()
        return True

    def freeze(self) -> None:
        """Merge the recent ones into the sorted array."""
        if self._recent:
            self._sorted = array("q", sorted(itertools.chain(self._sorted, self._recent)))
            self._recent = set()

    def _in_sorted(self, key: int) -> bool:
        position = bisect_left(self._sorted, key)
        return position < len(self._sorted) and self._sorted[position] == key

    def __contains__(self, batch_id: object) -> bool:
        key = hash(batch_id)
        return key in self._recent or self._in_sorted(key)

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)
