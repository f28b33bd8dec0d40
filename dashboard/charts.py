"""Charts drawn on the server as inline SVG.

No chart library: a chart here is a row of bars, which an SVG draws with a
handful of <rect>s, and drawing it in Python needs no script, so nothing
loosens the Content-Security-Policy (no inline style either: sizes are SVG
attributes, colours come from the stylesheet's classes, so both themes
work). Each SVG has an accessible name saying what it shows; the templates
put the same numbers in a table beside it for screen readers and anyone who
wants the figures. Axis labels are HTML around the SVG, so text never
scales with the chart's width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from batches.trends import HOUR, RunPoint, hour_buckets, hour_of

# The drawing's own units: the SVG stretches to its box (preserveAspectRatio
# none), the stylesheet sets the box's size.
WIDTH = 240.0
HEIGHT = 48.0
# A bar that is not zero is never thinner than this, so one failure shows.
MIN_BAR = 1.5


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def bars(values: Sequence[float], css_class: str, label: str, *, top: float | None = None) -> SafeString:
    """One series as bars, scaled to its own maximum (or `top`)."""
    top = top if top is not None else max(values, default=0)
    count = max(len(values), 1)
    slot = WIDTH / count
    gap = min(slot * 0.2, 2.0)
    rects = []
    for n, value in enumerate(values):
        if value <= 0 or top <= 0:
            continue
        height = max(HEIGHT * value / top, MIN_BAR)
        rects.append((_number(n * slot + gap / 2), _number(HEIGHT - height), _number(slot - gap), _number(height)))
    return format_html(
        '<svg class="chart {}" viewBox="0 0 {} {}" preserveAspectRatio="none" role="img" aria-label="{}">'
        '<rect class="chart-ground" x="0" y="0" width="{}" height="{}"></rect>{}</svg>',
        css_class,
        _number(WIDTH),
        _number(HEIGHT),
        label,
        _number(WIDTH),
        _number(HEIGHT),
        format_html_join("", '<rect class="chart-bar" x="{}" y="{}" width="{}" height="{}"></rect>', rects),
    )


def sparkline(completed: Sequence[float], failed: Sequence[float], label: str) -> SafeString:
    """A destination card's last 24 hours: completed and failed stacked per
    hour, failed on top, one scale."""
    totals = [c + f for c, f in zip(completed, failed, strict=True)]
    top = max(totals, default=0)
    count = max(len(totals), 1)
    slot = WIDTH / count
    gap = min(slot * 0.25, 2.0)
    done_rects, failed_rects = [], []
    for n, (done, bad) in enumerate(zip(completed, failed, strict=True)):
        if top <= 0 or done + bad <= 0:
            continue
        x, width = _number(n * slot + gap / 2), _number(slot - gap)
        bad_height = max(HEIGHT * bad / top, MIN_BAR) if bad else 0.0
        done_height = max(HEIGHT * done / top, MIN_BAR) if done else 0.0
        if done:
            done_rects.append((x, _number(HEIGHT - done_height), width, _number(done_height)))
        if bad:
            failed_rects.append((x, _number(HEIGHT - done_height - bad_height), width, _number(bad_height)))
    return format_html(
        '<svg class="chart chart-spark" viewBox="0 0 {} {}" preserveAspectRatio="none" role="img" aria-label="{}">'
        '<rect class="chart-ground" x="0" y="0" width="{}" height="{}"></rect>{}{}</svg>',
        _number(WIDTH),
        _number(HEIGHT),
        label,
        _number(WIDTH),
        _number(HEIGHT),
        format_html_join("", '<rect class="chart-completed" x="{}" y="{}" width="{}" height="{}"></rect>', done_rects),
        format_html_join("", '<rect class="chart-failed" x="{}" y="{}" width="{}" height="{}"></rect>', failed_rects),
    )


def run_durations(points: Sequence[RunPoint], now: datetime, hours: int = 24) -> SafeString:
    """Each sync run of the last `hours` as a thin bar at its start time, as
    tall as it took; failed runs in the failure colour. One path per kind:
    a day of runs every minute is 1,440 bars."""
    return _run_paths(points, now, hours, lambda p: p.seconds, "sync runs' durations")


def run_requests(points: Sequence[RunPoint], now: datetime, hours: int = 24) -> SafeString:
    """The same runs, as tall as their API requests."""
    return _run_paths(points, now, hours, lambda p: float(p.requests), "sync runs' API requests")


def _run_paths(points, now, hours, value, label) -> SafeString:
    start = now - timedelta(hours=hours)
    span = max((now - start).total_seconds(), 1.0)
    top = max((value(p) for p in points), default=0.0)
    ok, failed = [], []
    for point in points:
        height = max(HEIGHT * value(point) / top, MIN_BAR) if top > 0 else MIN_BAR
        x = WIDTH * (point.started_at - start).total_seconds() / span
        segment = f"M{_number(x)} {_number(HEIGHT)}V{_number(HEIGHT - height)}"
        (failed if point.failed else ok).append(segment)
    return format_html(
        '<svg class="chart chart-runs" viewBox="0 0 {} {}" preserveAspectRatio="none" role="img" aria-label="{}">'
        '<rect class="chart-ground" x="0" y="0" width="{}" height="{}"></rect>'
        '<path class="chart-run" d="{}"></path><path class="chart-run-failed" d="{}"></path></svg>',
        _number(WIDTH),
        _number(HEIGHT),
        f"Bars: {label}, each run of the last {hours} hours",
        _number(WIDTH),
        _number(HEIGHT),
        "".join(ok) or "M0 0",
        "".join(failed) or "M0 0",
    )


@dataclass(frozen=True)
class RunHour:
    """The sync runs that started in one hour: the run chart's table."""

    hour: datetime
    runs: int
    failed: int
    median_seconds: float
    longest_seconds: float
    requests: int


def run_hours(points: Sequence[RunPoint], hours: int = 24) -> list[RunHour]:
    """The run chart's numbers per hour, newest first."""
    if not points:
        return []
    buckets = hour_buckets(points[-1].started_at, hours)
    grouped: dict[datetime, list[RunPoint]] = {bucket: [] for bucket in buckets}
    for point in points:
        hour = hour_of(point.started_at)
        if hour in grouped:
            grouped[hour].append(point)
    result = []
    for hour, group in grouped.items():
        if not group:
            continue
        seconds = [p.seconds for p in group]
        result.append(
            RunHour(
                hour,
                len(group),
                sum(p.failed for p in group),
                median(seconds),
                max(seconds),
                sum(p.requests for p in group),
            )
        )
    return sorted(result, key=lambda row: row.hour, reverse=True)


__all__ = ["HOUR", "bars", "run_durations", "run_hours", "run_requests", "sparkline"]
