"""The pages as ops people see them, in Chromium at 1440, 1024 and 390 px in
both themes: the Needs attention panel against known data, honest times,
cards on a phone, no sideways scroll where none is allowed, axe-core's
accessibility rules, and no Content-Security-Policy violation anywhere.

Screenshots go to test-results/ (git-ignored) for a person to look at."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from batches.models import DestinationTrend
from batches.trends import hour_of
from tests.factories import finished_sync, make_batch

from .conftest import horizontal_overflow, run_axe, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = {1440: 900, 1024: 768, 390: 844}


@pytest.fixture
def triage_data(settings):
    """One batch for each entry of the panel, a destination failing well
    above its week, and ordinary batches around them. Times sit mid-minute,
    so the wording holds for half a minute at least."""
    settings.STUCK_AFTER_MINUTES = 60
    settings.OVERDUE_AFTER_HOURS = 24
    settings.DASHBOARD_REFRESH_SECONDS = 0  # Nothing moves while a test reads.
    now = timezone.now()
    def minutes(n: float) -> timedelta:
        return timedelta(minutes=n)

    make_batch(
        id="rb_stuck_a", name="Statements March", status="In Progress", total=15,
        created_at=now - minutes(300), first_seen_at=now - minutes(240),
        last_progress_at=now - minutes(120), destinations={"salesforce": (10, 0, 5)},
    )
    make_batch(
        id="rb_stuck_b", name=None, status="In Progress", total=4, created_at=now - minutes(180),
        first_seen_at=now - minutes(90.5), destinations={},
    )
    make_batch(
        id="rb_soon", name="Renewal notices", status="In Progress", total=20,
        created_at=now - minutes(120), first_seen_at=now - minutes(120),
        last_progress_at=now - minutes(49.5), destinations={"sepire": (12, 0, 8)},
    )
    make_batch(
        id="rb_overdue", name="Payroll stubs", status="In Progress", total=30,
        created_at=now - minutes(30 * 60 + 0.5), first_seen_at=now - minutes(120),
        last_progress_at=now - minutes(5), destinations={"inkit_storage": (20, 0, 10)},
    )
    make_batch(
        id="rb_failing", name="Invoices April", status="Completed", total=125,
        created_at=now - minutes(180), destinations={"sepire": (35, 90, 0)},
    )
    make_batch(
        id="rb_fresh", name="Welcome letters", status="In Progress", total=9,
        created_at=now - minutes(4), first_seen_at=now - minutes(3.5), destinations={},
    )
    for n in range(25):
        make_batch(
            id=f"rb_done{n:02d}", name=f"Tax forms #{n}", status="Completed", total=5 + n,
            created_at=now - timedelta(days=2, hours=n), first_seen_at=now - timedelta(days=1),
            destinations={"inkit_storage": (5 + n, 0, 0), "magic_link": (5 + n, 0, 0)},
        )
    # salesforce: 1 % of deliveries failed over two days, 60 % this hour.
    hour = hour_of(now)
    DestinationTrend.objects.bulk_create(
        [DestinationTrend(hour=hour - timedelta(hours=n), destination="salesforce", completed=100, failed=1) for n in range(2, 50)]
        + [DestinationTrend(hour=hour, destination="salesforce", completed=20, failed=30)]
        + [DestinationTrend(hour=hour - timedelta(hours=n), destination="sepire", completed=40, failed=n % 3) for n in range(30)]
    )
    finished_sync(ago=timedelta(seconds=20))


def attention(page) -> dict[str, str]:
    """Each panel entry's text by kind."""
    entries = page.locator("#attention .attention-item")
    return {entries.nth(n).get_attribute("data-kind"): " ".join(entries.nth(n).inner_text().split()) for n in range(entries.count())}


def shot(page, results_dir, name: str) -> None:
    """The whole page, and what the first screen shows. caret="initial":
    hiding the caret would inject a style element, which the CSP refuses."""
    page.screenshot(path=results_dir / f"{name}.png", full_page=True, caret="initial")
    page.screenshot(path=results_dir / f"{name}-screen.png", caret="initial")


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("width", list(SIZES))
def test_every_page_at_every_width_is_clean_accessible_and_fits(
    watched, ops_user, triage_data, results_dir, axe_source, width, theme
):
    page = watched(viewport={"width": width, "height": SIZES[width]}, color_scheme=theme)
    name = f"{width}-{theme}"
    problems: dict[str, list[str]] = {}

    page.goto("/login/")
    shot(page, results_dir, f"login-{name}")
    problems["login"] = run_axe(page, axe_source)
    sign_in(page, "ops", "ops-password-1")
    page.wait_for_selector("#attention")

    # The panel, against the data above.
    entries = attention(page)
    assert list(entries) == ["stuck", "overdue", "stuck_soon", "recent_failures", "failing_destinations"]
    assert entries["stuck"].startswith("⚠ 2 stuck In Progress with no progress for 60 min or more")
    assert "Statements March no progress for 2 h" in entries["stuck"]
    assert "rb_stuck_b no progress seen in 1 h 30 min" in entries["stuck"]
    assert entries["overdue"].startswith("1 overdue In Progress for more than 24 h since created")
    assert "Payroll stubs 1 d 6 h old" in entries["overdue"]
    assert entries["stuck_soon"].startswith("◷ 1 stuck soon stuck within 15 min unless they progress")
    assert "Renewal notices stuck in 10 min" in entries["stuck_soon"]
    assert "Invoices April 72% (90 of 125)" in entries["recent_failures"]
    assert re.search(
        r"1 destination failing since \d\d:00, above its own rate over the 7 days before "
        r"salesforce 60% \(30 of 50\), usually 1.0%",
        entries["failing_destinations"],
    )
    assert page.get_attribute("#att-stuck", "href") == "/?stuck=1"
    assert page.get_attribute("#att-overdue", "href") == "/?overdue=1"
    assert page.get_attribute("#att-stuck_soon", "href") == "/?stuck_soon=1"
    assert page.get_attribute("#att-recent_failures", "href") == "/?recent_failures=1&sort=-failure_rate"
    assert page.get_attribute("#att-failing_destinations", "href") == "/?destination=salesforce&failed=1"

    # Honest times: a batch never seen progressing says so, and when it will be stuck.
    fresh = page.locator("tr", has=page.locator("#open-rb_fresh"))
    assert "first seen 3 min ago, no progress seen yet" in fresh.inner_text()
    assert "stuck in 56 min" in fresh.inner_text()
    failing = page.locator("tr", has=page.locator("#open-rb_failing"))
    assert "72% failed" in failing.inner_text()
    assert "badge-with-failures" in failing.locator(".badge").get_attribute("class")

    # Nothing sideways; at 1024 the columns that tell stuck are in view.
    shot(page, results_dir, f"list-{name}")
    assert horizontal_overflow(page) == 0
    if width >= 1024:
        assert horizontal_overflow(page, ".table-wrap") == 0
        for cell in ("td.col-created_at", "td.col-last_progress_at", "td.col-failure_rate"):
            box = page.locator(f"tbody tr:first-child {cell}").bounding_box()
            assert box and box["x"] + box["width"] <= width, cell
    else:
        # A phone: one card per batch, the header on one line.
        assert page.evaluate("getComputedStyle(document.querySelector('table.batches tbody tr')).display") == "grid"
        card = page.locator("tbody tr").first.bounding_box()
        assert card["x"] >= 0 and card["x"] + card["width"] <= width
        label = "(s) => getComputedStyle(document.querySelector(s), '::before').content"
        assert page.evaluate(label, "tbody tr td.col-total") == '"Docs "'
        assert page.locator("thead").is_hidden()
        assert page.locator(".topbar").bounding_box()["height"] < 56
        assert page.locator("#f-sort").is_visible()
        # What needs attention comes first, above the filters.
        assert page.locator("#attention").bounding_box()["y"] < page.locator("#filters").bounding_box()["y"]
        page.locator("table.batches").scroll_into_view_if_needed()
        page.screenshot(path=results_dir / f"list-{name}-cards.png", caret="initial")

    # The triage entry's view: exactly its batches (htmx, on a page axe has
    # not touched: axe leaves empty style attributes that htmx's settling
    # would copy, which the CSP rightly refuses).
    page.click("#att-overdue")
    page.wait_for_url(re.compile(r"overdue=1"))
    page.wait_for_function("() => document.querySelectorAll('table.batches tbody tr').length === 1")
    assert page.locator("#f-overdue").is_checked()

    page.goto("/")
    shot(page, results_dir, f"list-{name}")
    problems["list"] = run_axe(page, axe_source)

    page.goto("/batches/rb_overdue/")
    assert "overdue" in page.locator(".detail-id").inner_text()
    shot(page, results_dir, f"detail-{name}")
    assert horizontal_overflow(page) == 0
    problems["detail"] = run_axe(page, axe_source)

    page.goto("/trends/")
    assert page.locator("#dest-salesforce svg.chart").count() == 4
    shot(page, results_dir, f"trends-{name}")
    assert horizontal_overflow(page) == 0
    problems["trends"] = run_axe(page, axe_source)

    page.goto("/sync-runs/")
    shot(page, results_dir, f"sync-runs-{name}")
    assert horizontal_overflow(page) == 0  # Its wide table scrolls in its own box.
    problems["sync-runs"] = run_axe(page, axe_source)

    page.goto("/?created_after=nope")
    assert "These filters cannot be applied" in page.inner_text("main")
    problems["bad-filter"] = run_axe(page, axe_source)

    problems = {where: found for where, found in problems.items() if found}
    assert problems == {}
    # The 400 is the point of the last page: Chromium logs it as a failed load.
    assert page.problems(allow=("status of 400",)) == []


def test_search_as_you_type_sends_one_request_per_change(watched, ops_user, triage_data):
    page = watched()
    sign_in(page, "ops", "ops-password-1")
    page.wait_for_selector("table.batches")
    searches: list[str] = []
    page.on("request", lambda r: searches.append(r.url) if r.headers.get("hx-request") and "q=" in r.url else None)

    # Typing, one key every 50 ms: one request, after the pause.
    page.locator("#f-q").press_sequentially("Invoices", delay=50)
    page.wait_for_url(re.compile(r"q=Invoices"))
    page.wait_for_function("() => document.querySelectorAll('table.batches tbody tr').length === 1")
    assert [parse_qs(urlsplit(url).query)["q"] for url in searches] == [["Invoices"]]

    # Enter on the same text: nothing more to ask.
    page.press("#f-q", "Enter")
    page.locator("#f-q").press_sequentially(" Apr", delay=30)
    # Enter straight after typing: still one request for the change.
    page.press("#f-q", "Enter")
    page.wait_for_url(re.compile(r"q=Invoices\+Apr"))
    expect(page.locator(".htmx-request")).to_have_count(0)
    assert [parse_qs(urlsplit(url).query)["q"] for url in searches] == [["Invoices"], ["Invoices Apr"]]
    assert page.evaluate("document.activeElement.id") == "f-q"
    assert page.problems() == []


def test_the_admin_runs_under_the_same_policy(watched, django_user_model, fast_passwords, triage_data):
    django_user_model.objects.create_superuser("boss", password="boss-password-1")
    page = watched()
    sign_in(page, "boss", "boss-password-1")
    for path in ("/admin/", "/admin/batches/batch/?status__exact=In+Progress", "/admin/batches/batch/rb_overdue/change/",
                 "/admin/batches/syncrun/", "/admin/auth/user/add/"):
        page.goto(path)
        assert page.locator("#content").count() == 1, path
    # The admin's pages link no icon, so Chromium asks for /favicon.ico.
    assert page.problems(allow=("status of 404",)) == []
