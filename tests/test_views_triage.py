"""The list's triage: the Needs attention panel, the overdue, stuck_soon,
recent_failures and attention filters, sort=failure_rate, honest progress
wording; the trends page; the Content-Security-Policy on every page; and the
bounded cost of each."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batches.models import Batch, DestinationTrend, SyncRun
from batches.trends import hour_of

from .factories import finished_sync, make_batch
from .html import text

pytestmark = pytest.mark.django_db


def shown_ids(response) -> list[str]:
    return re.findall(r'id="open-([^"]+)"', response.content.decode())


@pytest.fixture
def triage(settings):
    """One batch per rule, and two that need nothing."""
    settings.STUCK_AFTER_MINUTES = 60
    settings.OVERDUE_AFTER_HOURS = 24
    now = timezone.now()
    def ago(**kw):
        return now - timedelta(**kw)

    return {
        "stuck": make_batch(
            name=None, id="rb_stuck", status="In Progress", created_at=ago(hours=5), first_seen_at=ago(hours=4),
            last_progress_at=ago(hours=2), destinations={"salesforce": (1, 0, 5)},
        ),
        "soon": make_batch(
            name=None, id="rb_soon", status="In Progress", created_at=ago(hours=3), first_seen_at=ago(hours=3),
            last_progress_at=ago(minutes=49, seconds=30), destinations={"salesforce": (2, 0, 5)},
        ),
        "overdue": make_batch(
            name=None, id="rb_overdue", status="In Progress", created_at=ago(hours=30), first_seen_at=ago(hours=2),
            last_progress_at=ago(minutes=5), destinations={"sepire": (20, 0, 10)},
        ),
        # Both stuck and overdue: in both entries, once in attention=1.
        "stuck_overdue": make_batch(
            name=None, id="rb_stuck_overdue", status="In Progress", created_at=ago(days=400),
            first_seen_at=ago(hours=2), destinations={},
        ),
        "failing": make_batch(
            name=None, id="rb_failing", status="Completed", total=125, created_at=ago(hours=3),
            destinations={"sepire": (35, 90, 0)},
        ),
        # Seen finishing (progress after first sight) an hour ago, created long before.
        "finished_lately": make_batch(
            name=None, id="rb_finished_lately", status="Completed", total=10, created_at=ago(days=3),
            first_seen_at=ago(days=2), last_progress_at=ago(hours=1), destinations={"sepire": (9, 1, 0)},
        ),
        # First seen already finished, long ago: no finishing time known, left out.
        "finished_unknown": make_batch(
            name=None, id="rb_finished_unknown", status="Completed", total=10, created_at=ago(days=3),
            first_seen_at=ago(hours=1), destinations={"sepire": (5, 5, 0)},
        ),
        "fine": make_batch(
            name=None, id="rb_fine", status="In Progress", created_at=ago(minutes=10), first_seen_at=ago(seconds=210),
            destinations={"sepire": (1, 0, 1)},
        ),
        "done": make_batch(name=None, id="rb_done", status="Completed", created_at=ago(hours=1), destinations={"sepire": (5, 0, 0)}),
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("overdue=1", ["rb_overdue", "rb_stuck_overdue"]),
        ("stuck_soon=1", ["rb_soon"]),
        ("stuck=1", ["rb_stuck", "rb_stuck_overdue"]),
        ("recent_failures=1", ["rb_failing", "rb_finished_lately"]),
        (
            "attention=1",
            ["rb_failing", "rb_finished_lately", "rb_overdue", "rb_soon", "rb_stuck", "rb_stuck_overdue"],
        ),
        ("attention=1&destination=sepire", ["rb_failing", "rb_finished_lately", "rb_overdue"]),
        ("overdue=1&stuck=1", ["rb_stuck_overdue"]),
        ("overdue=0", None),
    ],
)
def test_each_triage_filter_selects_exactly_its_rule(ops_client, triage, query, expected):
    response = ops_client.get(f"/?{query}")
    assert response.status_code == 200
    if expected is None:
        assert len(shown_ids(response)) == len(triage)
    else:
        assert sorted(shown_ids(response)) == expected


def test_the_filters_are_the_querysets_rules(triage):
    now = timezone.now()
    assert set(Batch.objects.overdue(now).values_list("id", flat=True)) == {
        b.id for b in Batch.objects.all() if b.is_overdue(now)
    }
    soon = {b.id for b in Batch.objects.all() if b.stuck_in(now) and b.stuck_in(now) <= timedelta(minutes=15)}
    assert set(Batch.objects.stuck_soon(now).values_list("id", flat=True)) == soon == {"rb_soon"}


@pytest.mark.parametrize("query", ["overdue=yes", "attention=2", "stuck_soon=x", "recent_failures=true"])
def test_a_bad_triage_flag_is_a_400_naming_it(ops_client, triage, query):
    response = ops_client.get(f"/?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] + ":" in text(response)


def test_the_filters_keep_their_canonical_place_in_urls(ops_client, triage):
    html = ops_client.get("/?sort=name&attention=1&overdue=1&q=rb").content.decode()
    assert 'id="sort-total" href="?q=rb&amp;overdue=1&amp;attention=1&amp;sort=-total"' in html
    assert re.search(r'id="f-attention"[^>]*checked', html) and re.search(r'id="f-overdue"[^>]*checked', html)


def test_sort_by_failure_rate_orders_by_failed_over_ended_with_id_breaking_ties(ops_client, triage):
    make_batch(id="rb_half_a", status="Completed", destinations={"box": (1, 1, 0)})
    make_batch(id="rb_half_b", status="Completed", destinations={"box": (3, 3, 0)})

    def rate(batch: Batch) -> float:
        return batch.failed / max(batch.completed + batch.failed, 1)

    batches = sorted(Batch.objects.all(), key=lambda b: b.id)
    ascending = [b.id for b in sorted(batches, key=rate)]
    descending = [b.id for b in sorted(reversed(batches), key=rate, reverse=True)]
    assert shown_ids(ops_client.get("/?sort=failure_rate")) == ascending
    assert shown_ids(ops_client.get("/?sort=-failure_rate")) == descending
    assert descending[:3] == ["rb_failing", "rb_half_b", "rb_half_a"]  # 72 %, then 50 % by id descending.
    # The heading sorts worst first on its first click.
    assert 'id="sort-failure_rate" href="?sort=-failure_rate"' in ops_client.get("/").content.decode()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("rule", "index"),
    [
        (lambda now: Batch.objects.sorted_by("failure_rate", descending=True), "batch_failure_rate_idx"),
        (lambda now: Batch.objects.sorted_by("failure_rate"), "batch_failure_rate_idx"),
        (lambda now: Batch.objects.with_status("In Progress").sorted_by("failure_rate", True), "batch_status_failure_rate_idx"),
        (lambda now: Batch.objects.finished_with_failures(now).order_by(), "batch_failed_finished_idx"),
        (lambda now: Batch.objects.overdue(now).order_by("created_at"), "batch_in_progress_created_idx"),
        (lambda now: Batch.objects.stuck_soon(now).order_by(), "batch_stuck_idx"),
    ],
)
def test_each_new_rule_and_sort_is_the_expression_its_index_holds(rule, index):
    """PostgreSQL uses an expression index only for the very expression: with
    plans that avoid it made as dear as can be, each query must still choose
    its index (a few rows would otherwise always be read in full)."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner")
    now = timezone.now()
    # 3,000 batches, of which each rule matches a few, as in life.
    Batch.objects.bulk_create(
        Batch(
            id=f"rb_{n:05d}", status="In Progress" if n % 100 == 0 else "Completed", total=5,
            created_at=now - timedelta(days=2 + n / 10), first_seen_at=now - timedelta(days=1),
            last_progress_at=now - timedelta(minutes=50) if n % 300 == 0 else now - timedelta(days=1),
            last_changed_at=now, completed=5, failed=n % 50 == 0, raw={},
        )
        for n in range(3000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE batches_batch")
    sql, params = rule(now)[:50].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # A range of an older index serves overdue() and stuck_soon() as well,
    # and PostgreSQL may take it on so few rows: (status, created_at) of
    # batch_status_created_idx, last_progress_at of batch_progress_idx. The
    # rules' own partial indexes are smaller, and serve the capped counts
    # and the evaluator from the index alone.
    also = {"batch_in_progress_created_idx": "batch_status_created_idx", "batch_stuck_idx": "batch_progress_idx"}
    assert f"using {index} " in plan or f"using {also.get(index)} " in plan, plan


def test_the_panel_names_each_rule_with_its_worst_batches_and_links(ops_client, triage):
    response = ops_client.get("/")
    panel = re.search(r'<section id="attention".*?</section>', response.content.decode(), re.DOTALL).group(0)
    words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", panel))
    assert "2 stuck In Progress with no progress for 60 min or more" in words
    assert "rb_stuck no progress for 2 h" in words
    assert "rb_stuck_overdue no progress seen in 2 h" in words
    assert "2 overdue In Progress for more than 24 h since created" in words
    assert "rb_stuck_overdue 400 d old" in words and "rb_overdue 1 d 6 h old" in words
    assert "1 stuck soon stuck within 15 min unless they progress" in words and "stuck in 10 min" in words
    assert "2 finished with failures" in words
    assert words.index("rb_failing 72% (90 of 125)") < words.index("rb_finished_lately 10% (1 of 10)")
    for link in ("/?stuck=1", "/?overdue=1", "/?stuck_soon=1", "/?recent_failures=1&amp;sort=-failure_rate"):
        assert f'href="{link}"' in panel
    # Names are escaped like everywhere else.
    make_batch(id="rb_x", name="<b>bold</b>", status="In Progress", created_at=timezone.now() - timedelta(days=2))
    assert "&lt;b&gt;bold&lt;/b&gt;" in ops_client.get("/").content.decode()


def test_a_calm_panel_says_nothing_needs_anyone(ops_client):
    make_batch(id="rb_ok", status="Completed")
    assert "Nothing needs you now" in text(ops_client.get("/"))


def test_a_destination_failing_above_its_week_is_in_the_panel(ops_client, triage):
    hour = hour_of(timezone.now())
    DestinationTrend.objects.create(hour=hour, destination="salesforce", completed=20, failed=30)
    DestinationTrend.objects.create(hour=hour - timedelta(hours=6), destination="salesforce", completed=990, failed=10)
    finished_sync()  # The summary carries the rollups' comparison.
    page = text(ops_client.get("/"))
    assert "1 destination failing since" in page and "above its own rate over the 7 days before" in page
    assert "salesforce 60% (30 of 50), usually 1%" in page
    assert 'href="/?destination=salesforce&amp;failed=1"' in ops_client.get("/").content.decode()


def test_rows_tell_the_truth_about_progress_and_counts(ops_client, triage):
    page = text(ops_client.get("/"))
    # Never seen progressing: no invented time.
    assert "first seen 3 min ago, no progress seen yet stuck in 56 min" in page
    assert "no progress for 49 min stuck in 10 min" in page
    assert "no progress seen (first seen 1 h ago)" in page  # rb_finished_unknown
    html = ops_client.get("/").content.decode()
    row = re.search(r'<tr[^>]*>\s*<td class="col-name">\s*<a id="open-rb_failing".*?</tr>', html, re.DOTALL).group(0)
    assert "badge-with-failures" in row and "72% failed" in row
    # Each count says what it counts: documents for Docs, deliveries for the rest.
    headings = re.search(r"<thead>.*?</thead>", html, re.DOTALL).group(0)
    assert re.search(r'>Docs&nbsp;.*?<span class="unit">documents</span>', headings, re.DOTALL)
    assert headings.count('<span class="unit">deliveries</span>') == 3


def test_a_triage_view_costs_at_most_eight_queries_and_the_panel_one(ops_client, triage):
    finished_sync()
    for query in ("", "?attention=1", "?overdue=1", "?stuck_soon=1", "?recent_failures=1", "?sort=-failure_rate",
                  "?attention=1&destination=sepire&sort=failure_rate"):
        with CaptureQueriesContext(connection) as queries:
            response = ops_client.get(f"/{query}")
        assert response.status_code == 200
        assert len(queries) <= 8, [q["sql"] for q in queries]
        panel = [q["sql"] for q in queries if "UNION ALL" in q["sql"]]
        assert len(panel) == 1
        for sql in (q["sql"].upper() for q in queries):
            assert "SUM(" not in sql and "GROUP BY" not in sql
            if "COUNT(" in sql:
                assert "LIMIT" in sql


# The trends page ------------------------------------------------------------------


def test_the_trends_page_draws_each_destination_from_the_rollups(ops_client):
    hour = hour_of(timezone.now())
    DestinationTrend.objects.bulk_create(
        [
            DestinationTrend(hour=hour, destination="sepire", completed=12, failed=3),
            DestinationTrend(hour=hour - timedelta(hours=2), destination="sepire", completed=8, failed=0),
            DestinationTrend(hour=hour - timedelta(days=3), destination="box", completed=5, failed=5),
        ]
    )
    finished_sync(api_requests=7)
    with CaptureQueriesContext(connection) as queries:
        response = ops_client.get("/trends/")
    assert response.status_code == 200
    assert len(queries) <= 8, [q["sql"] for q in queries]
    # Never the batch table: rollups and sync runs only.
    assert not [q["sql"] for q in queries if '"batches_batch"' in q["sql"]]
    html = response.content.decode()
    sepire = re.search(r'<article class="trend-card" id="dest-sepire".*?</article>', html, re.DOTALL).group(0)
    assert sepire.count("<svg") == 4 and 'role="img"' in sepire
    assert "20 in all · peak 12" in re.sub(r"\s+", " ", sepire)
    # The table beside the charts: the hours newest first.
    rows = re.findall(r'<tr><th scope="row">([^<]+)</th><td class="num">(\d+)</td><td class="num">(\d+)</td></tr>', sepire)
    assert rows[0][1:] == ("12", "3") and rows[2][1:] == ("8", "0")
    box = re.search(r'id="dest-box".*?</article>', html, re.DOTALL).group(0)
    assert "Nothing recorded in the last 24 hours" in box and "10 in all" not in box
    assert "1 run ·" in text(response) and "7 in all" in text(response)


def test_the_trends_page_without_data_says_so(ops_client):
    page = text(ops_client.get("/trends/"))
    assert "No deliveries recorded in the last 30 days" in page
    assert "No sync run finished in the last 24 hours" in page


def test_the_header_links_to_the_trends_page(ops_client):
    assert 'href="/trends/"' in ops_client.get("/").content.decode()


# Content-Security-Policy --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/?created_after=nope", "/batches/rb_done/", "/trends/", "/sync-runs/"])
def test_every_page_sends_a_strict_csp_and_has_no_inline_script_or_style(ops_client, triage, path):
    finished_sync()
    response = ops_client.get(path)
    policy = response["Content-Security-Policy"]
    nonce = re.search(r"script-src 'self' 'nonce-([\w+/=-]+)'", policy).group(1)
    assert "style-src 'self';" in policy + ";" and "unsafe" not in policy
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    html = response.content.decode()
    assert " style=" not in html and "<style" not in html
    for tag in re.findall(r"<script[^>]*>", html):
        assert f'nonce="{nonce}"' in tag and "src=" in tag
    assert not re.search(r"\son[a-z]+=", html)  # No inline event handlers either.
    assert '"allowEval":false' in html and '"includeIndicatorStyles":false' in html


def test_the_sign_in_page_has_the_policy_too(client):
    response = client.get("/login/")
    assert "script-src 'self' 'nonce-" in response["Content-Security-Policy"]
    assert SyncRun.objects.count() == 0
