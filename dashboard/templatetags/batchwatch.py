"""Template helpers for the dashboard: compact durations and ages, status
badges, bar widths and links that apply one filter."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

register = template.Library()

# Badge look per known status; anything else Inkit sends gets "other".
STATUS_BADGES = {
    "completed": "✓",
    "in-progress": "◔",
    "failed": "✕",
}


@register.filter
def short_duration(value: timedelta | None) -> str:
    """A duration the way ops people say it: "45 s", "12 min", "3 h 12 min",
    "2 d 4 h"."""
    if value is None:
        return ""
    seconds = max(0, int(value.total_seconds()))
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


@register.filter
def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago: "just now", "12 min ago", "3 d 4 h ago"."""
    if moment is None:
        return ""
    elapsed = (now or timezone.now()) - moment
    if elapsed < timedelta(seconds=10):
        return "just now" if elapsed > -timedelta(minutes=1) else "in the future"
    return f"{short_duration(elapsed)} ago"


@register.filter
def status_slug(status: str) -> str:
    """The CSS modifier for a status badge: completed, in-progress, failed or other."""
    slug = slugify(status or "")
    return slug if slug in STATUS_BADGES else "other"


@register.filter
def status_icon(status: str) -> str:
    """A symbol beside the status text, so colour is never the only signal."""
    return STATUS_BADGES.get(status_slug(status), "•")


@register.filter
def percent(part: int | None, whole: int | None) -> str:
    """part as a percentage of whole, for a bar's width ("37.5")."""
    if not whole or not part:
        return "0"
    return f"{min(100.0, 100.0 * part / whole):.1f}"


@register.simple_tag
def filter_url(**params: object) -> str:
    """The list with only the given filters applied, e.g. a summary figure's
    link: {% filter_url status="In Progress" %}."""
    query = urlencode({name: value for name, value in params.items() if value not in (None, "")})
    return reverse("batch-list") + (f"?{query}" if query else "")


@register.filter
def stuck_at(batch: object, now: datetime) -> bool:
    """Batch.is_stuck(now) for a template: the same rule as the stuck filter."""
    return batch.is_stuck(now)


@register.filter
def stuck_for_at(batch: object, now: datetime) -> str:
    """"3 h 12 min": how long the batch has gone without progress."""
    return short_duration(batch.stuck_for(now))
