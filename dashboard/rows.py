"""What a row of the batch list shows, prepared in Python.

A 50-row page renders about 2,500 values. Plain dicts render several times
faster than template filters and attribute lookups on model instances
(which the template engine first tries as dict keys), and the destinations
come from the batch's raw item, so no query fetches BatchDestination rows.
The template still does all the markup and escaping.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.utils.safestring import SafeString

from batches.models import IN_PROGRESS, Batch, stuck_soon_threshold

from .templatetags.batchwatch import (
    age,
    as_percent,
    digits,
    short_duration,
    status_icon,
    status_slug,
)


def destinations_of(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """A batch's destinations as Inkit last listed them, by name. The raw
    item is the one the sync stored and wrote the BatchDestination rows from."""
    listed = raw.get("destinations") if isinstance(raw, dict) else None
    if not isinstance(listed, dict):
        return []
    destinations = []
    for name in sorted(listed):
        value = listed[name] if isinstance(listed[name], dict) else {}
        count, completed, failed, in_progress = (
            _number(value.get(key)) for key in ("count", "completed", "failed", "in_progress")
        )
        destinations.append(
            {
                "name": name,
                "count": count,
                "completed": completed,
                "failed": failed,
                "in_progress": in_progress,
                "status": value.get("status") if isinstance(value.get("status"), str) else None,
            }
        )
    return destinations


def batch_rows(
    batches: Iterable[Batch], now: datetime, query_string: str = ""
) -> list[dict[str, Any]]:
    """The list's rows for these batches, as of `now`; each links to its
    detail page carrying the list's query string (for "Back to the list")."""
    suffix = f"?{query_string}" if query_string else ""
    soon = stuck_soon_threshold(now)
    rows = []
    for batch in batches:
        stuck = batch.is_stuck(now)
        overdue = batch.is_overdue(now)
        finished = batch.status != IN_PROGRESS
        # Text from the API is escaped here, once, though the row uses it
        # several times; what this module makes itself needs no escaping.
        rows.append(
            {
                "id": escape(batch.id),
                "detail_url": escape(batch.get_absolute_url() + suffix),
                "name": None if batch.name is None else escape(batch.name),
                "status": escape(batch.status),
                "status_slug": SafeString(status_slug(batch.status)),
                "status_icon": SafeString(status_icon(batch.status)),
                "stuck_for": SafeString(short_duration(batch.stuck_for(now))) if stuck else "",
                "overdue_for": SafeString(short_duration(now - batch.created_at)) if overdue else "",
                # A batch that ended with failures wears no green badge.
                "with_failures": finished and batch.failed > 0,
                "failure_rate": SafeString(as_percent(batch.failure_rate)) if batch.failed else "",
                "ended": digits(batch.completed + batch.failed),
                "total": digits(batch.total),
                "completed": digits(batch.completed),
                "failed": digits(batch.failed) if batch.failed else "",
                "in_progress": digits(batch.in_progress),
                "destinations": destinations_of(batch.raw),
                "created_iso": _iso(batch.created_at),
                "created_utc": _utc(batch.created_at),
                "created_age": age(batch.created_at, now),
                "progress_iso": _iso(batch.last_progress_at),
                "progress_utc": _utc(batch.last_progress_at),
                "progress_age": age(batch.last_progress_at, now),
                **honest_progress(batch, now, stuck, soon),
            }
        )
    return rows


def honest_progress(batch: Batch, now: datetime, stuck: bool, soon: datetime) -> dict[str, Any]:
    """What the list can truly say of a batch's progress. Inkit gives no
    progress time: last_progress_at is when this app saw progress, and only
    that if it moved past first_seen_at (BatchQuerySet's seen_progressing())."""
    seen = batch.seen_progressing()
    text = note = ""
    if batch.status == IN_PROGRESS and batch.gone_at is None:
        if seen:
            text = f"no progress for {short_duration(batch.stuck_for(now))}"
        else:
            text = f"first seen {age(batch.first_seen_at, now)}, no progress seen yet"
        left = batch.stuck_in(now)
        if left is not None:
            note = f"stuck in {short_duration(left)}"
    elif seen:
        text = f"last progress {age(batch.last_progress_at, now)}"
    else:
        text = f"no progress seen (first seen {age(batch.first_seen_at, now)})"
    return {
        "progress_seen": seen,
        "progress_text": SafeString(text),
        "progress_note": SafeString(note),
        # Will be stuck within the next quarter of STUCK_AFTER_MINUTES.
        "stuck_soon": bool(note) and batch.last_progress_at <= soon,
    }


def escape(text: str) -> SafeString:
    """Django's escape() without its lazy-text check, which a 200-row page
    would pay a thousand times for nothing: these are plain strings."""
    return SafeString(html.escape(text))


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
