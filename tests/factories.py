"""Batches and sync runs made directly in the database, for the view tests:
each test states the data it checks against."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from django.utils import timezone

from batches.alerts import build_payload
from batches.models import Alert, Batch, BatchDestination, BatchEvent, SyncRun

_ids = itertools.count(1)


def make_batch(
    *,
    id: str | None = None,
    name: str | None = "Invoices",
    status: str = "Completed",
    total: int = 10,
    created_at: datetime | None = None,
    destinations: dict[str, tuple[int, int, int]] | None = None,
    destination_status: dict[str, str | None] | None = None,
    last_progress_at: datetime | None = None,
    first_seen_at: datetime | None = None,
    gone_at: datetime | None = None,
) -> Batch:
    """A batch as the sync would store it: sums over its destinations and a
    raw item that matches. destinations maps a name to (completed, failed,
    in_progress); each destination's status defaults to Inkit's lowercase one."""
    now = timezone.now()
    batch_id = id or f"rb_test{next(_ids):06d}"
    created_at = created_at or now - timedelta(minutes=5)
    first_seen_at = first_seen_at or now
    destinations = {"inkit_storage": (total, 0, 0)} if destinations is None else destinations
    statuses = destination_status or {}
    raw_destinations = {}
    for dest_name, (completed, failed, in_progress) in destinations.items():
        value = {
            "completed": completed,
            "count": completed + failed + in_progress,
            "failed": failed,
            "in_progress": in_progress,
        }
        dest_status = statuses.get(dest_name, "completed" if in_progress == 0 else "in_progress")
        if dest_status is not None:
            value["status"] = dest_status
        raw_destinations[dest_name] = value
    sums = [sum(d[key] for d in raw_destinations.values()) for key in ("count", "completed", "failed", "in_progress")]
    batch = Batch.objects.create(
        id=batch_id,
        name=name,
        status=status,
        total=total,
        created_at=created_at,
        count=sums[0],
        completed=sums[1],
        failed=sums[2],
        in_progress=sums[3],
        first_seen_at=first_seen_at,
        last_changed_at=first_seen_at,
        last_progress_at=last_progress_at or first_seen_at,
        gone_at=gone_at,
        raw={
            "created_at": created_at.isoformat().replace("+00:00", "Z"),
            "destinations": raw_destinations,
            "id": batch_id,
            "name": name,
            "status": status,
            "total": total,
        },
    )
    BatchDestination.objects.bulk_create(
        BatchDestination(
            batch=batch,
            name=dest_name,
            count=value["count"],
            completed=value["completed"],
            failed=value["failed"],
            in_progress=value["in_progress"],
            status=value.get("status"),
            batch_created_at=created_at,
        )
        for dest_name, value in raw_destinations.items()
    )
    return batch


def make_event(batch: Batch, *, kind: str = BatchEvent.Kind.CHANGED, ago: timedelta = timedelta(minutes=1), changes: dict | None = None) -> BatchEvent:
    return BatchEvent.objects.create(
        batch=batch,
        seen_at=timezone.now() - ago,
        kind=kind,
        status=batch.status,
        completed=batch.completed,
        failed=batch.failed,
        in_progress=batch.in_progress,
        changes=changes or {},
    )


def finished_sync(
    *,
    outcome: str = SyncRun.Outcome.SUCCEEDED,
    ago: timedelta = timedelta(seconds=30),
    error: str = "",
    with_summary: bool = True,
    **fields,
) -> SyncRun:
    """A sync run that ended `ago`, carrying the summary of what the
    database holds now (as the sync service computes it)."""
    now = timezone.now()
    return SyncRun.objects.create(
        started_at=now - ago - timedelta(seconds=3),
        finished_at=now - ago,
        outcome=outcome,
        error=error,
        summary=Batch.objects.summary() if with_summary else None,
        **fields,
    )


def stuck_alert_payload(batches: list[Batch], now: datetime) -> dict:
    """The payload of an alert saying each of these batches became stuck,
    as batches.alerts builds it (its links need PUBLIC_URL set)."""
    alert = Alert.objects.create(created_at=now, subject="", payload={})
    BatchEvent.objects.bulk_create(
        BatchEvent(
            batch=batch,
            seen_at=now,
            kind=BatchEvent.Kind.STUCK,
            status=batch.status,
            completed=batch.completed,
            failed=batch.failed,
            in_progress=batch.in_progress,
            alert=alert,
            changes={"stuck_since": now.isoformat(), "stuck_after_minutes": 60},
        )
        for batch in batches
    )
    return build_payload(alert, now, None)
