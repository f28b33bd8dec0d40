"""Template helpers for the dashboard: compact durations and ages, status
badges, bar widths and links that apply one filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import slugify

from batches.timefmt import format_duration
from dashboard import charts

register = template.Library()

# Badge look per known status; anything else Inkit sends gets "other".
STATUS_BADGES = {
    "completed": "✓",
    "in-progress": "◔",
    "failed": "✕",
}


@register.filter
def short_duration(value: timedelta | None) -> str:
    """A duration the way ops people say it ("45 s", "3 h 12 min"), worded
    by batches.timefmt as the alerts word it."""
    return "" if value is None else format_duration(value)


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


@register.simple_tag(takes_context=True)
def filter_url(context: template.Context, **params: object) -> str:
    """The list with only the given filters applied, e.g. a summary figure's
    link: {% filter_url status="In Progress" as link %}. Uses the view's
    list_path when it gave one (the strip has dozens of links)."""
    query = urlencode({name: value for name, value in params.items() if value not in (None, "")})
    path = context.get("list_path") or reverse("batch-list")
    return path + (f"?{query}" if query else "")


@register.filter
def stuck_for_at(batch: object, now: datetime) -> str:
    """"3 h 12 min": how long the batch has gone without progress."""
    return short_duration(batch.stuck_for(now))


@register.filter
def thousands(value: int | None) -> str:
    """12345 as "12,345". humanize's intcomma goes through the locale
    machinery on every call, which a 50-row table pays thousands of times."""
    if value is None or value == "":
        return ""
    return f"{int(value):,}"


@register.filter
def iso(moment: datetime | None) -> str:
    """ISO 8601 in UTC, for <time datetime=...>."""
    return moment.astimezone(UTC).isoformat() if moment else ""


@register.filter
def utc(moment: datetime | None, precision: str = "minutes") -> str:
    """"2024-05-01 13:45" (or with seconds) in UTC: what the page shows
    until dashboard.js puts it in the viewer's zone. Cheaper than the date
    filter, which a table calls hundreds of times."""
    if not moment:
        return ""
    pattern = "%Y-%m-%d %H:%M:%S" if precision == "seconds" else "%Y-%m-%d %H:%M"
    return moment.astimezone(UTC).strftime(pattern)


@register.simple_tag
def destination_bar(dest: dict, wide: bool = False) -> str:
    """One destination's stacked bar (completed, failed, in progress, each as
    a share of that destination's own deliveries) with its counts for screen
    readers. An SVG whose segments are width attributes, so no inline style
    is needed under the Content-Security-Policy; every bar has the same
    length wherever it stands, since it compares shares, not volumes.
    Built here rather than in a template because the list renders one per
    destination per row. format_html escapes every value. dest is a dict (a
    row's or the summary's) or a BatchDestination."""
    name, count, completed, failed, in_progress = _counts(dest)
    shares = [float(percent(n, count)) for n in (completed, failed, in_progress)]
    starts = [0.0, shares[0], shares[0] + shares[1]]
    return format_html(
        '<svg class="bar{}" viewBox="0 0 100 10" preserveAspectRatio="none" role="img" '
        'aria-label="{}: {} completed, {} failed, {} in progress of {}">'
        '<rect class="bar-completed" x="0" y="0" width="{}" height="10"></rect>'
        '<rect class="bar-failed" x="{}" y="0" width="{}" height="10"></rect>'
        '<rect class="bar-in-progress" x="{}" y="0" width="{}" height="10" fill="url(#bar-stripes)"></rect></svg>',
        SafeString(" bar-wide" if wide else ""),
        name, *map(digits, (completed, failed, in_progress, count)),
        *map(_svg_number, (shares[0], starts[1], shares[1], starts[2], shares[2])),
    )


def _svg_number(value: float) -> SafeString:
    return SafeString(f"{value:.1f}")


@register.simple_tag
def bar_chart(series: object, name: str, label: str, css_class: str = "") -> str:
    """One series of a batches.trends.Series as an SVG bar chart."""
    return charts.bars(series.values[name], f"chart-{name} {css_class}".strip(), label)


@register.simple_tag
def destination_sparkline(trend: dict | None, name: str) -> str:
    """A destination card's last 24 hours, from the summary's trends."""
    if not trend:
        return ""
    done, failed = trend.get("completed", []), trend.get("failed", [])
    label = (
        f"{name}, the 24 hours to the last sync: {sum(done):,} completed and "
        f"{sum(failed):,} failed documents"
    )
    return charts.sparkline(done, failed, label)


@register.simple_tag
def run_chart(points: list, now: datetime, measure: str) -> str:
    """The sync runs of the last 24 hours by duration or API requests."""
    draw = charts.run_durations if measure == "duration" else charts.run_requests
    return draw(points, now)


@register.filter
def maximum(values: list | None) -> float:
    return max(values or [0])


@register.filter
def total(values: list | None) -> float:
    return sum(values or [])


@register.filter
def index(values: list, position: int):
    return values[position]


@register.filter
def as_percent(rate: float | None) -> str:
    """0.3749 as "37%", 0.004 as "0.4%": how failure rates read."""
    if rate is None:
        return ""
    value = 100 * rate
    if value and value < 1:
        return f"{value:.1f}%"
    return f"{value:.0f}%"


def digits(value: int | None) -> str:
    """An integer as text that needs no escaping. Escaping every number is
    a good part of what a big table costs to render."""
    return SafeString(int(value or 0))


def _counts(dest: object) -> tuple:
    keys = ("name", "count", "completed", "failed", "in_progress")
    if isinstance(dest, dict):
        return tuple(dest.get(key) for key in keys)
    return tuple(getattr(dest, key) for key in keys)


@register.simple_tag
def destination_counts(dest: dict) -> str:
    """"✓12 ✕1 ◔3" beside a bar; the failed count stands out when not zero."""
    _, _, completed, failed, in_progress = _counts(dest)
    return format_html(
        '<span class="dest-counts" aria-hidden="true"><span class="n-completed">✓{}</span>'
        '<span class="n-failed{}">✕{}</span><span class="n-in-progress">◔{}</span></span>',
        digits(completed), SafeString(" has-failed" if failed else ""), digits(failed), digits(in_progress),
    )


@register.simple_tag
def destinations_cell(row: dict) -> str:
    """A list row's destinations: name, bar and counts for each, or "none
    yet" (Inkit lists no destinations for a batch that has not started)."""
    if not row["destinations"]:
        return mark_safe('<span class="muted">none yet</span>')  # A constant: nothing to escape.
    return format_html_join(
        "",
        '<div class="dest"><span class="dest-name">{}</span>{}{}</div>',
        ((dest["name"], destination_bar(dest), destination_counts(dest)) for dest in row["destinations"]),
    )


@register.simple_tag
def time_cell(row: dict, which: str) -> str:
    """A moment of a list row ("created" or "progress"): UTC until
    dashboard.js shows it in the viewer's zone, and how long ago."""
    # All three are made by rows.py from a datetime: nothing to escape.
    return format_html(
        '<time datetime="{}" data-local>{}</time><span class="age">{}</span>',
        *(SafeString(row[f"{which}_{part}"]) for part in ("iso", "utc", "age")),
    )


@register.simple_tag
def progress_cell(row: dict) -> str:
    """A list row's progress, in words this app can stand behind
    (rows.honest_progress): the time of the last progress seen, or that
    none was seen since first sight, and when it will be stuck."""
    when = ""
    if row["progress_seen"]:
        when = format_html('<time datetime="{}" data-local>{}</time>', row["progress_iso"], row["progress_utc"])
    note = ""
    if row["progress_note"]:
        note = format_html(
            '<span class="stuck-in{}">{}</span>',
            SafeString(" is-soon" if row["stuck_soon"] else ""),
            row["progress_note"],
        )
    return format_html('{}<span class="progress-text">{}</span>{}', when, row["progress_text"], note)


@register.filter
def get_item(mapping: object, key: str):
    """mapping[key], or None: a dict lookup by a variable's value."""
    return mapping.get(key) if isinstance(mapping, dict) else None


@register.filter
def short_seconds(seconds: float | None) -> str:
    """A run's duration: "0.8 s", "12 s", "3 min 5 s"."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    return format_duration(seconds)


@register.filter
def longest_run(hours: list) -> float:
    return max((row.longest_seconds for row in hours), default=0.0)


@register.filter
def run_requests_total(hours: list) -> int:
    return sum(row.requests for row in hours)


# Small line icons where the usual fonts have no glyph (a clock for overdue,
# a power sign for signing out): drawn, so they never show as a box.
ICONS = {
    "overdue": '<circle cx="8" cy="9" r="5.5"></circle><path d="M8 6v3l2 1.5M6 1.75h4"></path>',
    "sign-out": '<path d="M8 1.75v6"></path><path d="M4.6 4.2a5.25 5.25 0 1 0 6.8 0"></path>',
}


@register.simple_tag
def icon(name: str) -> str:
    return format_html(
        '<svg class="icon" viewBox="0 0 16 16" aria-hidden="true" focusable="false">{}</svg>',
        mark_safe(ICONS[name]),  # Constants above: nothing to escape.
    )
