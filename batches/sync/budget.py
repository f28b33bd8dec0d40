"""The request budget: every request to Inkit, retries and per-batch GETs
included, waits for a slot in INKIT_MAX_REQUESTS_PER_MINUTE.

A moving window (the `limits` library): never more than the budget in any
60 seconds. With REDIS_URL set the window lives in Redis, shared by every
thread of every worker process; without it, in memory, per process. A full
sweep also takes a slot in its own, smaller window (SWEEP_SHARE of the
budget), so quick syncs always find room. A 429 from Inkit halves this
process's pace (a minimum spacing between its requests) until Inkit stops
refusing; each minute without one raises it again towards the budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import cache
from hashlib import blake2b

from django.conf import settings
from limits import RateLimitItemPerSecond, storage, strategies

# The share of the budget a full sweep may use; the rest is the quick
# syncs' (a quick sync uses the whole budget, shared with the sweep).
SWEEP_SHARE = 0.75
NAMESPACE = "batchwatch-inkit"
SLOWEST_PACE = 1 / 16  # after repeated 429s: a sixteenth of the budget
RECOVER_EVERY_SECONDS = 60.0
LONGEST_WAIT = 1.0  # waits are cut into pieces so a stop is noticed
# The window is a minute and a second: the second covers the time between
# taking a slot and the request reaching Inkit (threads waiting for the GIL,
# connecting), so Inkit never counts more than the budget in its 60 s.
WINDOW_SECONDS = 61


def per_window(amount: int) -> RateLimitItemPerSecond:
    return RateLimitItemPerSecond(amount, WINDOW_SECONDS)


@cache
def _limiter(uri: str, account: str) -> strategies.MovingWindowRateLimiter:
    options = {}
    if uri.startswith("rediss://") and not settings.REDIS_SSL_VERIFY:
        options["ssl_cert_reqs"] = "none"
    return strategies.MovingWindowRateLimiter(
        storage.storage_from_string(uri, key_prefix=f"{NAMESPACE}-{account}", **options)
    )


def account_key() -> str:
    """The budget is the Inkit account's: one window per API base URL and
    token (a digest, never the token itself)."""
    digest = blake2b(
        f"{settings.INKIT_API_BASE_URL} {settings.INKIT_API_TOKEN}".encode(), digest_size=6
    )
    return digest.hexdigest()


def storage_uri() -> str:
    return settings.REDIS_URL or "memory://"


class Budget:
    """One process's gate to Inkit. Thread-safe."""

    def __init__(self, per_minute: int, uri: str | None = None):
        self.per_minute = per_minute
        self.limiter = _limiter(uri or storage_uri(), account_key())
        self.everything = per_window(per_minute)
        self.sweep = per_window(max(1, int(per_minute * SWEEP_SHARE)))
        self._pace = 1.0
        self._last_refusal = 0.0
        self._next_allowed = 0.0
        self._lock = threading.Lock()

    def wait(self, *, sweep: bool, keep_going: Callable[[float], None]) -> None:
        """Block until this request may go; keep_going(seconds) waits (and
        raises when the run must stop)."""
        self._space_out(keep_going)
        if sweep:
            self._take(self.sweep, "sweep", keep_going)
        self._take(self.everything, "all", keep_going)

    def refused(self) -> None:
        """Inkit answered 429: slow down."""
        with self._lock:
            self._pace = max(SLOWEST_PACE, self._pace / 2)
            self._last_refusal = time.monotonic()

    @property
    def pace(self) -> float:
        with self._lock:
            self._recover()
            return self._pace

    def used(self) -> int:
        """Requests in the last minute (by every process sharing it)."""
        stats = self.limiter.get_window_stats(self.everything, "all")
        return self.per_minute - stats.remaining

    def _recover(self) -> None:
        if self._pace < 1.0 and time.monotonic() - self._last_refusal >= RECOVER_EVERY_SECONDS:
            self._pace = min(1.0, self._pace * 2)
            self._last_refusal = time.monotonic()

    def _space_out(self, keep_going: Callable[[float], None]) -> None:
        with self._lock:
            self._recover()
            if self._pace >= 1.0:
                return
            spacing = 60.0 / (self.per_minute * self._pace)
            now = time.monotonic()
            start = max(now, self._next_allowed)
            self._next_allowed = start + spacing
        if start > now:
            keep_going(start - now)

    def _take(
        self, item: RateLimitItemPerSecond, name: str, keep_going: Callable[[float], None]
    ) -> None:
        while not self.limiter.hit(item, name):
            reset = self.limiter.get_window_stats(item, name).reset_time
            keep_going(min(LONGEST_WAIT, max(0.01, reset - time.time())))


def from_settings() -> Budget:
    return Budget(settings.INKIT_MAX_REQUESTS_PER_MINUTE)
