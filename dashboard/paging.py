"""Paging over a capped count: the list never counts a large table in full."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

# The list counts matching batches up to this many, and pages no further:
# past it, narrowing the filters, sorting or the CSV export is the way on.
# A capped count costs about cap / page size times the page's own query
# (it must find cap + 1 matches): at a million batches on two cores,
# counting to 10,000 took 20 to 140 ms for broad filters, 1,000 up to 30 ms,
# 500 keeps every view inside its 50 ms (bench/dashboard_bench.py). The
# summary strip's live stuck count uses the same cap.
COUNT_CAP = 500


@dataclass(frozen=True)
class CappedPage:
    """Where one page sits in a result counted up to a cap."""

    number: int
    size: int
    found: int  # matching rows, counted up to cap + 1
    cap: int = COUNT_CAP

    @classmethod
    def clamp(cls, requested: int, size: int, found: int, cap: int = COUNT_CAP) -> CappedPage:
        """The requested page, or the last one if it lies past the end."""
        page = cls(1, size, found, cap)
        return cls(min(max(requested, 1), page.count), size, found, cap)

    @property
    def capped(self) -> bool:
        """True when more rows match than were counted ("10,000+")."""
        return self.found > self.cap

    @property
    def reachable(self) -> int:
        """Rows that paging can reach."""
        return min(self.found, self.cap)

    @property
    def count(self) -> int:
        """Pages that paging can reach; at least one, even when empty."""
        return max(1, -(-self.reachable // self.size))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def first_row(self) -> int:
        """1-based number of the first row shown (0 when there are none)."""
        return self.offset + 1 if self.reachable else 0

    @property
    def last_row(self) -> int:
        return min(self.offset + self.size, self.reachable)

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.count

    def nearby(self, each_side: int = 2) -> list[int | None]:
        """Page numbers to offer: the first, the last and a few around this
        one, None where numbers are left out."""
        wanted = {1, self.count, *range(self.number - each_side, self.number + each_side + 1)}
        numbers = sorted(n for n in wanted if 1 <= n <= self.count)
        shown: list[int | None] = []
        for n in numbers:
            if shown and n - shown[-1] > 1:
                shown.append(None)
            shown.append(n)
        return shown


def fetch_page(batches: QuerySet, requested: int, size: int, cap: int = COUNT_CAP) -> tuple[CappedPage, list]:
    """The requested page's rows and where the page sits. A first page that
    is not full is the whole result, so it needs no count at all (a search
    for one batch is then a single query); otherwise the count is capped."""
    if requested <= 1:
        rows = list(batches[:size])
        found = len(rows) if len(rows) < size else max(len(rows), batches.capped_count(cap))
        return CappedPage(1, size, found, cap), rows
    page = CappedPage.clamp(requested, size, batches.capped_count(cap), cap)
    return page, list(batches[page.offset : page.last_row])
