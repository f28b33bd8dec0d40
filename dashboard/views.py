"""The dashboard's pages. HTTP glue only: validation lives in forms.py, the
queries in batches.models' QuerySets."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout as auth_logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, push_url

from batches import trends as batch_trends
from batches.models import IN_PROGRESS, Batch, SyncRun
from batches.tasks import queue_sync

from .charts import run_hours
from .export import csv_lines, destination_names
from .forms import PAGE_SIZES, SORT_CHOICES, BatchListForm, SyncFollowForm
from .paging import COUNT_CAP, CappedPage, fetch_page
from .rows import batch_rows
from .sync_status import POLL_SECONDS, SyncStatus
from .triage import Triage, stuck_soon_minutes
from .triage import items as triage_items

# Sortable columns of the list: (sort key, heading, what it counts, first
# click sorts descending). Total counts documents; the others count
# deliveries, summed over destinations (a document sent to two destinations
# is two), which is why Completed can exceed Total.
SORT_COLUMNS = [
    ("name", "Batch", "", False),
    ("status", "Status", "", False),
    ("total", "Docs", "documents", True),
    ("completed", "Completed", "deliveries", True),
    ("failed", "Failed", "deliveries", True),
    ("in_progress", "In progress", "deliveries", True),
    ("failure_rate", "Failed %", "of ended", True),
    ("created_at", "Created", "", True),
    # Oldest progress first: that is where stuck batches are.
    ("last_progress_at", "Progress", "", False),
]
EVENTS_SHOWN = 200
SYNC_RUNS_SHOWN = 100


# HX-Trigger too: the live refresh and the filter form get the partial
# without the out-of-band form.
@vary_on_headers("HX-Request", "HX-Trigger")
def batch_list(request: HttpRequest) -> HttpResponse:
    """The list (/), as a page or, for htmx, as the #table partial."""
    form = BatchListForm(request.GET)
    if not form.is_valid():
        context = _list_context(request, form, problems=form.problems())
        return _render_list(request, context, status=400)

    now = timezone.now()
    requested = form.cleaned_data["page"]
    # Whole rows: the raw item has the destinations, and skipping the few
    # other columns with only() made fetching slower, not faster.
    page, batches = fetch_page(form.batches(now), requested, form.cleaned_data["page_size"], COUNT_CAP)
    if page.number < requested and page.capped:
        form.notices.append(
            f"Paging stops at {COUNT_CAP:,} batches, so page {requested} cannot be shown; "
            f"showing the last page, {page.number}. Narrow the filters, change the sort, "
            "or export the CSV for the rest."
        )
    elif page.number < requested:
        form.notices.append(f"There is no page {requested}; showing the last page, {page.number}.")
    rows = batch_rows(batches, now, form.query(page.number).urlencode())
    context = _list_context(request, form, page=page, rows=rows, now=now)
    response = _render_list(request, context)
    if context.get("fragment") and not context["refresh"]:
        # The address bar shows the canonical URL of what is shown, not the
        # form's raw fields (empty ones, a page past the end).
        query = context["query_string"]
        push_url(response, reverse("batch-list") + (f"?{query}" if query else ""))
    return response


def _render_list(request: HttpRequest, context: dict, status: int = 200) -> HttpResponse:
    context["refresh"] = False
    # A history restore asks for the whole page even though htmx sends it.
    if request.htmx and not request.htmx.history_restore_request:
        context["fragment"] = True
        # The live refresh leaves the filter form alone (whatever is being
        # typed or chosen in it); navigation re-renders it to match the URL.
        context["refresh"] = request.htmx.trigger == "live-refresh"
        context["from_form"] = request.htmx.trigger == "filters"
        return render(request, "dashboard/batch_list.html#table", context, status=status)
    return render(request, "dashboard/batch_list.html", context, status=status)


def _list_context(
    request: HttpRequest,
    form: BatchListForm,
    *,
    page: CappedPage | None = None,
    rows: list[dict] | None = None,
    now: datetime | None = None,
    problems: list[str] | None = None,
) -> dict:
    now = now or timezone.now()
    summary = SyncRun.objects.last_summary()
    triage = Triage.load(now, summary)
    data = form.cleaned_data if page is not None else {}
    query = form.query(page.number) if page is not None else request.GET.copy()
    return {
        "form": form,
        "data": data,
        "problems": problems or [],
        "notices": form.notices,
        "page": page,
        "rows": rows or [],
        "now": now,
        "query": query,
        "query_string": query.urlencode(),
        "list_path": reverse("batch-list"),
        "columns": _sort_columns(form, query) if page is not None else [],
        "summary": summary,
        "summary_statuses": _ordered_statuses((summary or {}).get("by_status", {})),
        "stuck_count": triage.stuck_count,
        "triage": triage,
        "attention": triage_items(triage, reverse("batch-list")),
        "sort_choices": SORT_CHOICES,
        "count_cap": COUNT_CAP,
        "status_options": _status_options(summary, data.get("status", [])),
        "destination_options": _destination_options(summary, data.get("destination", "")),
        "destination_status_options": _distinct(
            ["completed", "in_progress", data.get("destination_status", "")]
        ),
        "page_sizes": PAGE_SIZES,
        "sync": SyncStatus.load(),
        "refresh_seconds": settings.DASHBOARD_REFRESH_SECONDS,
        "stuck_after_minutes": settings.STUCK_AFTER_MINUTES,
        "stuck_soon_minutes": stuck_soon_minutes(),
        "overdue_after_hours": settings.OVERDUE_AFTER_HOURS,
    }


def _sort_columns(form: BatchListForm, query) -> list[dict]:
    """Each sortable heading: its link (the other direction when it is the
    current sort) and its aria-sort."""
    current, descending = form.sort_key, form.descending
    columns = []
    for key, label, unit, descending_first in SORT_COLUMNS:
        if key == current:
            next_descending = not descending
            aria_sort = "descending" if descending else "ascending"
        else:
            next_descending = descending_first
            aria_sort = "none"
        link = query.copy()
        link.pop("page", None)
        link["sort"] = f"-{key}" if next_descending else key
        columns.append(
            {
                "key": key,
                "label": label,
                "unit": unit,
                "aria_sort": aria_sort,
                "query": link.urlencode(),
            }
        )
    return columns


STATUS_ORDER = [IN_PROGRESS, "Completed", "Failed"]


def _ordered_statuses(by_status: dict[str, int]) -> list[tuple[str, int]]:
    """Known statuses first in a fixed order, then any others by name."""
    known = [(status, by_status[status]) for status in STATUS_ORDER if status in by_status]
    others = sorted((s, n) for s, n in by_status.items() if s not in STATUS_ORDER)
    return known + others


def _status_options(summary: dict | None, selected: list[str]) -> list[str]:
    seen = [status for status, _ in _ordered_statuses((summary or {}).get("by_status", {}))]
    return _distinct([*STATUS_ORDER[:2], *seen, *selected])


def _destination_options(summary: dict | None, selected: str) -> list[str]:
    names = [dest["name"] for dest in (summary or {}).get("destinations", [])]
    return sorted(_distinct([*names, selected]))


def _distinct(values: list[str]) -> list[str]:
    return [value for i, value in enumerate(values) if value and value not in values[:i]]


def batch_detail(request: HttpRequest, batch_id: str) -> HttpResponse:
    """One batch: every field, destinations, history and the raw JSON."""
    batch = get_object_or_404(Batch, pk=batch_id)
    events = list(batch.events.order_by("-seen_at", "-pk")[: EVENTS_SHOWN + 1])
    # The list's filters ride along so "Back to the list" returns to them.
    back = BatchListForm(request.GET)
    back_query = back.query(back.cleaned_data["page"]).urlencode() if back.is_valid() else ""
    now = timezone.now()
    context = {
        "batch": batch,
        "destinations": list(batch.destinations.order_by("name")),
        "events": events[:EVENTS_SHOWN],
        "more_events": len(events) > EVENTS_SHOWN,
        "events_shown": EVENTS_SHOWN,
        "stuck": batch.is_stuck(now),
        "overdue": batch.is_overdue(now),
        "stuck_in": batch.stuck_in(now),
        "seen_progressing": batch.seen_progressing(),
        "now": now,
        "raw_json": json.dumps(batch.raw, indent=2, sort_keys=True, ensure_ascii=False),
        "back_url": reverse("batch-list") + (f"?{back_query}" if back_query else ""),
        "stuck_after_minutes": settings.STUCK_AFTER_MINUTES,
        "overdue_after_hours": settings.OVERDUE_AFTER_HOURS,
        "sync": SyncStatus.load(),
    }
    return render(request, "dashboard/batch_detail.html", context)


@require_GET
def trends(request: HttpRequest) -> HttpResponse:
    """/trends/: per destination, documents completed and failed per hour (24 h)
    and per day (30 days); batches created; each sync run's duration and
    requests. One query per chart, over the rollups and SyncRun, never the
    batch table."""
    now = timezone.now()
    by_hour = batch_trends.destinations_by_hour(now)
    by_day = batch_trends.destinations_by_day(now)
    created_by_hour, created_by_day = batch_trends.batches_created(now)
    runs = batch_trends.sync_runs(now)
    names = sorted(set(by_hour) | set(by_day))
    context = {
        "now": now,
        "destinations": [
            {"name": name, "hours": by_hour.get(name), "days": by_day.get(name)} for name in names
        ],
        "created_by_hour": created_by_hour,
        "created_by_day": created_by_day,
        "runs": runs,
        "run_hours": run_hours(runs),
        "retention_days": settings.TRENDS_RETENTION_DAYS,
        "sync": SyncStatus.load(),
    }
    return render(request, "dashboard/trends.html", context)


@require_GET
def batch_export(request: HttpRequest) -> HttpResponse:
    """/export.csv: the whole filtered, sorted set, streamed."""
    form = BatchListForm(request.GET)
    if not form.is_valid():
        # A file download has nowhere to show a notice: say what is wrong.
        text = "The export's parameters are not valid:\n" + "\n".join(form.problems()) + "\n"
        return HttpResponse(text, status=400, content_type="text/plain; charset=utf-8")
    now = timezone.now()
    response = StreamingHttpResponse(
        csv_lines(form.batches(now), destination_names(), now),
        content_type="text/csv; charset=utf-8",
    )
    stamp = now.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="batches-{stamp}.csv"'
    return response


def sync_runs(request: HttpRequest) -> HttpResponse:
    """/sync-runs/: recent sync runs, newest first; ?before=<id> for older."""
    runs = SyncRun.objects.with_alert_deliveries().order_by("-started_at", "-pk").defer("summary")
    before = request.GET.get("before", "")
    # A run id fits 19 digits; int() refuses more than 4,300 with a ValueError.
    if before.isascii() and before.isdigit() and len(before) <= 19:
        runs = runs.filter(pk__lt=int(before))
    runs = list(runs[: SYNC_RUNS_SHOWN + 1])
    context = {
        "runs": runs[:SYNC_RUNS_SHOWN],
        "older": runs[SYNC_RUNS_SHOWN - 1].pk if len(runs) > SYNC_RUNS_SHOWN else None,
        "paged": bool(before),
        "now": timezone.now(),
        "sync": SyncStatus.load(),
    }
    return render(request, "dashboard/sync_runs.html", context)


@require_POST
def sync_now(request: HttpRequest) -> HttpResponse:
    """Queue a quick sync (staff only) and answer with a header that follows it."""
    if not request.user.is_staff:
        raise PermissionDenied("Only staff can start a sync.")
    after = SyncRun.objects.newest_id()
    transaction.on_commit(lambda: queue_sync(SyncRun.Trigger.MANUAL))
    if request.htmx:
        return _sync_status(request, SyncStatus.load(after=after, queued_at=timezone.now()))
    messages.success(request, "Sync queued: the header shows its progress.")
    back = request.POST.get("next", "")
    # A path on this site only; and no redirect(), which would take "0" for
    # the name of a view.
    if not back.startswith("/") or not url_has_allowed_host_and_scheme(
        back, {request.get_host()}, request.is_secure()
    ):
        back = reverse("batch-list")
    return HttpResponseRedirect(back)


@require_POST
def start_full_sweep(request: HttpRequest) -> HttpResponse:
    """Queue a full sweep (staff only) from /sync-runs/."""
    if not request.user.is_staff:
        raise PermissionDenied("Only staff can start a full sweep.")
    transaction.on_commit(lambda: queue_sync(SyncRun.Trigger.MANUAL, kind=SyncRun.Kind.FULL))
    messages.success(request, "Full sweep queued: it shows here once a worker starts it.")
    return redirect("sync-runs")


@require_GET
def sync_status(request: HttpRequest) -> HttpResponse:
    """The header's sync status fragment, polled while a sync runs."""
    follow = SyncFollowForm(request.GET)
    if follow.is_valid():
        status = SyncStatus.load(**follow.cleaned_data)
    else:
        status = SyncStatus.load()  # Not following a Sync now: just the status.
    return _sync_status(request, status)


def _sync_status(request: HttpRequest, status: SyncStatus) -> HttpResponse:
    context = {"sync": status, "poll_seconds": POLL_SECONDS}
    return render(request, "dashboard/_sync_status.html", context)


@login_not_required
def login(request: HttpRequest) -> HttpResponse:
    """Django's sign-in page; an htmx request that lost its session (the
    live refresh after a sign-out elsewhere) sends the whole tab here."""
    if request.htmx:
        try:
            back = request.htmx.current_url_abs_path or reverse("batch-list")
        except ValueError:  # An HX-Current-URL that is no URL ("http://[::1").
            back = reverse("batch-list")
        return HttpResponseClientRedirect(redirect_to_login(back).url)
    return auth_views.LoginView.as_view(redirect_authenticated_user=True)(request)


@login_not_required
@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    """Sign out (POST only, so a link cannot do it) and say so."""
    auth_logout(request)
    messages.info(request, "You have signed out.")
    return redirect("login")
