"""How Batchwatch writes durations and moments as text: alerts, command
output and the dashboard's pages all say "stuck for 3 h 12 min" the same way.
Here rather than in dashboard/ because batches/ never imports the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def format_duration(value: timedelta | float) -> str:
    """A duration as ops people say it: "45 s", "12 min", "3 h 12 min",
    "2 d 4 h". Takes a timedelta or seconds; less than nothing is "0 s"."""
    total = value.total_seconds() if isinstance(value, timedelta) else value
    seconds = max(0, int(total))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def format_utc(moment: datetime | str | None, *, seconds: bool = False) -> str:
    """ "2026-01-05 09:12 UTC" (or with seconds): a moment in plain text,
    where no browser puts it in the reader's zone. Takes an aware datetime
    or ISO 8601 text (alert payloads keep moments so); None is "unknown"."""
    if not moment:
        return "unknown"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    pattern = "%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC"
    return moment.astimezone(UTC).strftime(pattern)
