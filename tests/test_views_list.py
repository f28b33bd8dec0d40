"""The batch list (/): page and fragment, filters, sorting, paging, bad
input, escaping and the bounded cost of a page view."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.http import QueryDict
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batches.models import Batch, SyncRun
from dashboard.forms import BatchListForm

from .factories import finished_sync, make_batch
from .html import text

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def shown_ids(response) -> list[str]:
    """Batch ids in the table, in the order shown."""
    return re.findall(r'id="open-([^"]+)"', response.content.decode())


@pytest.fixture
def batches():
    """A small, known set: statuses, destinations, failures, names, ages."""
    now = timezone.now()
    return {
        "old_done": make_batch(
            id="rb_old_done", name="Welcome letters", status="Completed", total=5,
            created_at=now - timedelta(days=40), destinations={"inkit_storage": (5, 0, 0)},
        ),
        "failing": make_batch(
            id="rb_failing", name="Past-due reminders", status="In Progress", total=20,
            created_at=now - timedelta(days=3),
            destinations={"salesforce": (10, 6, 4), "sepire": (18, 0, 2)},
        ),
        "stuck": make_batch(
            id="rb_stuck", name=None, status="In Progress", total=7,
            created_at=now - timedelta(days=2), destinations={},
            first_seen_at=now - timedelta(days=2), last_progress_at=now - timedelta(hours=3, minutes=12, seconds=5),
        ),
        "unknown": make_batch(
            id="rb_unknown", name="statements Q3", status="Failed", total=3,
            created_at=now - timedelta(days=1), destinations={"docusign": (0, 3, 0)},
        ),
        "fresh": make_batch(
            id="rb_fresh", name="INVOICES march", status="In Progress", total=9,
            created_at=now - timedelta(minutes=2), destinations={"salesforce": (1, 0, 8)},
        ),
    }


# Page and fragment -----------------------------------------------------------


def test_it_sends_anonymous_visitors_to_sign_in(client):
    response = client.get("/?status=Completed")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/%3Fstatus%3DCompleted"


def test_it_renders_the_whole_page(ops_client, batches):
    response = ops_client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.startswith("<!doctype html>")
    assert 'id="filters"' in html and 'id="table"' in html and 'id="sync-status"' in html
    assert shown_ids(response) == ["rb_fresh", "rb_unknown", "rb_stuck", "rb_failing", "rb_old_done"]
    assert "HX-Request" in response["Vary"]
    # htmx sends the CSRF token with every request it makes.
    assert re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"\w{32,}\"\}'", html)
    # Served from our static files, with the request's CSP nonce.
    nonce = re.search(r"script-src 'self' 'nonce-([^']+)'", response["Content-Security-Policy"]).group(1)
    assert re.search(rf'<script src="/static/django_htmx/htmx-2\.min\.[0-9a-f]{{12}}\.js" defer nonce="{nonce}">', html)


def test_htmx_gets_only_the_table_partial_with_the_form_and_header_out_of_band(ops_client, batches):
    response = ops_client.get("/?status=In+Progress", **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and "<body" not in html
    assert html.lstrip().startswith('<section id="table"')
    assert re.search(r'<form id="filters"[^>]*hx-swap-oob="true"', html)
    assert re.search(r'<div id="sync-status"[^>]*hx-swap-oob="true"', html, re.DOTALL)
    assert shown_ids(response) == ["rb_fresh", "rb_stuck", "rb_failing"]
    assert "HX-Request" in response["Vary"]


def test_the_live_refresh_leaves_the_filter_form_alone(ops_client, batches):
    response = ops_client.get("/?status=In+Progress", HTTP_HX_TRIGGER="live-refresh", **HTMX)
    html = response.content.decode()
    assert 'id="filters"' not in html
    assert 'id="table"' in html
    assert shown_ids(response) == ["rb_fresh", "rb_stuck", "rb_failing"]


def test_a_change_made_in_the_form_does_not_send_the_form_back(ops_client, batches):
    # The form already shows what was chosen; re-rendering it could undo
    # what is being chosen next.
    response = ops_client.get("/?status=Completed", HTTP_HX_TRIGGER="filters", **HTMX)
    html = response.content.decode()
    assert 'id="filters"' not in html and 'id="sync-status"' in html
    assert shown_ids(response) == ["rb_old_done"]


def test_the_live_refresh_asks_for_the_same_view_every_refresh_seconds(ops_client, batches, settings):
    settings.DASHBOARD_REFRESH_SECONDS = 7
    response = ops_client.get("/?sort=-failed&status=In+Progress&page_size=25")
    html = response.content.decode()
    poller = re.search(r'<div id="live-refresh"[^>]*>', html).group(0)
    assert 'hx-get="/?status=In+Progress&amp;sort=-failed&amp;page_size=25"' in poller
    # dashboard.js fires the trigger every data-refresh-seconds while the tab
    # is visible: an hx-trigger filter would need eval, which the CSP forbids.
    assert 'hx-trigger="live-refresh"' in poller and 'data-refresh-seconds="7"' in poller
    assert "refreshes every 7 s" in text(response)


def test_live_refresh_is_off_when_refresh_seconds_is_zero(ops_client, batches, settings):
    settings.DASHBOARD_REFRESH_SECONDS = 0
    assert 'id="live-refresh"' not in ops_client.get("/").content.decode()


def test_a_history_restore_gets_the_whole_page(ops_client, batches):
    response = ops_client.get("/", HTTP_HX_HISTORY_RESTORE_REQUEST="true", **HTMX)
    assert response.content.decode().startswith("<!doctype html>")


# Filters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=Completed", ["rb_old_done"]),
        ("status=Completed&status=Failed", ["rb_unknown", "rb_old_done"]),
        ("status=Failed", ["rb_unknown"]),
        ("status=Nothing+like+it", []),
        ("destination=salesforce", ["rb_fresh", "rb_failing"]),
        ("destination=salesforce&destination_status=in_progress", ["rb_fresh", "rb_failing"]),
        ("destination=sepire&destination_status=completed", []),
        ("destination=inkit_storage&destination_status=completed", ["rb_old_done"]),
        ("destination='%3B+DROP+TABLE+x%3B--&destination_status=%22%7D", []),
        ("destination=%7B%7D", []),
        ("q=invoices", ["rb_fresh"]),
        ("q=RB_STUCK", ["rb_stuck"]),
        ("q=rb_st", ["rb_stuck"]),  # Ids match from their start...
        ("q=tuck", []),  # ...not in the middle.
        ("q=rb%25", []),  # % and _ are text, not wildcards.
        ("q=state", ["rb_unknown"]),
        ("q=voices+MAR", ["rb_fresh"]),  # Names match anywhere, across words, any case.
        ("failed=1", ["rb_unknown", "rb_failing"]),
        ("failed=1&destination=salesforce", ["rb_failing"]),
        ("failed=1&destination=sepire", []),
        ("failed=0", ["rb_fresh", "rb_unknown", "rb_stuck", "rb_failing", "rb_old_done"]),
        ("status=In+Progress&destination=sepire", ["rb_failing"]),
        ("destination=salesforce&q=invoices", ["rb_fresh"]),
        (
            "destination=salesforce&destination_status=in_progress&failed=1&status=In+Progress",
            ["rb_failing"],
        ),
        ("destination=salesforce&sort=created_at", ["rb_failing", "rb_fresh"]),
        ("destination=salesforce&sort=-failed", ["rb_failing", "rb_fresh"]),
        ("destination=salesforce&stuck=1", []),
    ],
)
def test_each_filter_selects_the_right_batches(ops_client, batches, query, expected):
    response = ops_client.get(f"/?{query}")
    assert response.status_code == 200
    assert shown_ids(response) == expected


def test_a_destination_without_inkits_status_field_matches_no_status(ops_client):
    # The per-destination status is undocumented: absent, it matches nothing.
    make_batch(id="rb_nostatus", destinations={"sepire": (1, 0, 0)}, destination_status={"sepire": None})
    make_batch(id="rb_status", destinations={"sepire": (1, 0, 0)})
    assert shown_ids(ops_client.get("/?destination=sepire&destination_status=completed")) == ["rb_status"]
    assert sorted(shown_ids(ops_client.get("/?destination=sepire"))) == ["rb_nostatus", "rb_status"]


def test_created_after_and_before_take_whole_utc_days(ops_client, batches):
    today = timezone.now().date()
    response = ops_client.get(f"/?created_after={today - timedelta(days=3)}&created_before={today - timedelta(days=1)}")
    assert shown_ids(response) == ["rb_stuck", "rb_failing"]
    response = ops_client.get(f"/?created_before={today - timedelta(days=30)}")
    assert shown_ids(response) == ["rb_old_done"]
    # With a destination, the range is asked of its row's copy of created_at.
    yesterday = today - timedelta(days=1)
    response = ops_client.get(f"/?destination=salesforce&created_before={yesterday}")
    assert shown_ids(response) == ["rb_failing"]
    response = ops_client.get(f"/?destination=salesforce&created_after={today}")
    assert shown_ids(response) == ["rb_fresh"]


def test_a_destination_view_lists_newest_first_with_id_breaking_ties(ops_client):
    now = timezone.now()
    created = {
        "rb_new": now - timedelta(minutes=1),
        "rb_tie_b": now - timedelta(hours=1),
        "rb_tie_a": now - timedelta(hours=1),
        "rb_old": now - timedelta(days=1),
    }
    for batch_id, created_at in created.items():
        make_batch(id=batch_id, created_at=created_at, destinations={"box": (1, 0, 0)})
    make_batch(id="rb_elsewhere", created_at=now, destinations={"sepire": (1, 0, 0)})
    # As the list without a destination: (-created_at, id), and the reverse.
    assert shown_ids(ops_client.get("/?destination=box")) == [
        "rb_new", "rb_tie_a", "rb_tie_b", "rb_old",
    ]
    assert shown_ids(ops_client.get("/?destination=box&sort=created_at")) == [
        "rb_old", "rb_tie_b", "rb_tie_a", "rb_new",
    ]


def sql_of(query: str) -> str:
    form = BatchListForm(QueryDict(query))
    assert form.is_valid(), form.errors
    return str(form.batches().query)


@pytest.mark.parametrize(
    "query",
    [
        "destination=box",
        "destination=box&destination_status=completed",
        "destination=box&failed=1",
        "destination=box&destination_status=completed&failed=1&status=Completed&q=x&stuck=1"
        "&created_after=2024-01-01&created_before=2024-02-01",
    ],
)
def test_a_destination_view_joins_its_row_once_and_sorts_by_its_copy_of_created_at(query):
    # Every condition on one join (a batch appears once), ordered as the
    # destination indexes hold the rows, so PostgreSQL walks one and stops
    # after the page rather than sorting every match.
    sql = sql_of(query)
    assert sql.count("JOIN") == 1 and 'JOIN "batches_batchdestination"' in sql
    assert sql.endswith(
        'ORDER BY "batches_batchdestination"."batch_created_at" DESC NULLS FIRST, '
        '"batches_batchdestination"."batch_id" ASC'
    )
    # Oldest first walks the same index backwards.
    assert sql_of(query + "&sort=created_at").endswith(
        'ORDER BY "batches_batchdestination"."batch_created_at" ASC NULLS LAST, '
        '"batches_batchdestination"."batch_id" DESC'
    )


def test_a_destination_view_sorted_by_another_key_sorts_by_the_batchs():
    sql = sql_of("destination=box&sort=-failed")
    assert sql.count("JOIN") == 1
    assert sql.endswith(
        'ORDER BY "batches_batch"."failed" DESC NULLS FIRST, "batches_batch"."id" DESC'
    )


def test_stuck_1_shows_exactly_the_stuck_query(ops_client, batches, settings):
    settings.STUCK_AFTER_MINUTES = 60
    response = ops_client.get("/?stuck=1")
    assert shown_ids(response) == list(Batch.objects.stuck().order_by("-created_at").values_list("id", flat=True))
    assert shown_ids(response) == ["rb_stuck"]
    # A longer threshold than the batch's quiet time: no longer stuck.
    settings.STUCK_AFTER_MINUTES = 4 * 60
    assert shown_ids(ops_client.get("/?stuck=1")) == []


def test_gone_batches_are_left_out(ops_client, batches):
    make_batch(id="rb_gone", gone_at=timezone.now())
    assert "rb_gone" not in shown_ids(ops_client.get("/"))


def test_a_stuck_batch_says_for_how_long_and_the_page_gives_the_threshold(ops_client, batches, settings):
    settings.STUCK_AFTER_MINUTES = 90
    page = text(ops_client.get("/"))
    assert "stuck for 3 h 12 min" in page
    assert "90 min" in page and "STUCK_AFTER_MINUTES" in page
    # Only the stuck batch carries the marker.
    assert page.count("stuck for") == 1


def test_the_form_shows_the_filters_in_force(ops_client, batches):
    html = ops_client.get("/?status=Failed&destination=salesforce&q=abc&stuck=1&page_size=25").content.decode()
    assert re.search(r'value="Failed" id="f-status-\d+" checked', html)
    assert re.search(r'<option value="salesforce" selected>', html)
    assert 'name="q" value="abc"' in html
    assert re.search(r'id="f-stuck"[^>]*checked', html)
    assert re.search(r'<option value="25" selected>', html)


# Sorting ---------------------------------------------------------------------

SORT_KEYS = ["created_at", "name", "status", "total", "completed", "failed", "in_progress", "last_progress_at"]


@pytest.mark.parametrize("key", SORT_KEYS)
@pytest.mark.parametrize("descending", [False, True])
def test_each_sort_key_orders_the_rows_with_id_breaking_ties(ops_client, batches, key, descending):
    # Null names count as the highest, on SQLite as on PostgreSQL.
    def value(batch):
        field = getattr(batch, key)
        return (field is None, field if field is not None else "")

    # Ties go by id in the sort's direction, except created_at, whose index
    # is (-created_at, id). Python's sorts are stable: sort by id, then key.
    id_descending = not descending if key == "created_at" else descending
    rows = sorted(Batch.objects.all(), key=lambda b: b.id, reverse=id_descending)
    rows = sorted(rows, key=value, reverse=descending)
    response = ops_client.get(f"/?sort={'-' if descending else ''}{key}")
    assert shown_ids(response) == [b.id for b in rows]


def test_the_default_is_newest_first_and_headings_say_how_they_sort(ops_client, batches):
    html = ops_client.get("/?sort=-failed").content.decode()
    assert re.search(r'class="col-failed" aria-sort="descending"', html)
    assert re.search(r'class="col-created_at" aria-sort="none"', html)
    # Clicking the sorted heading reverses it; another heading starts on its own default.
    assert 'id="sort-failed" href="?sort=failed"' in html
    assert 'id="sort-name" href="?sort=name"' in html
    # The default sort's link still names it: the link says what it applies.
    assert 'id="sort-created_at" href="?sort=-created_at"' in html
    html = ops_client.get("/").content.decode()
    assert re.search(r'class="col-created_at" aria-sort="descending"', html)
    assert 'scope="col"' in html


def test_sort_links_keep_the_filters_and_drop_the_page(ops_client, batches):
    html = ops_client.get("/?status=Completed&page=1&q=x").content.decode()
    assert 'id="sort-total" href="?q=x&amp;status=Completed&amp;sort=-total"' in html


# Paging ----------------------------------------------------------------------


@pytest.fixture
def many():
    now = timezone.now()
    return [
        make_batch(id=f"rb_many{index:03d}", created_at=now - timedelta(minutes=index), destinations={})
        for index in range(60)
    ]


def test_it_pages_with_page_and_page_size(ops_client, many):
    response = ops_client.get("/?page_size=25&page=2")
    assert shown_ids(response) == [f"rb_many{index:03d}" for index in range(25, 50)]
    page = text(response)
    assert "26–50 of 60 batches" in page
    assert "Page 2 of 3" in page
    html = response.content.decode()
    assert 'id="page-prev" rel="prev" href="?page_size=25&amp;page=1"' in html
    assert 'id="page-next" rel="next" href="?page_size=25&amp;page=3"' in html


def test_a_page_past_the_end_shows_the_last_page_with_a_notice(ops_client, many):
    response = ops_client.get("/?page_size=25&page=99")
    assert response.status_code == 200
    assert shown_ids(response) == [f"rb_many{index:03d}" for index in range(50, 60)]
    assert "There is no page 99; showing the last page, 3." in text(response)


def test_counts_stop_at_the_cap_and_the_page_says_so(ops_client, many, monkeypatch):
    monkeypatch.setattr("dashboard.views.COUNT_CAP", 30)
    response = ops_client.get("/?page_size=25&page=5")
    page = text(response)
    assert "26–30 of 30+ batches" in page
    assert "Counting and paging stop at 30" in page
    # Page 5 exists, paging just cannot reach it: the notice says which.
    assert "Paging stops at 30 batches, so page 5 cannot be shown; showing the last page, 2." in page
    assert "There is no page 5" not in page
    assert shown_ids(response) == [f"rb_many{index:03d}" for index in range(25, 30)]


def test_the_last_reachable_page_says_why_there_is_no_next(ops_client, many, monkeypatch):
    monkeypatch.setattr("dashboard.views.COUNT_CAP", 30)
    for response in (ops_client.get("/?page_size=25&page=2"), ops_client.get("/?page_size=25&page=2", **HTMX)):
        html = response.content.decode()
        assert 'id="count-cap"' in html  # The notice at the top, on this page too...
        # ...and Next, there but disabled, pointing at the reason beside it.
        assert 'id="page-next" rel="next"' not in html
        assert '<span id="page-next" class="pager-off" tabindex="-1" aria-disabled="true" aria-describedby="pager-stop">Next ›</span>' in html
        pager = text(response)[text(response).index("‹ Previous"):]
        assert "Page 2 of 2+ Paging stops at 30 batches: narrow the filters, change the sort, or export them all as CSV" in pager
        # The same export as the Export CSV button: the view's filters and sort.
        export = re.search(r'<a id="export" class="button" href="([^"]+)"', html).group(1)
        assert re.search(r'<span id="pager-stop" class="hint">[^<]*<a href="' + re.escape(export) + '" download>', html)

    # Before the last reachable page, Next is a link and needs no reason.
    html = ops_client.get("/?page_size=25").content.decode()
    assert 'id="page-next" rel="next"' in html and 'id="pager-stop"' not in html and 'id="count-cap"' in html


def test_without_the_cap_the_last_page_needs_no_reason(ops_client, many):
    html = ops_client.get("/?page_size=25&page=3").content.decode()
    assert '<span id="page-next" class="pager-off" tabindex="-1" aria-disabled="true">Next ›</span>' in html
    assert 'id="pager-stop"' not in html and 'id="count-cap"' not in html


def test_an_empty_result_says_so(ops_client, batches):
    response = ops_client.get("/?q=nothing-matches-this")
    assert shown_ids(response) == []
    assert "No batches match" in text(response)
    # Its one cell spans exactly the table's columns.
    html = response.content.decode()
    headings = re.findall(r'<th scope="col"', re.search(r"<thead>.*?</thead>", html, re.DOTALL).group(0))
    assert len(headings) == 10
    assert f'<td colspan="{len(headings)}" class="empty">' in html
    # As many as a batch's row has.
    body = re.search(r"<tbody>.*?</tbody>", ops_client.get("/").content.decode(), re.DOTALL).group(0)
    rows = re.findall(r"<tr[ >].*?</tr>", body, re.DOTALL)
    assert len(rows) == 5 and all(row.count("<td") == len(headings) for row in rows)


# Bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "notice"),
    [
        ("sort=drop_table", "There is no sort “drop_table”; sorted newest first instead."),
        ("sort=-raw", "There is no sort “-raw”"),
        ("page=abc", "“abc” is not a page number; showing the first page."),
        ("page=-3", "“-3” is not a page number"),
        ("page=99999999999999999999", "is not a page number"),
        ("page_size=1000000", "Page size “1000000” is not offered; showing 200 rows"),
        ("page_size=30", "Page size “30” is not offered; showing 25 rows"),
        ("page_size=lots", "showing 50 rows"),
    ],
)
def test_a_bad_view_parameter_gives_the_nearest_view_with_a_notice(ops_client, batches, query, notice):
    response = ops_client.get(f"/?{query}")
    assert response.status_code == 200
    assert notice in text(response)
    assert shown_ids(response)  # Still a list of batches.


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("created_after=yesterday", "created_after: Enter a valid date."),
        ("created_before=2024-13-45", "created_before: Enter a valid date."),
        ("created_after=2024-05-02&created_before=2024-05-01", "created_before: must be a later date than created_after"),
        ("stuck=yes", "stuck: "),
        ("failed=2", "failed: "),
        ("q=" + "x" * 201, "q: Ensure this value has at most 200 characters"),
        ("status=" + "S" * 101, "status: a value is longer than 100 characters"),
        ("&".join(f"status=s{n}" for n in range(21)), "status: give at most 20 values"),
        ("destination_status=completed", "destination_status: give a destination too"),
    ],
)
def test_a_bad_filter_is_a_400_that_says_what_is_wrong(ops_client, batches, query, problem):
    response = ops_client.get(f"/?{query}")
    assert response.status_code == 400
    page = text(response)
    assert "These filters cannot be applied" in page
    assert problem in page
    assert shown_ids(response) == []


@pytest.mark.parametrize("query", ["q=a%00b", "destination=%00", "status=%00"])
def test_a_nul_in_a_filter_is_a_400_naming_it(ops_client, batches, query):
    # Refused before the view, as for every view (dashboard/middleware.py).
    response = ops_client.get(f"/?{query}")
    assert response.status_code == 400
    name = query.split("=")[0]
    assert f"the query string parameter “{name}” holds a NUL character" in response.content.decode()


def test_a_bad_filter_from_htmx_is_a_400_fragment(ops_client, batches):
    response = ops_client.get("/?created_after=nope", **HTMX)
    assert response.status_code == 400
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="table"') and "created_after" in html


@pytest.mark.parametrize(
    "needle",
    ["'; DROP TABLE batches_batch; --", "%' OR '1'='1", "<script>alert(1)</script>", "{{ 7*7 }}", "\\", "__", "%%"],
)
def test_injection_strings_are_just_searched_for(ops_client, batches, needle):
    response = ops_client.get("/", {"q": needle})
    assert response.status_code == 200
    assert shown_ids(response) == []
    assert Batch.objects.count() == 5


# Escaping --------------------------------------------------------------------


def test_batch_names_are_escaped_everywhere(ops_client):
    make_batch(id="rb_hostile1", name="<script>alert(1)</script> invoices", destinations={"<b>dest</b>": (1, 0, 0)})
    make_batch(id="rb_hostile2", name="{{ 7*7 }} template test", status="<i>odd</i>")
    finished_sync()
    html = ops_client.get("/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; invoices" in html
    assert "<b>dest</b>" not in html and "&lt;b&gt;dest&lt;/b&gt;" in html
    assert "<i>odd</i>" not in html and "&lt;i&gt;odd&lt;/i&gt;" in html
    assert "{{ 7*7 }} template test" in html
    assert "49 template test" not in html


# Summary strip and cost ----------------------------------------------------------


def test_the_summary_strip_shows_the_last_syncs_figures_with_links(ops_client, batches):
    finished_sync()
    # Changes after the sync do not show in the strip until the next one...
    make_batch(id="rb_after", status="Completed")
    page = ops_client.get("/")
    html = page.content.decode()
    figures = re.search(r'<ul class="figures".*?</ul>', html, re.DOTALL).group(0)
    assert re.search(r'>5</span><span class="figure-label">batches', figures)
    assert re.search(r'href="/\?status=In\+Progress"[^>]*>\s*<span class="figure-value">3</span>', figures)
    assert re.search(r'href="/\?status=Failed"[^>]*>\s*<span class="figure-value">1</span>', figures)
    assert re.search(r'href="/\?failed=1"[^>]*>\s*<span class="figure-value">9</span>', figures)
    # ...but the stuck count is live.
    assert re.search(r'href="/\?stuck=1"[^>]*>\s*<span class="figure-value">1</span>', figures)
    totals = re.search(r'<ul class="destination-totals".*?</ul>', html, re.DOTALL).group(0)
    assert 'href="/?destination=salesforce"' in totals
    assert 'href="/?destination=salesforce&amp;destination_status=in_progress"' in totals
    assert 'href="/?destination=salesforce&amp;failed=1"' in totals


def test_without_a_sync_the_strip_says_there_is_no_summary_yet(ops_client, batches):
    assert "No sync has finished yet" in text(ops_client.get("/"))


def test_a_page_view_runs_a_bounded_number_of_queries_and_never_aggregates(ops_client, many):
    finished_sync()
    for query in ("", "?page_size=200", "?status=Completed&sort=-total&page=2&page_size=25", "?stuck=1&q=rb"):
        with CaptureQueriesContext(connection) as queries:
            response = ops_client.get(f"/{query}")
        assert response.status_code == 200
        assert len(queries) <= 8, [q["sql"] for q in queries]
        for sql in (q["sql"].upper() for q in queries):
            assert "SUM(" not in sql and "GROUP BY" not in sql
            # Counts are capped: a COUNT only ever over a LIMITed subquery.
            if "COUNT(" in sql:
                assert "LIMIT" in sql


def test_a_first_page_with_room_to_spare_needs_no_count(ops_client, batches):
    with CaptureQueriesContext(connection) as queries:
        ops_client.get("/?status=In+Progress")
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert len(counts) == 1 and "last_progress_at" in counts[0]  # Only the stuck figure.


def test_the_fragment_costs_no_more_queries_than_the_page(ops_client, many):
    finished_sync()
    with CaptureQueriesContext(connection) as queries:
        ops_client.get("/", **HTMX)
    assert len(queries) <= 8


def test_unknown_statuses_are_shown_and_filterable(ops_client):
    make_batch(id="rb_queued", status="Queued")
    finished_sync()
    html = ops_client.get("/").content.decode()
    assert 'class="badge badge-other"' in html
    assert 'value="Queued"' in html
    assert shown_ids(ops_client.get("/?status=Queued")) == ["rb_queued"]


def test_the_sync_header_is_on_the_list(ops_client, batches):
    finished_sync(ago=timedelta(minutes=2))
    assert "Last sync 2 min ago" in text(ops_client.get("/"))
    assert SyncRun.objects.count() == 1
