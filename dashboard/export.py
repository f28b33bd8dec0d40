"""The CSV export: every batch of a filtered, sorted set, one row each with
per-destination columns (from the raw item, as the list shows them),
produced lazily so memory stays flat."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime

from django.utils import timezone

from batches.models import Batch, BatchDestination, BatchQuerySet

from .rows import destinations_of

# Rows fetched per database round trip.
CHUNK_SIZE = 2000
BATCH_COLUMNS = [
    "id",
    "name",
    "status",
    "total",
    "count",
    "completed",
    "failed",
    "in_progress",
    "created_at",
    "first_seen_at",
    "last_progress_at",
    "stuck",
    "gone_at",
]
DESTINATION_COLUMNS = ["count", "completed", "failed", "in_progress", "status"]
# A spreadsheet runs a cell starting with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> object:
    """Text a spreadsheet would run as a formula, prefixed with ' so it is
    shown as text. Batch names and ids come from the API: never trusted."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _Line:
    """A file-like object that hands back what csv.writer writes to it."""

    def write(self, text: str) -> str:
        return text


def destination_names() -> list[str]:
    """Every destination name the database knows, for the export's columns."""
    return list(BatchDestination.objects.order_by("name").values_list("name", flat=True).distinct())


def csv_lines(
    batches: BatchQuerySet, destinations: list[str], now: datetime | None = None
) -> Iterator[str]:
    """The header, then one CSV line per batch, fetched CHUNK_SIZE at a time."""
    now = now or timezone.now()
    writer = csv.writer(_Line())
    header = BATCH_COLUMNS + [
        f"{name}_{column}" for name in destinations for column in DESTINATION_COLUMNS
    ]
    yield writer.writerow([neutralise(cell) for cell in header])
    for batch in batches.iterator(chunk_size=CHUNK_SIZE):
        yield writer.writerow([neutralise(cell) for cell in _row(batch, destinations, now)])


def _row(batch: Batch, destinations: list[str], now: datetime) -> list[object]:
    row: list[object] = [
        batch.id,
        batch.name or "",
        batch.status,
        batch.total,
        batch.count,
        batch.completed,
        batch.failed,
        batch.in_progress,
        _timestamp(batch.created_at),
        _timestamp(batch.first_seen_at),
        _timestamp(batch.last_progress_at),
        "yes" if batch.is_stuck(now) else "no",
        _timestamp(batch.gone_at),
    ]
    by_name = {dest["name"]: dest for dest in destinations_of(batch.raw)}
    for name in destinations:
        dest = by_name.get(name)
        if dest is None:
            row.extend([""] * len(DESTINATION_COLUMNS))
        else:
            row.extend(dest[column] if dest[column] is not None else "" for column in DESTINATION_COLUMNS)
    return row


def _timestamp(moment: datetime | None) -> str:
    """ISO 8601 in UTC, as Inkit writes them."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
