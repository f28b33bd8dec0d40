"""Needs attention: what the list page shows first, in one query.

Each entry is one of the batch rules in batches.models (BatchQuerySet.stuck(),
stuck_soon(), overdue(), finished_with_failures()), counted up to the list's
cap and with its worst few batches, plus the destinations whose failure rate
since the previous hour began is well above their own last 7 days (from the
summary's trends: batches/trends.py). Each entry links to the list filtered to
exactly its batches.

The four counts and their examples come back from a single UNION ALL: each
arm is a rule's few worst batches with the rule's capped count beside them
(an uncorrelated scalar subquery, computed once), so a page view costs one
round trip however many entries there are, and every arm is served by the
rule's own index (batch_stuck_idx, batch_in_progress_created_idx, batch_failed_idx and
batch_failed_finished_idx).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.utils.dateparse import parse_datetime

from batches.models import Batch, BatchQuerySet, failure_rate
from batches.trends import FailingDestination, failing_destinations

from .paging import COUNT_CAP
from .templatetags.batchwatch import as_percent, short_duration

# Batches named under each entry; the entry's link shows them all.
EXAMPLES = 3
_FIELDS = (
    "id",
    "name",
    "status",
    "total",
    "created_at",
    "first_seen_at",
    "last_progress_at",
    "completed",
    "failed",
    "count",
    "in_progress",
)
_MOMENTS = {"created_at", "first_seen_at", "last_progress_at"}


@dataclass(frozen=True)
class Entry:
    """One rule's batches: how many (up to the cap) and the worst few."""

    kind: str  # "stuck", "stuck_soon", "overdue", "recent_failures"
    found: int  # Counted up to COUNT_CAP + 1.
    batches: list[Batch]
    cap: int = COUNT_CAP

    @property
    def capped(self) -> bool:
        return self.found > self.cap

    @property
    def shown_count(self) -> str:
        return f"{self.cap:,}+" if self.capped else f"{self.found:,}"

    @property
    def more(self) -> int:
        return max(min(self.found, self.cap) - len(self.batches), 0)


@dataclass(frozen=True)
class Triage:
    now: datetime
    entries: dict[str, Entry]
    failing: list[FailingDestination] = field(default_factory=list)

    @classmethod
    def load(cls, now: datetime, summary: dict | None) -> Triage:
        """Every entry, in one query; the failing destinations from the summary."""
        rules = rules_as_of(now)
        found = _fetch(rules)
        entries = {}
        for kind in rules:
            count, batches = found.get(kind, (0, []))
            # UNION ALL keeps each arm's order in practice, not by promise.
            entries[kind] = Entry(kind, count, sorted(batches, key=_WORST_FIRST[kind]))
        return cls(now, entries, failing_destinations((summary or {}).get("trends"), now))

    @property
    def stuck_count(self) -> int:
        return self.entries["stuck"].found


def rules_as_of(now: datetime) -> dict[str, BatchQuerySet]:
    """Each entry's batches in its own order: worst first."""
    batches = Batch.objects
    return {
        # Longest without progress first.
        "stuck": batches.stuck(now).order_by("last_progress_at", "id"),
        # Soonest to be stuck first.
        "stuck_soon": batches.stuck_soon(now).order_by("last_progress_at", "id"),
        # Longest In Progress first.
        "overdue": batches.overdue(now).order_by("created_at", "id"),
        # Worst failure rate first, then most failed.
        "recent_failures": batches.finished_with_failures(now).order_by(
            failure_rate().desc(), F("failed").desc(), "id"
        ),
    }


# The orders of rules_as_of(), in Python.
_WORST_FIRST = {
    "stuck": lambda b: (b.last_progress_at, b.id),
    "stuck_soon": lambda b: (b.last_progress_at, b.id),
    "overdue": lambda b: (b.created_at, b.id),
    "recent_failures": lambda b: (-b.failure_rate, -b.failed, b.id),
}


def _fetch(rules: dict[str, BatchQuerySet]) -> dict[str, tuple[int, list[Batch]]]:
    arms, params = [], []
    for n, (kind, rule) in enumerate(rules.items()):
        count_sql, count_params = rule.order_by().values("pk")[: COUNT_CAP + 1].query.sql_with_params()
        rows_sql, rows_params = rule.values_list(*_FIELDS)[:EXAMPLES].query.sql_with_params()
        columns = ", ".join(f"e{n}.{connection.ops.quote_name(name)}" for name in _FIELDS)
        arms.append(
            f"SELECT %s AS kind, (SELECT COUNT(*) FROM ({count_sql}) c{n}) AS found, {columns} "
            f"FROM ({rows_sql}) e{n}"
        )
        params += [kind, *count_params, *rows_params]
    found: dict[str, tuple[int, list[Batch]]] = {}
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(arms), params)
        for kind, count, *values in cursor.fetchall():
            fields = dict(zip(_FIELDS, values, strict=True))
            for name in _MOMENTS:
                fields[name] = _moment(fields[name])
            found.setdefault(kind, (count, []))[1].append(Batch(**fields))
    return found


def _moment(value: datetime | str) -> datetime:
    """A timestamp as a raw cursor gives it: aware from PostgreSQL, text from SQLite."""
    moment = parse_datetime(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def stuck_soon_minutes() -> int:
    """The stuck-soon window: the last quarter of STUCK_AFTER_MINUTES."""
    return max(settings.STUCK_AFTER_MINUTES // 4, 1)


# What the panel says ---------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One line of the panel, worded: what, how many, why, and where to look."""

    kind: str
    count: str
    headline: str
    why: str
    link: str
    batches: list[dict]  # {"label", "id", "url", "detail"}
    more: int = 0
    since: datetime | None = None  # For a failing destination: its window's start.


def items(triage: Triage, list_path: str) -> list[Item]:
    """The panel's lines, most urgent first; only those with something in them."""
    now = triage.now
    stuck_minutes = settings.STUCK_AFTER_MINUTES
    found: list[Item] = []

    def link(**params: str) -> str:
        return f"{list_path}?{urlencode(params)}"

    def listed(entry: Entry, detail) -> list[dict]:
        return [
            {
                "id": batch.id,
                "label": " ".join((batch.name or "").split()) or batch.id,
                "named": bool((batch.name or "").strip()),
                "url": batch.get_absolute_url(),
                "detail": detail(batch),
            }
            for batch in entry.batches
        ]

    def quiet(batch: Batch) -> str:
        if batch.seen_progressing():
            return f"no progress for {short_duration(batch.stuck_for(now))}"
        # Never seen moving: how long Batchwatch has watched it do nothing.
        return f"no progress seen in {short_duration(now - batch.first_seen_at)}"

    # Short: the line's headline says the rest, and a narrow column must hold it.
    def ended(batch: Batch) -> str:
        return f"{as_percent(batch.failure_rate)} ({batch.failed:,} of {batch.completed + batch.failed:,})"

    # (rule, headline, why, the link's filter, what each batch says), most urgent first.
    lines = [
        ("stuck", "stuck", f"In Progress with no progress for {stuck_minutes} min or more",
         {"stuck": "1"}, quiet),
        ("overdue", "overdue",
         f"In Progress for more than {settings.OVERDUE_AFTER_HOURS} h since created",
         {"overdue": "1"}, lambda b: f"{short_duration(now - b.created_at)} old"),
        ("stuck_soon", "stuck soon", f"stuck within {stuck_soon_minutes()} min unless they progress",
         {"stuck_soon": "1"}, lambda b: f"stuck in {short_duration(b.stuck_in(now))}"),
        ("recent_failures", "finished with failures", "in the last 24 h: deliveries failed, worst first",
         {"recent_failures": "1", "sort": "-failure_rate"}, ended),
    ]
    for kind, headline, why, params, detail in lines:
        entry = triage.entries[kind]
        if entry.found:
            found.append(
                Item(kind, entry.shown_count, headline, why, link(**params), listed(entry, detail), entry.more)
            )
    if triage.failing:
        # One line for them all, each destination under it like a batch.
        since = triage.failing[0].since
        found.append(
            Item(
                "failing_destinations", f"{len(triage.failing):,}",
                "destination failing" if len(triage.failing) == 1 else "destinations failing",
                f"above {'its' if len(triage.failing) == 1 else 'their'} own rate over the 7 days before",
                f"{list_path}?{urlencode({'destination': triage.failing[0].name, 'failed': '1'})}",
                [
                    {
                        "id": dest.name,
                        "label": dest.name,
                        "named": False,
                        "url": link(destination=dest.name, failed="1"),
                        "detail": (
                            f"{as_percent(dest.rate)} ({dest.failed:,} of {dest.ended:,}), "
                            f"usually {as_percent(dest.baseline_rate)}"
                        ),
                    }
                    for dest in triage.failing[:EXAMPLES]
                ],
                max(len(triage.failing) - EXAMPLES, 0),
                since,
            )
        )
    return found
