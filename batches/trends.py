"""Trends: hourly rollups of what the sync sees change, and the series the
charts are drawn from.

Recording. The sync already compares each changed batch's destinations with
what it stored; `record_page()` is handed those comparisons for one page and
adds the rises of completed and failed documents to the destination's row
for the hour (DestinationTrend), and each batch seen for the first time to
its creation hour (CreationTrend). It runs inside the page's transaction, so
a page that fails to write records nothing and its changes are counted when
the next sync writes them: each rise is counted once.

Attribution, and why:
- A change to a known batch counts at the hour the sync saw it.
- A batch seen for the first time counts, with everything it has done so far,
  at the hour it was created. A first sync of a long history would otherwise
  put years of documents in one enormous spike at its own hour; this way the
  charts and the 7-day baseline hold a fair picture from the first sync (its
  documents may really have been sent a little after the batch was created).
  First sights older than TRENDS_RETENTION_DAYS are not recorded at all.
- A count that falls (Inkit correcting itself) records nothing: trends count
  documents done, not corrections.
- Hours that pass with no change seen have no row and read as zero. When no
  sync succeeds for a while, the changes that piled up land at the hour a
  sync next sees them.

Retention: rows older than TRENDS_RETENTION_DAYS are deleted, at most once an
hour, by the first page the sync writes in a new hour.

Reading: every chart is one query over a range of hours, served by the
rollups' unique (hour, ...) indexes; the batch table is never read. The sync
run chart reads SyncRun's own rows (an indexed range on started_at).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.db.models.functions import TruncDay

from .models import CreationTrend, DestinationTrend, SyncRun

if TYPE_CHECKING:
    from .inkit import BatchData

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# The charts' spans.
HOURS_SHOWN = 24
DAYS_SHOWN = 30
# A destination "fails well above its own last 7 days" when, since the start
# of the previous hour, at least FAILING_MIN_DELIVERIES deliveries ended and
# their failure rate is at least FAILING_MIN_POINTS above the 7 days before
# and at least FAILING_MIN_FACTOR times it.
BASELINE = timedelta(days=7)
FAILING_MIN_DELIVERIES = 20
FAILING_MIN_POINTS = 0.10
FAILING_MIN_FACTOR = 1.5


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour holding moment."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def retention_start(now: datetime) -> datetime:
    """The first hour kept: TRENDS_RETENTION_DAYS back from now's hour."""
    return hour_of(now) - timedelta(days=settings.TRENDS_RETENTION_DAYS)


# Recording -------------------------------------------------------------------------


def record_page(
    *,
    new: Iterable[BatchData],
    changed: Iterable[tuple[dict[str, dict], BatchData]],
    now: datetime,
) -> None:
    """Add one page's changes to the rollups, in the caller's transaction.

    new: the page's batches not stored before. changed: for each stored
    batch whose item changed, its destinations as stored before this page
    ({name: {"completed": n, "failed": n, ...}}) and the item now listed.
    now: when the page was read. Costs nothing when nothing rose, else one
    statement per rollup touched.
    """
    first_hour = retention_start(now)
    now_hour = hour_of(now)
    documents: dict[tuple[datetime, str], list[int]] = defaultdict(lambda: [0, 0])
    created: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])
    for item in new:
        # A created_at in the future (a skewed clock) counts now.
        hour = min(hour_of(item.created_at), now_hour)
        if hour < first_hour:
            continue
        created[hour][0] += 1
        created[hour][1] += max(item.total, 0)
        for dest in item.destinations:
            counts = documents[hour, dest.name]
            counts[0] += max(dest.completed, 0)
            counts[1] += max(dest.failed, 0)
    for before, item in changed:
        for dest in item.destinations:
            old = before.get(dest.name) or {}
            counts = documents[now_hour, dest.name]
            counts[0] += max(dest.completed - old.get("completed", 0), 0)
            counts[1] += max(dest.failed - old.get("failed", 0), 0)
    # Sorted, so two writer threads lock shared rows in the same order and
    # never deadlock; rows with nothing to add are not written.
    destination_rows = [
        (hour, name, done, failed)
        for (hour, name), (done, failed) in sorted(documents.items())
        if done or failed
    ]
    created_rows = [(hour, n, docs) for hour, (n, docs) in sorted(created.items())]
    if destination_rows:
        _add(DestinationTrend, ("hour", "destination"), ("completed", "failed"), destination_rows)
    if created_rows:
        _add(CreationTrend, ("hour",), ("batches", "documents"), created_rows)
    if destination_rows or created_rows:
        _prune_once_an_hour(now)


# Rows per statement on SQLite: 4 values each, well inside its 32,766 variables.
_SQLITE_CHUNK = 1000
# PostgreSQL types of the rollups' columns, for the arrays _add() sends.
_ARRAY_TYPES = {"hour": "timestamptz[]", "destination": "text[]"}


def _add(model, keys: tuple[str, ...], counters: tuple[str, ...], rows: list[tuple]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE adding to the counters: one statement.
    On PostgreSQL each column goes as one array parameter (unnest): with a
    parameter per value, preparing a first sync's page of a hundred hours
    cost more than PostgreSQL's own work (as for the sync's fingerprints)."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = (*keys, *counters)
    head = f"INSERT INTO {table} ({', '.join(map(quote, columns))}) "
    tail = (
        f" ON CONFLICT ({', '.join(map(quote, keys))}) DO UPDATE SET "
        + ", ".join(f"{quote(c)} = {table}.{quote(c)} + EXCLUDED.{quote(c)}" for c in counters)
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            arrays = ", ".join(f"%s::{_ARRAY_TYPES.get(column, 'bigint[]')}" for column in columns)
            params = [list(column) for column in zip(*rows, strict=True)]
            cursor.execute(f"{head}SELECT * FROM unnest({arrays}){tail}", params)
            return
        # SQLite: a parameter per value, in chunks inside its variable limit
        # (a first sync's page of 1,000 batches can touch thousands of hours).
        adapt = connection.ops.adapt_datetimefield_value
        placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
        for start in range(0, len(rows), _SQLITE_CHUNK):
            chunk = rows[start : start + _SQLITE_CHUNK]
            params = [adapt(v) if isinstance(v, datetime) else v for row in chunk for v in row]
            cursor.execute(f"{head}VALUES {', '.join([placeholders] * len(chunk))}{tail}", params)


_pruned = {"hour": None}
_prune_lock = threading.Lock()


def _prune_once_an_hour(now: datetime) -> None:
    with _prune_lock:
        if _pruned["hour"] == hour_of(now):
            return
        _pruned["hour"] = hour_of(now)
    prune(now)


def prune(now: datetime) -> int:
    """Delete rollup rows older than TRENDS_RETENTION_DAYS; how many."""
    first_hour = retention_start(now)
    deleted, _ = DestinationTrend.objects.filter(hour__lt=first_hour).delete()
    more, _ = CreationTrend.objects.filter(hour__lt=first_hour).delete()
    return deleted + more


# Reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One chart's numbers: a bucket start per bar and the values per name
    ("completed", "failed"), aligned with the buckets."""

    buckets: list[datetime]
    step: timedelta
    values: dict[str, list[float]]

    def total(self, name: str) -> float:
        return sum(self.values.get(name, ()))

    @property
    def table(self) -> list[tuple]:
        """(bucket, value, value...) per bucket, newest first: the table
        beside a chart."""
        columns = list(self.values.values())
        return [(bucket, *(column[n] for column in columns)) for n, bucket in enumerate(self.buckets)][::-1]

    @property
    def totals(self) -> dict[str, float]:
        return {name: sum(values) for name, values in self.values.items()}

    @property
    def peaks(self) -> dict[str, float]:
        return {name: max(values, default=0) for name, values in self.values.items()}


def hour_buckets(now: datetime, hours: int = HOURS_SHOWN) -> list[datetime]:
    """The last `hours` UTC hours, the current (partial) one last."""
    last = hour_of(now)
    return [last - HOUR * n for n in range(hours - 1, -1, -1)]


def day_buckets(now: datetime, days: int = DAYS_SHOWN) -> list[datetime]:
    """The last `days` UTC days, today (partial) last."""
    today = hour_of(now).replace(hour=0)
    return [today - DAY * n for n in range(days - 1, -1, -1)]


def destinations_by_hour(now: datetime, hours: int = HOURS_SHOWN) -> dict[str, Series]:
    """Completed and failed documents per destination per hour: one query."""
    buckets = hour_buckets(now, hours)
    rows = DestinationTrend.objects.filter(hour__gte=buckets[0]).values_list(
        "destination", "hour", "completed", "failed"
    )
    return _by_destination(buckets, HOUR, ((d, hour_of(h), c, f) for d, h, c, f in rows))


def destinations_by_day(now: datetime, days: int = DAYS_SHOWN) -> dict[str, Series]:
    """Completed and failed documents per destination per UTC day: one query,
    summed by the database."""
    buckets = day_buckets(now, days)
    rows = (
        DestinationTrend.objects.filter(hour__gte=buckets[0])
        .annotate(day=TruncDay("hour", tzinfo=UTC))
        .values("destination", "day")
        .annotate(done=Sum("completed"), bad=Sum("failed"))
        .order_by()
        .values_list("destination", "day", "done", "bad")
    )
    return _by_destination(buckets, DAY, ((d, day.astimezone(UTC), c, f) for d, day, c, f in rows))


def _by_destination(buckets: list[datetime], step: timedelta, rows) -> dict[str, Series]:
    position = {bucket: n for n, bucket in enumerate(buckets)}
    found: dict[str, Series] = {}
    for name, bucket, done, failed in rows:
        n = position.get(bucket)
        if n is None:
            continue
        series = found.get(name)
        if series is None:
            series = found[name] = Series(
                buckets, step, {"completed": [0] * len(buckets), "failed": [0] * len(buckets)}
            )
        series.values["completed"][n] += done
        series.values["failed"][n] += failed
    return dict(sorted(found.items()))


def batches_created(now: datetime) -> tuple[Series, Series]:
    """Batches created per hour (the last 24) and per day (the last 30):
    one query over 30 days of hourly rows."""
    hours, days = hour_buckets(now), day_buckets(now)
    by_hour = Series(hours, HOUR, {"batches": [0] * len(hours), "documents": [0] * len(hours)})
    by_day = Series(days, DAY, {"batches": [0] * len(days), "documents": [0] * len(days)})
    hour_at = {bucket: n for n, bucket in enumerate(hours)}
    day_at = {bucket: n for n, bucket in enumerate(days)}
    rows = CreationTrend.objects.filter(hour__gte=days[0]).values_list("hour", "batches", "documents")
    for hour, batches, documents in rows:
        hour = hour_of(hour)
        for series, at, key in ((by_hour, hour_at, hour), (by_day, day_at, hour.replace(hour=0))):
            n = at.get(key)
            if n is not None:
                series.values["batches"][n] += batches
                series.values["documents"][n] += documents
    return by_hour, by_day


@dataclass(frozen=True)
class RunPoint:
    """One sync run on the sync run chart."""

    started_at: datetime
    seconds: float
    requests: int
    failed: bool


def sync_runs(now: datetime, hours: int = HOURS_SHOWN) -> list[RunPoint]:
    """Each finished sync run of the last `hours`, oldest first: its duration
    and API requests. One query over syncrun_recent_idx's range, reading
    four columns (never the stored summaries)."""
    since = now - HOUR * hours
    rows = (
        SyncRun.objects.filter(started_at__gte=since, finished_at__isnull=False)
        .exclude(outcome=SyncRun.Outcome.SKIPPED)
        .order_by("-started_at")
        .values_list("started_at", "finished_at", "api_requests", "outcome")
    )
    points = [
        RunPoint(started, max((finished - started).total_seconds(), 0.0), requests, outcome == SyncRun.Outcome.FAILED)
        for started, finished, requests, outcome in rows
    ]
    points.reverse()
    return points


# The summary strip's trends, stored with the summary ------------------------------


def summary_trends(now: datetime) -> dict:
    """What the summary strip draws and the triage panel compares, as JSON:
    per destination the last 24 hours (completed and failed per hour) and
    the deliveries ended since the start of the previous hour ("recent")
    and in the 7 days before it ("baseline"). One query, run with
    Batch.objects.summary() once per sync that wrote."""
    buckets = hour_buckets(now)
    recent_since = buckets[-2]
    baseline_since = recent_since - BASELINE
    position = {bucket: n for n, bucket in enumerate(buckets)}
    destinations: dict[str, dict] = {}
    rows = DestinationTrend.objects.filter(hour__gte=baseline_since).values_list(
        "destination", "hour", "completed", "failed"
    )
    for name, hour, done, failed in rows:
        hour = hour_of(hour)
        entry = destinations.setdefault(
            name,
            {"completed": [0] * len(buckets), "failed": [0] * len(buckets), "recent": [0, 0], "baseline": [0, 0]},
        )
        n = position.get(hour)
        if n is not None:
            entry["completed"][n] += done
            entry["failed"][n] += failed
        window = entry["recent"] if hour >= recent_since else entry["baseline"]
        window[0] += done
        window[1] += failed
    return {
        "first_hour": buckets[0].isoformat(),
        "recent_since": recent_since.isoformat(),
        "destinations": dict(sorted(destinations.items())),
    }


@dataclass(frozen=True)
class FailingDestination:
    """A destination failing well above its own last 7 days."""

    name: str
    since: datetime
    failed: int
    ended: int  # completed + failed since `since`
    rate: float
    baseline_rate: float
    baseline_ended: int


def failing_destinations(trends: dict | None, now: datetime) -> list[FailingDestination]:
    """Destinations whose failure rate since the previous hour began is well
    above their own 7 days before (the thresholds above), worst first. Judged
    on the summary's trends; none when those no longer cover the last hour
    (no sync has written since)."""
    if not trends or "recent_since" not in trends:
        return []
    since = datetime.fromisoformat(trends["recent_since"])
    if since + HOUR < hour_of(now) - HOUR:
        return []
    found = []
    for name, entry in trends.get("destinations", {}).items():
        done, failed = entry["recent"]
        base_done, base_failed = entry["baseline"]
        ended, base_ended = done + failed, base_done + base_failed
        if ended < FAILING_MIN_DELIVERIES:
            continue
        rate = failed / ended
        baseline = base_failed / base_ended if base_ended else 0.0
        if rate >= baseline + FAILING_MIN_POINTS and rate >= baseline * FAILING_MIN_FACTOR:
            found.append(FailingDestination(name, since, failed, ended, rate, baseline, base_ended))
    return sorted(found, key=lambda d: (-d.rate, d.name))
