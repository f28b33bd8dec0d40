"""A stand-in for Inkit's List Batches API (GET /v1/batch), served over HTTP.

It holds a generated, evolving set of batches and serves them the way the
vendor documents (see the Inkit reference page and FACTS.md), with faults to
order: rate limits, 5xx, bad JSON, slow answers and dropped connections.
The app's run command uses it when there is no Inkit token, the sync tests
compare the database with it, and the benchmark pages 100,000 batches from it.

It is a remote server in spirit, so it imports nothing from Django or the app;
only the standard library.

Choices where the vendor's docs are silent (documented here so tests and
readers agree):
- The default order is newest first, reported as {"key": "created_at",
  "order": 1} exactly as the vendor's example does. An explicit
  sort=created_at does the same by default (the vendor's reading of its
  own example; Faults.created_at_order="oldest" lists oldest first), and
  sort=-created_at lists the other way with order -1 (unless
  Faults.descending_honoured is off: then it lists as sort=created_at).
- Ties are broken by id, in the same direction as the listing.
- An empty result has page_count 1 (page 1 exists and is empty).
- A page past the end answers 200 with no items; prev_page is page - 1.
- Names sort case-insensitively, null names as the empty string.
- destination_status matches the status as served: a destination whose
  (undocumented) status field is absent never matches it.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import json
import math
import random
import re
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_TOKEN = "simulator-token"
DEFAULT_PAGE_SIZE = 25
SORT_KEYS = ("created_at", "name", "status", "total")
DOCUMENTED_DESTINATIONS = ("inkit_storage", "salesforce", "sepire", "docusign", "magic_link")
# Destinations the batch docs do not list (flow batches use them): the app
# must take new names as they come.
UNKNOWN_DESTINATIONS = ("amazon_s3", "google_drive", "dropbox", "box")

# The vendor's reference example, item for item (list-batches-reference.txt).
REFERENCE_BATCHES: list[dict[str, Any]] = [
    {
        "created_at": "2023-09-06T14:07:55.732858Z",
        "destinations": {
            "inkit_storage": {
                "completed": 2,
                "count": 2,
                "failed": 0,
                "in_progress": 0,
                "status": "completed",
            }
        },
        "id": "rb_CDh2Dg57evYHnBp7TbxJt",
        "name": None,
        "status": "Completed",
        "total": 2,
    },
    {
        "created_at": "2023-08-24T14:41:21.969069Z",
        "destinations": {
            "inkit_storage": {
                "completed": 2,
                "count": 2,
                "failed": 0,
                "in_progress": 0,
                "status": "completed",
            }
        },
        "id": "rb_3uNFz4IL6MqH7A1kOy9YHs",
        "name": None,
        "status": "Completed",
        "total": 2,
    },
    {
        "created_at": "2023-08-24T14:40:55.778626Z",
        "destinations": {
            "inkit_storage": {
                "completed": 2,
                "count": 2,
                "failed": 0,
                "in_progress": 0,
                "status": "completed",
            }
        },
        "id": "rb_4F0P2OBR3qkf0F14TSQ2WH",
        "name": None,
        "status": "Completed",
        "total": 2,
    },
    {
        "created_at": "2023-08-14T14:32:48.872931Z",
        "destinations": {
            "inkit_storage": {
                "completed": 1,
                "count": 1,
                "failed": 0,
                "in_progress": 0,
                "status": "completed",
            }
        },
        "id": "rb_6WtDgF7RGqdS5Uzea9neZJ",
        "name": "test",
        "status": "Completed",
        "total": 1,
    },
    {
        "created_at": "2023-08-02T13:36:49.089326Z",
        "destinations": {},
        "id": "rb_4R8u6FWWenZtmI7jiBl07r",
        "name": None,
        "status": "In Progress",
        "total": 2,
    },
    {
        "created_at": "2023-08-01T17:13:40.643463Z",
        "destinations": {},
        "id": "rb_esvglATMyCTJ5JfeVrFA",
        "name": None,
        "status": "In Progress",
        "total": 2,
    },
    {
        "created_at": "2023-08-01T16:14:24.514557Z",
        "destinations": {},
        "id": "rb_6vk9qlaW5kvkQTcZABx1XZ",
        "name": None,
        "status": "In Progress",
        "total": 2,
    },
]

# How a batch changes when the simulator advances.
DONE = "done"  # finished; never changes again
PENDING = "pending"  # In Progress with {} destinations, about to start
PROGRESSING = "progressing"  # documents complete (and a few fail) each step
FAILING = "failing"  # documents mostly fail each step
STUCK = "stuck"  # In Progress and never changes
FIXED = "fixed"  # the reference batches and anything a test set by hand
TIMED = "timed"  # activity mode: progresses with the real clock to a planned end
# Activity mode's rate of new batches.
ACTIVITY_PER_DAY = 2000
# Only while generating: a batch whose every document failed (status "Failed",
# a status the docs never show, to exercise unknown statuses). It is DONE after.
_ALL_FAILED = "all-failed"
_EVOLVING = frozenset({PENDING, PROGRESSING, FAILING})

# Virtual time that passes per advance() step when the clock is fixed.
STEP = timedelta(seconds=30)

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# One encoder reused: cheaper than json.dumps() per item. Names go out as
# UTF-8 rather than \u escapes, as most JSON APIs do.
_encode_json = json.JSONEncoder(ensure_ascii=False).encode
_BYTE_TO_BASE62 = bytes(ord(_BASE62[byte % 62]) for byte in range(256))
_DIGITS = re.compile(r"[0-9]+")

_NAME_WORDS = (
    "Invoices",
    "Statements",
    "Welcome letters",
    "Renewal notices",
    "Payroll stubs",
    "Tax forms 1099",
    "Collections",
    "Onboarding packets",
    "Policy documents",
    "Past-due reminders",
    "Explanation of benefits",
    "Lease agreements",
)
_UNICODE_NAMES = (
    "Relevés de compte",
    "Überweisungsbelege",
    "請求書",
    "Счета-фактуры",
    "Facturas – enero",
    "Quarterly statements 📬",
    "Ödeme bildirimleri",
)
# Names a careless template would render as markup or a careless query
# would run: the app must escape them.
_HOSTILE_NAMES = (
    "<script>alert(1)</script> invoices",
    '<b>Bold</b> & "quoted" statements',
    "Tom & Jerry's <i>letters</i>",
    "{{ 7*7 }} template test",
    "'; DROP TABLE batches; --",
)


# Faults and the request log -------------------------------------------------


@dataclass
class Faults:
    """Faults to inject, all off by default. Change them at any time; the
    server reads them on every request.

    queue: one-shot faults consumed one per request, in order: "429", any
        other status code such as "500", "502", "503", "504", "bad-json",
        "slow" or "reset"; "200" (or None) lets that request through
        normally, so a fault can be aimed at a later request.
    retry_after: the Retry-After header sent with a 429 (seconds or an HTTP
        date); None sends no header.
    slow_seconds: how long a "slow" fault waits before answering normally.
    rate_limit_every: every Nth request answers 429.
    error_rate: probability of a random 500, 502 or 503 (seeded).
    latency_seconds: added to every request.
    bad_json_every: every Nth request answers 200 with a truncated body.
    slow_every: every Nth request is slow (slow_seconds).
    add_when_serving: {page: n}: just before page `page` of the list is first
        served, n new batches are created (the entry is then removed).
    add_every_listing: just before every page 2 of the list is served, this
        many new batches are created: every client paging through the list
        sees batches arrive while it reads.
    remove_when_serving: {page: [ids]}: just before page `page` of the list
        is first served, these batches are deleted (the entry is then
        removed), shifting the later pages back.
    auto_advance_every: advance() once every N requests.
    (The listing's changes above and below happen as a request for a page
    of the list arrives, before any latency or slow wait.)
    created_at_order: which way an explicit sort=created_at lists: "newest"
        first (the vendor's reading, the default) or "oldest" first.
    descending_honoured: whether sort=-created_at lists the other way than
        sort=created_at (True) or ignores the minus (False).
    create_every_listing: one new batch is created just before every Nth
        page of the list served: batches arrive at a steady rate while a
        client pages.
    delete_every_listing: one batch chosen at random (anywhere, pages
        already served included) is deleted just before every Nth page of
        the list served; InkitSimulator.deleted_while_listing names them.
    """

    queue: list[str] = field(default_factory=list)
    retry_after: str | None = "0"
    slow_seconds: float = 2.0
    rate_limit_every: int | None = None
    error_rate: float = 0.0
    latency_seconds: float = 0.0
    bad_json_every: int | None = None
    slow_every: int | None = None
    add_when_serving: dict[int, int] = field(default_factory=dict)
    add_every_listing: int = 0
    remove_when_serving: dict[int, list[str]] = field(default_factory=dict)
    auto_advance_every: int | None = None
    created_at_order: str = "newest"
    descending_honoured: bool = True
    create_every_listing: int = 0
    delete_every_listing: int = 0


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the simulator answered. status 0: the connection was
    dropped without an answer."""

    path: str
    params: dict[str, str]
    status: int
    fault: str | None = None
    method: str = "GET"
    at: float = 0.0  # When it arrived (time.time()), as a rate limiter would count it.


@dataclass(frozen=True, slots=True)
class Response:
    """What to send back for one request, independent of the HTTP server."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    # Drop the connection without answering.
    reset: bool = False


def _json_response(
    status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    return Response(status, json.dumps(payload).encode(), headers=headers)


def _fault_response(status: int, retry_after: str | None) -> Response:
    # Gateways answer 502/504 in HTML, the application in JSON: a client
    # must cope with both.
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    if status in (502, 504):
        html = (
            f"<html><head><title>{status} {phrase}</title></head>\n"
            f"<body><h1>{status} {phrase}</h1></body></html>\n"
        )
        return Response(status, html.encode(), content_type="text/html; charset=utf-8")
    if status == 429:
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        return _json_response(429, {"error": "Rate limit exceeded"}, headers)
    return _json_response(status, {"error": phrase})


# A page cut off mid-item, as a proxy that dropped the connection might leave it.
_TRUNCATED_BODY = (
    b'{"items": [{"created_at": "2023-09-06T14:07:55.732858Z", '
    b'"destinations": {"inkit_storage": {"completed": 2, "count": 2, "fai'
)


# Batches --------------------------------------------------------------------


def format_created_at(moment: datetime) -> str:
    """Inkit's timestamp format: UTC, microseconds, a trailing Z."""
    # isoformat() of a naive time is several times faster than strftime().
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _parse_created_at(value: str | datetime) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("created_at needs a time zone")
        return format_created_at(value)
    return format_created_at(datetime.fromisoformat(value))


@dataclass(slots=True, eq=False)
class _Batch:
    id: str
    created_at: str  # Fixed-width ISO text: sorts as the moments do.
    name: str | None
    status: str
    total: int
    destinations: dict[str, dict[str, Any]]
    behaviour: str
    key: tuple[str, str] = ("", "")
    # The item's JSON, encoded once and reused until the batch changes.
    encoded: bytes | None = None
    # Activity mode (TIMED): (created, finishes, fate) in Unix time.
    plan: tuple[float, float, str] | None = None

    def __post_init__(self) -> None:
        self.key = (self.created_at, self.id)

    def item(self) -> dict[str, Any]:
        """A fresh dict of the item as served (safe for a caller to change)."""
        return {
            "created_at": self.created_at,
            "destinations": _copy_destinations(self.destinations),
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "total": self.total,
        }

    def json(self) -> bytes:
        if self.encoded is None:
            self.encoded = _encode_json(self.item()).encode()
        return self.encoded

    def changed(self) -> None:
        self.encoded = None
        self.key = (self.created_at, self.id)


def _destination(
    completed: int, failed: int, in_progress: int, *, with_status: bool = True
) -> dict:
    value: dict[str, Any] = {
        "completed": completed,
        "count": completed + failed + in_progress,
        "failed": failed,
        "in_progress": in_progress,
    }
    if with_status:
        value["status"] = "completed" if in_progress == 0 else "in_progress"
    return value


def _move(destination: dict[str, Any], *, completed: int = 0, failed: int = 0) -> None:
    """Move documents out of in_progress, keeping count consistent."""
    destination["in_progress"] -= completed + failed
    destination["completed"] += completed
    destination["failed"] += failed
    if "status" in destination:
        destination["status"] = "completed" if destination["in_progress"] == 0 else "in_progress"


def _copy_destinations(destinations: Any) -> Any:
    """A copy of destinations deep enough that callers cannot change ours.
    Tests may set malformed values on purpose, so anything is copied."""
    if isinstance(destinations, dict) and all(isinstance(v, dict) for v in destinations.values()):
        return {name: dict(value) for name, value in destinations.items()}  # the fast, usual case
    return copy.deepcopy(destinations)


def _count_of(destination: Any) -> int:
    count = destination.get("count") if isinstance(destination, dict) else None
    return count if isinstance(count, int) else 0


def _sort_value(key: str) -> Callable[[_Batch], tuple]:
    if key == "name":
        return lambda b: (b.name.casefold() if isinstance(b.name, str) else "", b.id)
    if key == "status":
        return lambda b: (b.status, b.id)
    if key == "total":
        return lambda b: (b.total, b.id)
    return lambda b: b.key


# The simulator --------------------------------------------------------------


class InkitSimulator:
    """An in-memory Inkit holding generated batches (plus, by default, the 7
    of the vendor's reference example), served by serve().

    Everything is deterministic given seed and now: the data, how advance()
    evolves it, and the random errors of Faults.error_rate. With now=None the
    clock is the real one, so created_at values differ between runs.
    """

    def __init__(
        self,
        *,
        batches: int = 200,
        seed: int = 1,
        token: str = DEFAULT_TOKEN,
        max_page_size: int = 100,
        include_reference: bool = True,
        now: datetime | None = None,
        activity: bool = False,
    ):
        if batches < 0:
            raise ValueError("batches must be 0 or more")
        if max_page_size < 1:
            raise ValueError("max_page_size must be at least 1")
        if now is not None and now.tzinfo is None:
            raise ValueError("now needs a time zone")
        self.token = token
        self.max_page_size = max_page_size
        self.faults = Faults()
        self.requests: list[RequestRecord] = []

        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        # A separate stream for faults, so injecting errors does not change
        # what the data becomes.
        self._fault_rng = random.Random(f"faults-{seed}")
        # And one for the listing's changes while it is paged.
        self._change_rng = random.Random(f"changes-{seed}")
        self._listings_served = 0
        self.deleted_while_listing: list[str] = []
        self._fixed_now = now
        self._request_count = 0
        # Ascending by (created_at, id): the created_at orders are slices of it.
        self._batches: list[_Batch] = []
        self._by_id: dict[str, _Batch] = {}
        self._evolving: list[_Batch] = []
        # Bumped on every change; cached sorted and filtered views carry it.
        self._version = 0
        self._views: dict[tuple, tuple[int, list[_Batch]]] = {}

        if include_reference:
            for item in REFERENCE_BATCHES:
                self._by_id[item["id"]] = self._batch_from_item(item, FIXED)
        # Activity mode: a realistic account's history and real-time life.
        self.activity = activity
        self.change_log: list[tuple[float, str]] = []  # (time.time(), batch id)
        self._arrivals_at = time.time()
        if activity:
            self._generate_activity(batches, self._current_time())
        else:
            self._generate(batches, self._current_time())
        self._batches = sorted(self._by_id.values(), key=lambda b: b.key)
        self._evolving = [b for b in self._batches if b.behaviour in _EVOLVING or b.behaviour == TIMED]

    # -- data --

    def items(self) -> list[dict[str, Any]]:
        """Copies of every batch's item as the API serves them, newest first."""
        with self._lock:
            return [batch.item() for batch in reversed(self._batches)]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """{id: item} copies of every batch, for "database equals Inkit" checks."""
        with self._lock:
            return {batch.id: batch.item() for batch in self._batches}

    def __len__(self) -> int:
        return len(self._batches)

    @property
    def now(self) -> datetime:
        """The simulator's clock: the fixed now (moved on by each advance()
        step) or, without one, the real time."""
        with self._lock:
            return self._current_time()

    def add_batches(
        self,
        n: int,
        *,
        status: str = "In Progress",
        destinations: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Create n batches, newer than every other one, and return their items.

        Given destinations are used as they are (and the batches never change
        by themselves); without them, destinations are generated to fit the
        status and In Progress batches then progress on advance().
        """
        with self._lock:
            created = self._create_new(n, status=status, destinations=destinations)
            return [batch.item() for batch in created]

    def set_batch(self, batch_id: str, **fields: Any) -> None:
        """Overwrite fields of one batch (name, status, total, destinations,
        created_at). The batch stops evolving by itself from then on."""
        allowed = {"name", "status", "total", "destinations", "created_at"}
        unknown = set(fields) - allowed
        if unknown:
            raise TypeError(f"set_batch() cannot set {', '.join(sorted(unknown))}")
        with self._lock:
            batch = self._by_id[batch_id]
            if "created_at" in fields:
                self._unlist(batch)
                batch.created_at = _parse_created_at(fields.pop("created_at"))
                batch.changed()
                bisect.insort(self._batches, batch, key=lambda b: b.key)
            if "destinations" in fields:
                fields["destinations"] = _copy_destinations(fields["destinations"])
            for name, value in fields.items():
                setattr(batch, name, value)
            if batch.behaviour in _EVOLVING or batch.behaviour == TIMED:
                self._evolving.remove(batch)
            batch.behaviour = FIXED
            batch.changed()
            self._version += 1

    def remove_batch(self, batch_id: str) -> None:
        """Delete a batch, as if someone deleted it in Inkit."""
        with self._lock:
            self._remove(batch_id)

    def _remove(self, batch_id: str) -> None:
        batch = self._by_id.pop(batch_id)
        self._unlist(batch)
        if batch.behaviour in _EVOLVING or batch.behaviour == TIMED:
            self._evolving.remove(batch)
        self._version += 1

    def behaviour_of(self, batch_id: str) -> str:
        """How a batch evolves: done, pending, progressing, failing, stuck or
        fixed (reference batches and batches set by hand)."""
        with self._lock:
            return self._by_id[batch_id].behaviour

    def advance(self, steps: int = 1) -> None:
        """Let time pass: pending batches start, progressing ones complete
        documents (and finish), failing ones fail documents, new batches
        arrive. Stuck and fixed batches never change."""
        with self._lock:
            for _ in range(steps):
                self._step()

    # -- generation --

    def _current_time(self) -> datetime:
        return self._fixed_now if self._fixed_now is not None else datetime.now(UTC)

    def _new_id(self) -> str:
        # Inkit's ids look like a 128-bit number in base62 without padding:
        # the reference example has 20, 21 and 22 characters after "rb_".
        # 2**128 is about 7.7 * 62**21, hence a leading digit below 8 (often
        # 0, then stripped). Mapping random bytes through a table is far
        # faster than converting a number; its slight bias does not matter.
        rng = self._rng
        while True:
            digits = (
                _BASE62[rng.randrange(8)] + rng.randbytes(21).translate(_BYTE_TO_BASE62).decode()
            )
            batch_id = "rb_" + digits.lstrip("0")
            if batch_id not in self._by_id:
                return batch_id

    def _new_name(self) -> str | None:
        rng = self._rng
        roll = rng.random()
        if roll < 0.35:
            return None
        if roll < 0.37:
            return rng.choice(_HOSTILE_NAMES)
        if roll < 0.45:
            return f"{rng.choice(_UNICODE_NAMES)} {rng.randint(1, 999)}"
        return f"{rng.choice(_NAME_WORDS)} #{rng.randint(1, 9999)}"

    def _destination_names(self) -> list[str]:
        rng = self._rng
        roll = rng.random()
        how_many = 1 if roll < 0.6 else 2 if roll < 0.9 else 3
        names = rng.sample(DOCUMENTED_DESTINATIONS, how_many)
        if rng.random() < 0.02:
            names[-1] = rng.choice(UNKNOWN_DESTINATIONS)
        # Inkit's example lists keys alphabetically.
        return sorted(names)

    def _destinations_for(self, behaviour: str, total: int) -> dict[str, dict[str, Any]]:
        """Destinations whose counts fit how the batch behaves; every
        destination receives every document of the batch."""
        rng = self._rng
        if behaviour == PENDING:
            return {}
        destinations = {}
        for name in self._destination_names():
            # The status field is undocumented: now and then leave it out.
            with_status = rng.random() >= 0.02
            if behaviour == DONE:
                failed = rng.randint(1, max(1, total // 10)) if rng.random() < 0.08 else 0
                value = _destination(total - failed, failed, 0, with_status=with_status)
            elif behaviour == FAILING:
                in_progress = rng.randint(1, total)
                failed = rng.randint(0, total - in_progress)
                value = _destination(
                    total - in_progress - failed, failed, in_progress, with_status=with_status
                )
            elif behaviour == _ALL_FAILED:
                value = _destination(0, total, 0, with_status=with_status)
            else:  # progressing or stuck: some done, the rest in progress
                in_progress = rng.randint(1, total)
                failed = rng.randint(0, (total - in_progress) // 20)
                value = _destination(
                    total - in_progress - failed, failed, in_progress, with_status=with_status
                )
            destinations[name] = value
        return destinations

    def _new_total(self) -> int:
        return min(5000, max(1, int(self._rng.lognormvariate(2.5, 1.3))))

    def _generate(self, count: int, now: datetime) -> None:
        rng = self._rng
        ninety_days = 90 * 86400.0
        for index in range(count):
            roll = rng.random()
            # Mostly Completed; about 12.5 % In Progress. Active batches are
            # recent; stuck ones are at least a day old, as in real life.
            if roll < 0.005:
                behaviour, status, age = _ALL_FAILED, "Failed", rng.uniform(300, ninety_days)
            elif roll < 0.050:
                behaviour, status, age = PROGRESSING, "In Progress", rng.uniform(60, 6 * 3600)
            elif roll < 0.070:
                behaviour, status, age = FAILING, "In Progress", rng.uniform(60, 6 * 3600)
            elif roll < 0.110:
                behaviour, status, age = STUCK, "In Progress", rng.uniform(86400, ninety_days)
            elif roll < 0.130:
                behaviour, status, age = PENDING, "In Progress", rng.uniform(10, 3600)
            else:
                behaviour, status, age = DONE, "Completed", rng.uniform(300, ninety_days)
            if index == 0:
                age = rng.uniform(5, 300)  # the newest batch is minutes old
            total = self._new_total()
            if behaviour == STUCK and rng.random() < 0.4:
                destinations: dict = {}  # like the reference example's stuck ones
            else:
                destinations = self._destinations_for(behaviour, total)
            created_at = now - timedelta(seconds=age, microseconds=rng.randrange(1_000_000))
            batch = _Batch(
                id=self._new_id(),
                created_at=format_created_at(created_at),
                name=self._new_name(),
                status=status,
                total=total,
                destinations=destinations,
                behaviour=DONE if behaviour == _ALL_FAILED else behaviour,
            )
            self._by_id[batch.id] = batch

    @staticmethod
    def _batch_from_item(item: Mapping[str, Any], behaviour: str) -> _Batch:
        return _Batch(
            id=item["id"],
            created_at=item["created_at"],
            name=item["name"],
            status=item["status"],
            total=item["total"],
            destinations=_copy_destinations(item["destinations"]),
            behaviour=behaviour,
        )

    def _create_new(
        self,
        n: int,
        *,
        status: str = "In Progress",
        destinations: Mapping[str, Mapping[str, Any]] | None = None,
        behaviour: str | None = None,
    ) -> list[_Batch]:
        newest = self._batches[-1].created_at if self._batches else ""
        moment = self._current_time()
        created = []
        for _ in range(n):
            stamp = format_created_at(moment)
            if stamp <= newest:
                # Later than everything listed, even on a fixed clock.
                moment = datetime.fromisoformat(newest) + timedelta(
                    microseconds=self._rng.randint(1, 5000)
                )
                stamp = format_created_at(moment)
            newest = stamp
            if destinations is not None:
                kind = FIXED
                given = _copy_destinations(destinations)
                total = max(map(_count_of, given.values()), default=0) or self._new_total()
            else:
                if behaviour is not None:
                    kind = behaviour
                else:
                    kind = PROGRESSING if status == "In Progress" else DONE
                total = self._new_total()
                shape = _ALL_FAILED if status == "Failed" else kind
                given = self._destinations_for(shape, total)
            batch = _Batch(
                id=self._new_id(),
                created_at=stamp,
                name=self._new_name(),
                status=status,
                total=total,
                destinations=given,
                behaviour=kind,
            )
            self._by_id[batch.id] = batch
            self._batches.append(batch)  # newest, so the list stays sorted
            if kind in _EVOLVING:
                self._evolving.append(batch)
            created.append(batch)
        self._version += 1
        return created

    def _unlist(self, batch: _Batch) -> None:
        index = bisect.bisect_left(self._batches, batch.key, key=lambda b: b.key)
        if index < len(self._batches) and self._batches[index] is batch:
            del self._batches[index]
        else:  # not where its key says: fall back to a scan
            self._batches.remove(batch)

    # -- activity --

    def _generate_activity(self, count: int, now: datetime) -> None:
        """ACTIVITY_PER_DAY batches a day back through history, each done 1
        to 6 hours after creation (1 % with failures, 0.5 % stalled for
        ever at part of its documents), those younger still in progress."""
        rng = self._rng
        span = count / ACTIVITY_PER_DAY * 86400.0
        stamp = now.timestamp()
        for _ in range(count):
            age = rng.uniform(0, span)
            batch = self._timed_batch(stamp - age, stamp)
            self._by_id[batch.id] = batch

    def _timed_batch(self, created: float, now: float) -> _Batch:
        rng = self._rng
        roll = rng.random()
        fate = "stall" if roll < 0.005 else "fail" if roll < 0.015 else "complete"
        finishes = created + rng.uniform(3600, 6 * 3600)
        total = self._new_total()
        batch = _Batch(
            id=self._new_id(),
            created_at=format_created_at(datetime.fromtimestamp(created, UTC)),
            name=self._new_name(),
            status="In Progress",
            total=total,
            destinations={name: _destination(0, 0, total) for name in self._destination_names()},
            behaviour=TIMED,
            plan=(created, finishes, fate),
        )
        self._update_timed(batch, now)
        return batch

    def _update_timed(self, batch: _Batch, now: float) -> bool:
        """Bring a TIMED batch to where its plan has it at `now`; True when
        anything changed."""
        created, finishes, fate = batch.plan
        share = min(1.0, max(0.0, (now - created) / (finishes - created)))
        if fate == "stall":
            share = min(share, 0.5)
        changed = False
        for destination in batch.destinations.values():
            count = destination["count"]
            moved = int(count * share)
            failed = (moved + 1) // 2 if fate == "fail" and share >= 1.0 else 0
            value = _destination(moved - failed, failed, count - moved, with_status="status" in destination)
            if value != destination:
                destination.clear()
                destination.update(value)
                changed = True
        if share >= 1.0 and batch.status == "In Progress":
            batch.status = "Completed"
            batch.behaviour = DONE
            changed = True
        if changed:
            batch.changed()
        return changed

    def _live(self) -> None:
        """Activity mode: new batches at ACTIVITY_PER_DAY in real time, and
        the TIMED ones moved on to now; each change logged."""
        now = time.time()
        rng = self._rng
        due = (now - self._arrivals_at) * ACTIVITY_PER_DAY / 86400.0
        arriving = int(due)
        if rng.random() < due - arriving:
            arriving += 1
        self._arrivals_at = now
        newest = self._batches[-1].created_at if self._batches else ""
        for _ in range(arriving):
            batch = self._timed_batch(now, now)
            if batch.created_at <= newest:
                batch.created_at = format_created_at(
                    datetime.fromisoformat(newest) + timedelta(microseconds=1)
                )
                batch.changed()
            newest = batch.created_at
            self._by_id[batch.id] = batch
            self._batches.append(batch)
            self._evolving.append(batch)
            self.change_log.append((now, batch.id))
        for batch in self._evolving:
            if batch.behaviour == TIMED and self._update_timed(batch, now):
                self.change_log.append((now, batch.id))
        self._evolving = [b for b in self._evolving if b.behaviour == TIMED or b.behaviour in _EVOLVING]
        self._version += 1

    def _step(self) -> None:
        if self.activity:
            self._live()
            return
        rng = self._rng
        if self._fixed_now is not None:
            self._fixed_now += STEP
        for batch in self._evolving:
            if batch.behaviour == PENDING:
                if rng.random() < 0.5:
                    batch.behaviour = FAILING if rng.random() < 0.2 else PROGRESSING
                    batch.destinations = {
                        name: _destination(0, 0, batch.total) for name in self._destination_names()
                    }
                    batch.changed()
                continue
            for destination in batch.destinations.values():
                waiting = destination["in_progress"]
                if waiting == 0:
                    continue
                moved = min(waiting, rng.randint(1, max(1, math.ceil(destination["count"] * 0.3))))
                if batch.behaviour == PROGRESSING:
                    failed = 1 if rng.random() < 0.1 else 0
                    _move(destination, completed=moved - failed, failed=failed)
                else:  # failing: most of what moves fails
                    completed = moved // 10
                    _move(destination, completed=completed, failed=moved - completed)
            if all(d["in_progress"] == 0 for d in batch.destinations.values()):
                any_completed = any(d["completed"] for d in batch.destinations.values())
                batch.status = "Completed" if any_completed else "Failed"
                batch.behaviour = DONE
            batch.changed()
        self._evolving = [b for b in self._evolving if b.behaviour in _EVOLVING]
        if rng.random() < 0.5:
            kind = PENDING if rng.random() < 0.6 else PROGRESSING
            self._create_new(rng.randint(1, 3), behaviour=kind)
        self._version += 1

    # -- listing --

    def _view(
        self, sort_key: str, search: str, destination_name: str, destination_status: str
    ) -> list[_Batch]:
        """The batches matching the filters, ascending by sort_key then id.
        Cached until the data changes, so paging does not re-sort or re-filter."""
        filtered = bool(search or destination_name or destination_status)
        if sort_key == "created_at" and not filtered:
            return self._batches
        cache_key = (sort_key, search, destination_name, destination_status)
        cached = self._views.get(cache_key)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        if sort_key == "created_at":
            ordered = self._batches
        elif filtered:
            ordered = self._view(sort_key, "", "", "")
        else:
            ordered = sorted(self._batches, key=_sort_value(sort_key))
        if filtered:
            needle = search.casefold()
            view = [b for b in ordered if _matches(b, needle, destination_name, destination_status)]
        else:
            view = ordered
        if len(self._views) >= 32:
            self._views.clear()
        self._views[cache_key] = (self._version, view)
        return view

    def _list_page(self, params: Mapping[str, str]) -> tuple[int, Any, list[bytes]]:
        """One page of List Batches for already-decoded query params.

        Returns (status, payload, encoded items): on 200 the payload is the
        metadata and the items are the page's JSON; otherwise the payload is
        the error body.
        """
        errors: dict[str, list[str]] = {}
        page = _positive_int(params.get("page"), 1, "page", errors)
        page_size = _positive_int(params.get("page_size"), DEFAULT_PAGE_SIZE, "page_size", errors)
        raw_sort = params.get("sort") or ""
        descending = raw_sort.startswith("-")
        sort_key = raw_sort[1:] if descending else raw_sort
        if raw_sort and sort_key not in SORT_KEYS:
            errors["sort"] = [f"unknown sort key {sort_key!r}; use one of {', '.join(SORT_KEYS)}"]
        if errors:
            return 422, {"errors": errors}, []
        if not raw_sort:
            # The vendor's default: newest first, reported as created_at / 1.
            sort_key, descending, reported = "created_at", True, {"key": "created_at", "order": 1}
        else:
            reported = {"key": sort_key, "order": -1 if descending else 1}
            if sort_key == "created_at":
                plain_newest_first = self.faults.created_at_order != "oldest"
                if descending and self.faults.descending_honoured:
                    descending = not plain_newest_first
                else:
                    descending = plain_newest_first
        size = min(page_size, self.max_page_size)
        with self._lock:
            view = self._view(
                sort_key,
                params.get("search") or "",
                params.get("destination_name") or "",
                params.get("destination_status") or "",
            )
            total = len(view)
            offset = (page - 1) * size
            if descending:
                high = total - offset
                chosen = view[max(0, high - size) : high][::-1] if high > 0 else []
            else:
                chosen = view[offset : offset + size]
            encoded = [batch.json() for batch in chosen]
        page_count = max(1, math.ceil(total / size))
        metadata = {
            "pagination": {
                "current_page": page,
                "next_page": page + 1 if page < page_count else None,
                "page_count": page_count,
                "page_size": size,
                "prev_page": page - 1 if page > 1 else None,
                "total_count": total,
            },
            "sort": reported,
        }
        return 200, metadata, encoded

    def _add_before_serving(self, page: int) -> None:
        faults = self.faults
        self._listings_served += 1
        served = self._listings_served
        count = faults.add_when_serving.pop(page, 0)
        if page == 2:
            count += faults.add_every_listing
        if faults.create_every_listing and served % faults.create_every_listing == 0:
            count += 1
        if faults.delete_every_listing and served % faults.delete_every_listing == 0 and len(self._batches) > 1:
            victim = self._change_rng.choice(self._batches)
            self.deleted_while_listing.append(victim.id)
            self._remove(victim.id)
        if count:
            self._create_new(count)
        for batch_id in self.faults.remove_when_serving.pop(page, ()):
            self._remove(batch_id)

    # -- requests --

    def reset_log(self) -> None:
        """Forget the requests served so far (fault counters carry on)."""
        with self._lock:
            self.requests.clear()

    def respond(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        """Answer one HTTP request: faults first, then auth, then the API."""
        split = urlsplit(target)
        path = unquote(split.path)
        params = {
            key: values[-1] for key, values in parse_qs(split.query, keep_blank_values=True).items()
        }
        arrived = time.time()
        with self._lock:
            self._request_count += 1
            number = self._request_count
            fault = self._next_fault(number)
            advance = self.faults.auto_advance_every
            if advance and number % advance == 0:
                self._step()
        if fault in (None, "slow") and method == "GET" and path.rstrip("/") == "/v1/batch":
            # The listing changes as the request arrives, before any wait:
            # a slow answer the client gave up on changes nothing later.
            if headers.get("X-Inkit-API-Token") == self.token:
                page = params.get("page", "1")
                with self._lock:
                    self._add_before_serving(int(page) if _DIGITS.fullmatch(page) else 1)
        if self.faults.latency_seconds > 0:
            time.sleep(self.faults.latency_seconds)
        try:
            response = self._answer(method, path, params, headers, fault)
        except Exception as error:
            # Say so rather than drop the connection: it is a simulator bug or
            # data a test made malformed on purpose (say, a text total sorted).
            traceback.print_exc()
            response = _json_response(500, {"error": f"simulator: {type(error).__name__}: {error}"})
        with self._lock:
            self.requests.append(
                RequestRecord(
                    path, params, 0 if response.reset else response.status, fault, method, arrived
                )
            )
        return response

    def _next_fault(self, number: int) -> str | None:
        faults = self.faults
        if faults.queue:
            entry = faults.queue.pop(0)
            return None if entry is None or str(entry) == "200" else str(entry)
        if faults.rate_limit_every and number % faults.rate_limit_every == 0:
            return "429"
        if faults.bad_json_every and number % faults.bad_json_every == 0:
            return "bad-json"
        if faults.slow_every and number % faults.slow_every == 0:
            return "slow"
        if faults.error_rate and self._fault_rng.random() < faults.error_rate:
            return self._fault_rng.choice(("500", "502", "503"))
        return None

    def _answer(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        headers: Mapping[str, str],
        fault: str | None,
    ) -> Response:
        if fault == "reset":
            return Response(0, reset=True)
        if fault == "bad-json":
            return Response(200, _TRUNCATED_BODY)
        if fault == "slow":
            time.sleep(self.faults.slow_seconds)
        elif fault is not None:
            if not _DIGITS.fullmatch(fault) or not 400 <= int(fault) <= 599:
                return _json_response(500, {"error": f"simulator: unknown fault {fault!r}"})
            return _fault_response(int(fault), self.faults.retry_after)

        if headers.get("X-Inkit-API-Token") != self.token:
            return _json_response(401, {"error": "Unauthorized"})
        if method != "GET":
            return _json_response(405, {"error": "Method not allowed"}, (("Allow", "GET"),))
        parts = [part for part in path.split("/") if part]
        if parts == ["v1", "batch"]:
            status, payload, encoded = self._list_page(params)
            if status != 200:
                return _json_response(status, payload)
            body = (
                b'{"items": ['
                + b", ".join(encoded)
                + b'], "metadata": '
                + json.dumps(payload).encode()
                + b"}"
            )
            return Response(200, body)
        if len(parts) == 3 and parts[:2] == ["v1", "batch"]:
            with self._lock:
                batch = self._by_id.get(parts[2])
                body = batch.json() if batch is not None else None
            if body is None:
                return _json_response(404, {"error": "Batch not found"})
            return Response(200, body)
        return _json_response(404, {"error": "Not found"})

    # -- serving --

    def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False
    ) -> SimulatorServer:
        """Serve over HTTP from a background thread; port 0 picks a free one."""
        return SimulatorServer(self, host, port, verbose=verbose)


def _positive_int(raw: str | None, default: int, name: str, errors: dict[str, list[str]]) -> int:
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or int(raw) < 1:
        errors[name] = ["must be a positive integer"]
        return default
    return int(raw)


def _matches(batch: _Batch, needle: str, destination_name: str, destination_status: str) -> bool:
    if (
        needle
        and needle not in batch.id.casefold()
        and not (isinstance(batch.name, str) and needle in batch.name.casefold())
    ):
        return False
    # Tests may give a batch malformed destinations: they match no filter.
    destinations = batch.destinations if isinstance(batch.destinations, dict) else {}
    if destination_name:
        destination = destinations.get(destination_name)
        if not isinstance(destination, dict):
            return False
        return not destination_status or destination.get("status") == destination_status
    if destination_status:
        return any(
            isinstance(d, dict) and d.get("status") == destination_status
            for d in destinations.values()
        )
    return True


# HTTP -----------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients reuse connections
    server_version = "InkitSimulator/1.0"
    # Headers and body go out in two writes; without this, Nagle's algorithm
    # and delayed ACKs can stall each response by 40 ms.
    disable_nagle_algorithm = True
    # An idle keep-alive connection is closed after this many seconds.
    timeout = 120
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _handle(self) -> None:
        self._discard_body()
        response = self.server.simulator.respond(self.command, self.path, self.headers)
        try:
            self._write(response)
        except (ConnectionError, TimeoutError):
            # The client gave up (a read timeout during a "slow" fault).
            self.close_connection = True

    def _discard_body(self) -> None:
        # Nothing reads request bodies, but a keep-alive connection must be
        # past one before the next request can be read.
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= 1_000_000:
            self.rfile.read(int(length))
        elif length or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    def _write(self, response: Response) -> None:
        if response.reset:
            # Close with an RST and no answer at all, like a dead proxy.
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the benchmark opens many connections at once

    def __init__(self, address: tuple[str, int], simulator: InkitSimulator, *, verbose: bool):
        self.simulator = simulator
        self.verbose = verbose
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up on kept-alive connections so their threads end."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up is routine here (timeouts, stop()); stay quiet.
        if isinstance(sys.exception(), (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class SimulatorServer:
    """A running simulator: .url is the API base URL to give a client."""

    def __init__(self, simulator: InkitSimulator, host: str, port: int, *, verbose: bool = False):
        self.simulator = simulator
        self._server = _Server((host, port), simulator, verbose=verbose)
        self.host = host
        self.port: int = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}/v1"
        self._stopped = False
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"inkit-simulator-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, hang up on open connections and free the port."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> SimulatorServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
