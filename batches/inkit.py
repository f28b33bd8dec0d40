"""A client for Inkit's List Batches API (GET /v1/batch).

It knows HTTP and Inkit's JSON, nothing of Django or the database: it turns
pages of the API into plain dataclasses, retrying what is worth retrying and
raising typed errors for the rest. Text Inkit sends (error bodies, values it
could not read) may quote the request: its errors hide the token
(batches.secrets, without Django).
"""

from __future__ import annotations

import email.utils
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import requests

from .secrets import scrub

USER_AGENT_NAME = "Batchwatch"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


# Errors ---------------------------------------------------------------------


class InkitError(Exception):
    """Anything that went wrong talking to Inkit."""

    transient = False


class InkitTransientError(InkitError):
    """A fault worth trying again later (rate limit, 5xx, timeout, bad JSON),
    still failing after every retry this client allows."""

    transient = True


class InkitRateLimited(InkitTransientError):
    pass


class InkitUnavailable(InkitTransientError):
    pass


class InkitAuthError(InkitError):
    """401/403: Inkit rejected the token. Retrying will not help."""


class InkitRequestError(InkitError):
    """Inkit refused the request itself (400, 404, 422)."""

    def __init__(self, message: str, *, status: int, parameter: str | None = None):
        super().__init__(message)
        self.status = status
        self.parameter = parameter


class InkitDataError(InkitError):
    """A response whose content would corrupt data if taken as it is."""


# Parsed data ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DestinationData:
    name: str
    count: int
    completed: int
    failed: int
    in_progress: int
    status: str | None


@dataclass(frozen=True, slots=True)
class BatchData:
    id: str
    name: str | None
    status: str
    total: int
    created_at: datetime
    destinations: tuple[DestinationData, ...]
    raw: dict[str, Any] = field(compare=False, repr=False)

    def sums(self) -> tuple[int, int, int, int]:
        """count, completed, failed, in_progress summed over destinations."""
        return (
            sum(d.count for d in self.destinations),
            sum(d.completed for d in self.destinations),
            sum(d.failed for d in self.destinations),
            sum(d.in_progress for d in self.destinations),
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of List Batches with the pagination metadata the server sent."""

    number: int
    page_size: int
    page_count: int
    total_count: int | None
    next_page: int | None
    items: list[BatchData]
    # Items the page held that could not be read, as "batch <id>: <reason>";
    # the rest of the page is still usable.
    rejected: list[str] = field(default_factory=list)
    sort_key: str | None = None
    sort_order: int | None = None

    @property
    def is_last(self) -> bool:
        return self.next_page is None or self.number >= self.page_count


# Parsing --------------------------------------------------------------------

_COUNT_FIELDS = ("count", "completed", "failed", "in_progress")


def _whole_number(value: Any, what: str) -> int:
    # bool is an int in Python but never a count in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} is {value!r}, not a whole number")
    if value < 0:
        raise ValueError(f"{what} is {value}, a negative count")
    return value


def _short_text(value: Any, what: str, *, limit: int = 100) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is {value!r}, not a non-empty string")
    if len(value) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    return value


def parse_created_at(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"created_at is {value!r}, not a date and time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"created_at {value!r} is not an ISO 8601 date and time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"created_at {value!r} has no time zone")
    return parsed.astimezone(timezone.utc)


def parse_destination(name: Any, value: Any) -> DestinationData:
    name = _short_text(name, "a destination name")
    if not isinstance(value, dict):
        raise ValueError(f"destination {name} is {type(value).__name__}, not an object")
    counts = {}
    for key in _COUNT_FIELDS:
        if key not in value:
            raise ValueError(f"destination {name} has no {key}")
        counts[key] = _whole_number(value[key], f"destinations.{name}.{key}")
    status = value.get("status")
    if status is not None and not isinstance(status, str):
        raise ValueError(f"destinations.{name}.status is {status!r}, not a string")
    return DestinationData(name=name, status=status, **counts)


def parse_batch(item: Any) -> BatchData:
    """Read one List Batches item: loose where the API is loose, strict where
    a wrong value would corrupt data. Raises ValueError naming the field."""
    if not isinstance(item, dict):
        raise ValueError(f"an item is {type(item).__name__}, not an object")
    batch_id = _short_text(item.get("id"), "id")
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        name = json.dumps(name)  # Keep what was sent, visibly, rather than guess.
    destinations = item.get("destinations")
    if destinations is None:
        destinations = {}
    if not isinstance(destinations, dict):
        raise ValueError(f"destinations is {type(destinations).__name__}, not an object")
    return BatchData(
        id=batch_id,
        name=name,
        status=_short_text(item.get("status"), "status"),
        total=_whole_number(item.get("total"), "total"),
        created_at=parse_created_at(item.get("created_at")),
        destinations=tuple(
            parse_destination(key, value) for key, value in sorted(destinations.items())
        ),
        raw=item,
    )


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number")
    return value


def parse_page(body: Any, *, requested_page: int) -> Page:
    """Read a List Batches response body. A page without items or pagination
    metadata is refused whole; a bad item is set aside in Page.rejected."""
    where = f"page {requested_page}"
    if not isinstance(body, dict):
        raise InkitDataError(f"{where}: the response is not a JSON object")
    items = body.get("items")
    if not isinstance(items, list):
        raise InkitDataError(f"{where}: the response has no items list")
    metadata = body.get("metadata")
    pagination = metadata.get("pagination") if isinstance(metadata, dict) else None
    if not isinstance(pagination, dict):
        raise InkitDataError(f"{where}: the response has no metadata.pagination")
    try:
        number = _optional_int(pagination.get("current_page"))
        page_size = _optional_int(pagination.get("page_size"))
        page_count = _optional_int(pagination.get("page_count"))
        total_count = _optional_int(pagination.get("total_count"))
        next_page = _optional_int(pagination.get("next_page"))
    except ValueError as error:
        raise InkitDataError(f"{where}: bad pagination metadata: {error}") from None
    if page_count is None or page_size is None:
        raise InkitDataError(f"{where}: the pagination metadata has no page_count or page_size")
    sort = metadata.get("sort") if isinstance(metadata.get("sort"), dict) else {}

    parsed: list[BatchData] = []
    rejected: list[str] = []
    for item in items:
        try:
            parsed.append(parse_batch(item))
        except ValueError as error:
            batch_id = item.get("id") if isinstance(item, dict) else None
            label = f"batch {batch_id}" if isinstance(batch_id, str) else "an item"
            rejected.append(f"{label}: {error}")
    return Page(
        number=number if number is not None else requested_page,
        page_size=page_size,
        page_count=page_count,
        total_count=total_count,
        next_page=next_page,
        items=parsed,
        rejected=rejected,
        sort_key=sort.get("key") if isinstance(sort.get("key"), str) else None,
        sort_order=sort.get("order") if isinstance(sort.get("order"), int) else None,
    )


# The client -----------------------------------------------------------------


@dataclass
class RequestStats:
    """What the client did, for the sync run's record. Thread-safe."""

    requests: int = 0
    retries: int = 0
    responses: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, outcome: str, *, retry: bool) -> None:
        with self._lock:
            self.requests += 1
            self.responses[outcome] += 1
            if retry:
                self.retries += 1


class _Retry(Exception):
    """Internal: this attempt failed in a way worth another try."""

    def __init__(self, message: str, *, wait: float | None = None, rate_limited: bool = False):
        super().__init__(message)
        self.wait = wait
        self.rate_limited = rate_limited


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _error_detail(response: requests.Response, secrets: tuple[str, ...]) -> tuple[str, str | None]:
    """A short, safe description of an error body, and the parameter it
    names if it names one. The body's shape is undocumented: try the usual
    ones. It may echo the request, token and all: the secrets are hidden
    before the text is cut short, so no part of one survives the cut."""
    try:
        body = response.json()
    except ValueError:
        text = scrub(response.text, secrets).strip().replace("\n", " ")
        return (text[:200], None)
    parameter = None
    message = ""
    if isinstance(body, dict):
        for key in ("errors", "detail", "error", "message"):
            value = body.get(key)
            if isinstance(value, dict) and value:
                parameter = str(next(iter(value)))
                message = json.dumps(value)
                break
            if isinstance(value, list) and value:
                first = value[0]
                if isinstance(first, dict):
                    loc = first.get("loc") or first.get("param") or first.get("field")
                    if isinstance(loc, list) and loc:
                        parameter = str(loc[-1])
                    elif isinstance(loc, str):
                        parameter = loc
                    message = str(first.get("msg") or first.get("message") or first)
                else:
                    message = str(first)
                break
            if isinstance(value, str) and value:
                message = value
                break
    message = scrub(message or json.dumps(body), secrets)[:200]
    if parameter is not None:
        parameter = scrub(parameter, secrets)[:100]
    return (message, parameter)


class InkitClient:
    """Talks to Inkit's List Batches API over one requests.Session.

    Retries 429, 500, 502, 503, 504, timeouts, connection errors and bodies
    that are not JSON with exponential backoff and jitter, honouring
    Retry-After, bounded by max_retries and max_retry_seconds. A 429 seen by
    any thread holds back every thread sharing the client, so concurrent
    page fetches do not defeat the rate limit.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        version: str = "dev",
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_retries: int = 5,
        max_retry_seconds: float = 120.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        pool_size: int = 10,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.max_retry_seconds = max_retry_seconds
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        self._clock = clock
        self._hold_until = 0.0
        self._hold_lock = threading.Lock()
        # What the text of an error must never show.
        self._secrets = (token,)
        self.stats = RequestStats()

        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update(
            {
                "X-Inkit-API-Token": token,
                "Accept": "application/json",
                "User-Agent": f"{USER_AGENT_NAME}/{version} (+python-requests)",
            }
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> InkitClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- public API --

    def list_batches(
        self,
        *,
        page: int = 1,
        page_size: int | None = None,
        sort: str | None = None,
        search: str | None = None,
        destination_name: str | None = None,
        destination_status: str | None = None,
    ) -> Page:
        """Fetch one page of List Batches."""
        params = {
            "page": page,
            "page_size": page_size,
            "sort": sort,
            "search": search,
            "destination_name": destination_name,
            "destination_status": destination_status,
        }
        params = {key: value for key, value in params.items() if value is not None}
        body = self._get_json("/batch", params, what=f"page {page}")
        try:
            page_read = parse_page(body, requested_page=page)
        except InkitDataError as error:
            raise InkitDataError(scrub(str(error), self._secrets)) from None
        if page_read.rejected:  # Each reason quotes what Inkit sent.
            page_read.rejected[:] = [scrub(reason, self._secrets) for reason in page_read.rejected]
        return page_read

    def get_batch(self, batch_id: str) -> BatchData | None:
        """One batch by id (GET /v1/batch/{id}); None when Inkit answers 404."""
        what = f"batch {batch_id}"
        try:
            body = self._get_json(f"/batch/{quote(batch_id, safe='')}", {}, what=what)
        except InkitRequestError as error:
            if error.status == 404:
                return None
            raise
        # The reference shows only the list; accept the item bare or wrapped
        # in one object, as APIs commonly answer a single resource.
        if isinstance(body, dict) and "id" not in body and len(body) == 1:
            body = next(iter(body.values()))
        try:
            return parse_batch(body)
        except ValueError as error:
            raise InkitDataError(scrub(f"{what}: {error}", self._secrets)) from None

    def iter_pages(self, **params: Any) -> Iterator[Page]:
        """Every page of List Batches in turn, following the pagination the
        server reports on each page (it may cap page_size or grow page_count)."""
        number = params.pop("page", 1)
        while True:
            page = self.list_batches(page=number, **params)
            yield page
            if page.is_last or not page.items:
                return
            number = page.next_page if page.next_page and page.next_page > number else number + 1

    # -- transport --

    def _get_json(self, path: str, params: dict[str, Any], *, what: str) -> Any:
        url = f"{self.base_url}{path}"
        started = self._clock()
        attempt = 0
        while True:
            self._wait_for_hold()
            try:
                return self._attempt(url, params, what=what, retry=attempt > 0)
            except _Retry as fault:
                attempt += 1
                delay = self._backoff(attempt, fault.wait)
                elapsed = self._clock() - started
                if attempt > self.max_retries or elapsed + delay > self.max_retry_seconds:
                    error = InkitRateLimited if fault.rate_limited else InkitUnavailable
                    asked = f"; Inkit asked to wait {fault.wait:.0f}s" if fault.wait else ""
                    raise error(
                        f"{what}: {fault} (gave up after {attempt} attempts in {elapsed:.0f}s{asked})"
                    ) from None
                if fault.rate_limited:
                    self._hold(delay)  # Waited out at the top of the loop, by every thread.
                else:
                    self._sleep(delay)

    def _attempt(self, url: str, params: dict[str, Any], *, what: str, retry: bool) -> Any:
        try:
            response = self.session.get(url, params=params, timeout=self.timeout)
        except requests.Timeout:
            self.stats.record("timeout", retry=retry)
            raise _Retry("Inkit did not answer in time") from None
        except requests.ConnectionError:
            self.stats.record("connection", retry=retry)
            raise _Retry("could not connect to Inkit") from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError):
            self.stats.record("connection", retry=retry)
            raise _Retry("the connection broke off in the middle of Inkit's answer") from None
        status = response.status_code
        if status in RETRYABLE_STATUSES:
            self.stats.record(str(status), retry=retry)
            wait = parse_retry_after(response.headers.get("Retry-After"))
            if status == 429:
                raise _Retry("Inkit's rate limit was exceeded (429)", wait=wait, rate_limited=True)
            raise _Retry(f"Inkit answered {status}", wait=wait)
        if status in (401, 403):
            self.stats.record(str(status), retry=retry)
            raise InkitAuthError(
                f"Inkit rejected the API token ({status}): check INKIT_API_TOKEN and its role"
            )
        if status >= 400:
            self.stats.record(str(status), retry=retry)
            detail, parameter = _error_detail(response, self._secrets)
            if status == 422:
                refused = f"parameter {parameter!r}" if parameter else "a parameter"
                message = f"{what}: Inkit refused {refused} (422): {detail}"
            else:
                message = f"{what}: Inkit answered {status}: {detail}"
            raise InkitRequestError(message, status=status, parameter=parameter)
        try:
            body = response.json()
        except ValueError:
            self.stats.record("bad-json", retry=retry)
            raise _Retry("the response was not valid JSON") from None
        self.stats.record(str(status), retry=retry)
        return body

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _hold(self, seconds: float) -> None:
        with self._hold_lock:
            self._hold_until = max(self._hold_until, self._clock() + seconds)

    def _wait_for_hold(self) -> None:
        with self._hold_lock:
            remaining = self._hold_until - self._clock()
        if remaining > 0:
            self._sleep(remaining)
