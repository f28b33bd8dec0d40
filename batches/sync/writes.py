"""The sync's database writes: a page of batches (or a few fetched one by
one) written so that an unchanged page costs one statement, and batches no
longer listed marked gone.

`upsert_batches` takes any list of batches, so a page that the database
refuses can later be written batch by batch to set the one bad batch aside
(issue 10's per-batch fallback) without changing anything else here.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import blake2b

from django.db import connection, transaction

from .. import trends
from ..inkit import BatchData, DestinationData
from ..models import Batch, BatchDestination, BatchEvent
from . import sql

GONE_CHUNK = 1000
DESTINATION_FIELDS = ["count", "completed", "failed", "in_progress", "status"]


@dataclass
class UpsertResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    # Not written: the database already held a newer read of them (a quick
    # sync and a full sweep read the same batch; the later read wins).
    stale: int = 0
    # checked_at moved on rows already stored (one statement a page).
    checked: int = 0
    # The ids that were stored before this write.
    known: set[str] = field(default_factory=set)

    def add(self, other: UpsertResult) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.stale += other.stale
        self.checked += other.checked
        self.known |= other.known


def fingerprint(raw: dict) -> tuple[str, int]:
    """An item's canonical JSON and a 64-bit digest of it: comparing digests
    tells an unchanged batch without reading its stored JSON back."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = blake2b(text.encode(), digest_size=8).digest()
    return text, int.from_bytes(digest, "big", signed=True)


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


def upsert_batches(
    items: Iterable[BatchData], now: datetime, read_at: datetime | None = None
) -> UpsertResult:
    """Write batches the API showed at `read_at` (default: now), touching
    only rows that changed, and never over a newer read.

    An unchanged page costs one statement (which also moves checked_at); a
    page with new or changed batches a few more, whatever its size.
    Progress (completed + failed grew, or the status changed) moves
    last_progress_at; every change of status or counts adds a BatchEvent.
    """
    read_at = read_at or now
    by_id = {item.id: item for item in items}  # The last copy wins within a list.
    result = UpsertResult()
    if not by_id:
        return result
    prints = {batch_id: fingerprint(item.raw) for batch_id, item in by_id.items()}
    stored = sql.touch_and_fingerprints(Batch, list(by_id), read_at)
    result.known = set(stored)
    result.checked = len(stored)
    changed_ids = []
    for batch_id, (digest, gone_at, checked_at) in stored.items():
        if checked_at is not None and checked_at > read_at:
            result.stale += 1  # A newer read is stored: leave it.
        elif digest != prints[batch_id][1] or gone_at is not None:
            changed_ids.append(batch_id)
        else:
            result.unchanged += 1
    new_ids = [batch_id for batch_id in by_id if batch_id not in stored]
    if not changed_ids and not new_ids:  # Unchanged: nothing more to write.
        return result

    with transaction.atomic():
        sql.relax_commit()
        old_batches: dict[str, dict] = {}
        old_destinations: dict[str, dict[str, dict]] = {batch_id: {} for batch_id in changed_ids}
        if changed_ids:
            old = Batch.objects.filter(pk__in=changed_ids)
            if sql.postgres():
                old = old.select_for_update()  # Held until this page is written.
            old_batches = {
                row["id"]: row
                for row in old.values(
                    "id",
                    "status",
                    "completed",
                    "failed",
                    "in_progress",
                    "first_seen_at",
                    "last_progress_at",
                    "gone_at",
                    "checked_at",
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
        for batch_id in new_ids:
            item = by_id[batch_id]
            raw_json, digest = prints[batch_id]
            result.created += 1
            batch_rows.append(_BatchRow(item, raw_json, digest, now, now, item.sums()))
            destination_rows.extend((item, dest) for dest in item.destinations)
        updated_ids: list[str] = []
        for batch_id in changed_ids:
            old = old_batches.get(batch_id)
            if old is None or (old["checked_at"] is not None and old["checked_at"] > read_at):
                result.stale += 1  # Gone from the table, or a newer read came first.
                continue
            updated_ids.append(batch_id)
            item = by_id[batch_id]
            raw_json, digest = prints[batch_id]
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

        if batch_rows:
            _write_batches(batch_rows, now, read_at, new=result.created == len(batch_rows))
        if removed_destinations:
            BatchDestination.objects.filter(pk__in=removed_destinations).delete()
        if destination_rows:
            _write_destinations(destination_rows, new=not result.updated)
        if events:
            BatchEvent.objects.bulk_create(events)
        # The trend rollups (batches/trends.py) from what this write saw: the
        # new batches, and each updated one with its destinations as stored
        # before; in this transaction, so a write that fails records nothing.
        trends.record_page(
            new=[by_id[batch_id] for batch_id in new_ids],
            changed=[(old_destinations[batch_id], by_id[batch_id]) for batch_id in updated_ids],
            now=now,
        )
    return result


_BATCH_COLUMNS = (
    "id",
    "name",
    "status",
    "total",
    "created_at",
    "count",
    "completed",
    "failed",
    "in_progress",
    "first_seen_at",
    "last_changed_at",
    "last_progress_at",
    "gone_at",
    "raw",
    "fingerprint",
    "checked_at",
)
_BATCH_UPDATED = tuple(c for c in _BATCH_COLUMNS if c not in ("id", "first_seen_at"))
_DESTINATION_COLUMNS = ("batch_id", "name", *DESTINATION_FIELDS, "batch_created_at")
_DESTINATION_UPDATED = (*DESTINATION_FIELDS, "batch_created_at")


def _write_batches(rows: list[_BatchRow], now: datetime, read_at: datetime, *, new: bool) -> None:
    copying = new and sql.postgres()
    adapt = (lambda value: value) if copying else connection.ops.adapt_datetimefield_value
    changed_at = adapt(now)
    checked_at = adapt(read_at)
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
            checked_at,
        )
        for row in rows
    ]
    if copying:
        sql.copy_rows(Batch, _BATCH_COLUMNS, values)
    else:
        # The rows to update were locked and checked against newer reads
        # above; the guard keeps that true on SQLite's serialised writers too.
        sql.upsert(
            Batch,
            _BATCH_COLUMNS,
            ("id",),
            _BATCH_UPDATED,
            values,
            json_columns=("raw",),
            newer_than="checked_at",
        )


def _write_destinations(rows: list[tuple[BatchData, DestinationData]], *, new: bool) -> None:
    copying = new and sql.postgres()
    adapt = (lambda value: value) if copying else connection.ops.adapt_datetimefield_value
    values = [
        (b.id, d.name, d.count, d.completed, d.failed, d.in_progress, d.status, adapt(b.created_at))
        for b, d in rows
    ]
    if copying:
        sql.copy_rows(BatchDestination, _DESTINATION_COLUMNS, values)
    else:
        conflict = ("batch_id", "name")
        sql.upsert(BatchDestination, _DESTINATION_COLUMNS, conflict, _DESTINATION_UPDATED, values)


def _progressed(old: dict, new: _BatchRow) -> bool:
    """Progress is completed + failed growing, or the status changing."""
    return (
        new.status != old["status"] or new.completed + new.failed > old["completed"] + old["failed"]
    )


def _diff(before: dict, after: dict) -> dict:
    return {
        key: [before.get(key), value] for key, value in after.items() if before.get(key) != value
    }


def _change_event(
    old: dict, new: _BatchRow, destinations: dict, now: datetime
) -> BatchEvent | None:
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


def unlisted(seen: Container[str]) -> list[str]:
    """Present batches not in `seen`: the ones a complete listing did not include."""
    return [
        batch_id
        for batch_id in Batch.objects.present()
        .values_list("id", flat=True)
        .iterator(chunk_size=5000)
        if batch_id not in seen
    ]


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
