"""/healthz and /metrics: what the platform, uptime monitors and Prometheus ask.

Neither needs a login: /healthz says nothing secret (no URL, no error text,
no token) and /metrics has its own bearer token, METRICS_TOKEN. Both are
cheap enough to be polled: a handful of indexed queries, no table scans.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from batches.models import COMPLETED, IN_PROGRESS, STALE_AFTER_SYNC_INTERVALS, Batch, SyncRun
from batches.secrets import scrub

log = logging.getLogger(__name__)

# A probe must answer well inside the platform's own timeout (a few seconds).
BROKER_TIMEOUT_SECONDS = 2.0
# all: everything; web: what serving pages needs (see healthz()).
HEALTH_SCOPES = ("all", "web")
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _redacted(error: BaseException) -> str:
    """An exception as one log line, without a secret (a driver's message
    may hold its URL with the password)."""
    return f"{type(error).__name__}: {scrub(' '.join(str(error).split()))}"


# Checks ---------------------------------------------------------------------


def database_problem() -> str | None:
    """None when the database answers a trivial query; else why not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:
        log.warning("health: the database is unreachable: %s", _redacted(error))
        return "the database is unreachable"
    return None


def broker_problem() -> str | None:
    """None when the Celery broker takes a connection; else why not.

    A fresh connection with short timeouts, so an unreachable broker costs a
    probe about BROKER_TIMEOUT_SECONDS, never a hung request. The embedded
    filesystem broker is fine when its folders are writable.
    """
    from dashboard.celery import app

    if app.conf.broker_url.startswith("filesystem://"):
        options = app.conf.broker_transport_options
        folders = {options["data_folder_in"], options["data_folder_out"], options["control_folder"]}
        if all(os.access(folder, os.W_OK | os.X_OK) for folder in folders):
            return None
        log.warning("health: the filesystem broker's folders are not writable: %s", sorted(folders))
        return "the broker's folders are not writable"

    options = {
        **app.conf.broker_transport_options,
        "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
        "socket_timeout": BROKER_TIMEOUT_SECONDS,
    }
    try:
        with app.connection_for_write(
            transport_options=options, connect_timeout=BROKER_TIMEOUT_SECONDS
        ) as broker:
            # No retries: one attempt (for Redis, a connect and a PING).
            broker.ensure_connection(max_retries=0)
    except Exception as error:
        log.warning("health: the broker is unreachable: %s", _redacted(error))
        return "the broker is unreachable"
    return None


@dataclass
class LatestSyncs:
    """The last finished sync and the last successful one, as of `now`: what
    /healthz and /metrics report about syncing."""

    now: datetime
    last: SyncRun | None
    last_success: SyncRun | None
    interval_seconds: int = field(default_factory=lambda: settings.SYNC_INTERVAL_SECONDS)

    @classmethod
    def load(cls, now: datetime | None = None) -> LatestSyncs:
        # Both served by SyncRun's indexes on -started_at (the second partial).
        last = SyncRun.objects.finished().order_by("-started_at").first()
        if last is not None and last.outcome == SyncRun.Outcome.SUCCEEDED:
            success = last
        else:
            success = SyncRun.objects.last_success()
        return cls(now=now or timezone.now(), last=last, last_success=success)

    @property
    def stale_after_seconds(self) -> int:
        return int(SyncRun.stale_after().total_seconds())

    def age_seconds(self, run: SyncRun | None) -> float | None:
        if run is None or run.finished_at is None:
            return None
        return max(0.0, (self.now - run.finished_at).total_seconds())

    def problem(self) -> str | None:
        """Why the synced data cannot be trusted as current, if it cannot.

        No successful sync yet counts as a problem however long the app has
        been up: the web process cannot tell a fresh deploy from a worker or
        beat that never started, and there is no data to show either way.
        (Platform probes use ?scope=web, which leaves this out.)
        """
        if self.last_success is None:
            return "no sync has succeeded yet"
        if self.last_success.is_stale(self.now):
            age = self.age_seconds(self.last_success) or 0.0
            return (
                f"the last successful sync finished {age:.0f} s ago, more than "
                f"{STALE_AFTER_SYNC_INTERVALS} sync intervals ({self.stale_after_seconds} s)"
            )
        return None

    def describe(self, run: SyncRun | None) -> dict | None:
        if run is None:
            return None
        duration = run.duration
        return {
            "id": run.pk,
            "outcome": run.outcome,
            "trigger": run.trigger,
            "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "age_seconds": _rounded(self.age_seconds(run)),
            "duration_seconds": _rounded(duration.total_seconds() if duration else None),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# /healthz -------------------------------------------------------------------


@login_not_required
@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database, the broker and the sync are healthy; 503 with
    the reasons when not. ?scope=web checks only what serving pages needs
    (the database): the probe for a platform's router, which must not take
    the dashboard offline because Inkit or the worker is down."""
    scope = request.GET.get("scope", "all")
    if scope not in HEALTH_SCOPES:
        return JsonResponse(
            {"error": f"scope must be one of {', '.join(HEALTH_SCOPES)}"}, status=400
        )
    web_only = scope == "web"
    checks: dict[str, str] = {}
    reasons: list[str] = []
    sync: dict | None = None

    problem = database_problem()
    checks["database"] = "ok" if problem is None else "failing"
    if problem:
        reasons.append(problem)

    if not web_only:
        problem = broker_problem()
        checks["broker"] = "ok" if problem is None else "failing"
        if problem:
            reasons.append(problem)

        if checks["database"] == "ok":
            syncs = LatestSyncs.load()
            problem = syncs.problem()
            checks["sync"] = "ok" if problem is None else "failing"
            if problem:
                reasons.append(problem)
            sync = {
                "interval_seconds": syncs.interval_seconds,
                "stale_after_seconds": syncs.stale_after_seconds,
                "last_run": syncs.describe(syncs.last),
                "last_success": syncs.describe(syncs.last_success),
            }
        else:
            checks["sync"] = "unknown"

    healthy = not reasons
    body: dict = {"status": "ok" if healthy else "failing", "reasons": reasons, "checks": checks}
    if sync is not None:
        body["sync"] = sync
    body["version"] = settings.VERSION
    return JsonResponse(body, status=200 if healthy else 503)


# /metrics -------------------------------------------------------------------


def _bearer_token_matches(request: HttpRequest, token: str) -> bool:
    scheme, _, provided = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant time: the comparison must not tell how much of a guess was right.
    return hmac.compare_digest(provided.strip().encode(), token.encode())


@login_not_required
@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition, for a scraper holding METRICS_TOKEN.

    Not found while METRICS_TOKEN is unset, so an instance that has not
    opted in does not even show the endpoint exists.
    """
    token = settings.METRICS_TOKEN
    if not token:
        return HttpResponseNotFound("Not found\n", content_type="text/plain")
    if not _bearer_token_matches(request, token):
        response = HttpResponse("Unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="batchwatch metrics"'
        return response
    return HttpResponse(render_metrics(), content_type=PROMETHEUS_CONTENT_TYPE)


class Exposition:
    """Prometheus text format (version 0.0.4), written by hand: a few
    gauges do not need a client library and its process-wide registry."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def gauge(
        self, name: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    pairs = (f'{key}="{_escape_label_value(value)}"' for key, value in labels.items())
    return "{" + ",".join(pairs) + "}"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _is_error(status: str) -> bool:
    """Anything but a 2xx: 4xx, 5xx and failures without a status (timeouts)."""
    return not (status.isdigit() and status.startswith("2"))


def render_metrics(now: datetime | None = None) -> str:
    """The metrics, from the last sync's summary and a few indexed queries.

    The API figures are the last finished sync's, as gauges. They are kept
    per run (SyncRun.api_responses), and a counter would have to sum every
    run ever recorded on every scrape, a scan that grows for ever; the last
    run's figures are exact and cheap, and a scrape interval at or below
    SYNC_INTERVAL_SECONDS sees every run.
    """
    out = Exposition()
    out.gauge("batchwatch_info", "Batchwatch's version.", [({"version": settings.VERSION}, 1)])

    summary = SyncRun.objects.last_summary()
    if summary is not None:
        by_status = {IN_PROGRESS: 0, COMPLETED: 0, **summary.get("by_status", {})}
        out.gauge(
            "batchwatch_batches",
            "Batches Inkit lists, by status, as of the last sync that changed any.",
            (({"status": status}, count) for status, count in sorted(by_status.items())),
        )
        out.gauge(
            "batchwatch_documents",
            "Documents in the batches Inkit lists, as of the last sync that changed any.",
            [({}, summary.get("documents", 0))],
        )
        out.gauge(
            "batchwatch_failed_documents",
            "Documents that failed to generate, as of the last sync that changed any.",
            [({}, summary.get("failed_documents", 0))],
        )
        out.gauge(
            "batchwatch_in_progress_documents",
            "Documents still generating, as of the last sync that changed any.",
            [({}, summary.get("in_progress_documents", 0))],
        )

    # Served by the partial index batch_stuck_idx: counts only stuck rows.
    out.gauge(
        "batchwatch_stuck_batches",
        f"In Progress batches without progress for STUCK_AFTER_MINUTES "
        f"({settings.STUCK_AFTER_MINUTES}).",
        [({}, Batch.objects.stuck(now).count())],
    )

    syncs = LatestSyncs.load(now)
    out.gauge(
        "batchwatch_sync_interval_seconds",
        "How often beat starts a sync (SYNC_INTERVAL_SECONDS).",
        [({}, syncs.interval_seconds)],
    )
    last = syncs.last
    if last is not None and last.finished_at is not None:
        out.gauge(
            "batchwatch_last_sync_timestamp_seconds",
            "When the last finished sync (succeeded or failed) finished, in Unix time.",
            [({}, last.finished_at.timestamp())],
        )
        out.gauge(
            "batchwatch_last_sync_age_seconds",
            "Seconds since the last finished sync finished.",
            [({}, syncs.age_seconds(last) or 0.0)],
        )
        out.gauge(
            "batchwatch_last_sync_duration_seconds",
            "How long the last finished sync took.",
            [({}, last.duration.total_seconds() if last.duration else 0.0)],
        )
        out.gauge(
            "batchwatch_last_sync_outcome",
            "The last finished sync's outcome: 1 for the outcome it had, 0 for the other.",
            (
                ({"outcome": outcome}, int(last.outcome == outcome))
                for outcome in (SyncRun.Outcome.SUCCEEDED, SyncRun.Outcome.FAILED)
            ),
        )
        out.gauge(
            "batchwatch_last_sync_api_requests",
            "HTTP requests the last finished sync made to Inkit, retries included.",
            [({}, last.api_requests)],
        )
        out.gauge(
            "batchwatch_last_sync_api_retries",
            "Requests the last finished sync retried.",
            [({}, last.api_retries)],
        )
        responses = {
            str(status): int(count) for status, count in (last.api_responses or {}).items()
        }
        out.gauge(
            "batchwatch_last_sync_api_responses",
            "Inkit's answers to the last finished sync, by HTTP status "
            "(or timeout, connection, bad-json when there was none).",
            (({"status": status}, count) for status, count in sorted(responses.items())),
        )
        out.gauge(
            "batchwatch_last_sync_api_errors",
            "Inkit's answers to the last finished sync that were not a 2xx "
            "(the error statuses of batchwatch_last_sync_api_responses, summed).",
            [({}, sum(count for status, count in responses.items() if _is_error(status)))],
        )
    success = syncs.last_success
    if success is not None and success.finished_at is not None:
        out.gauge(
            "batchwatch_last_success_timestamp_seconds",
            "When the last successful sync finished, in Unix time.",
            [({}, success.finished_at.timestamp())],
        )
        out.gauge(
            "batchwatch_last_success_age_seconds",
            "Seconds since the last successful sync finished.",
            [({}, syncs.age_seconds(success) or 0.0)],
        )
    return out.text()
