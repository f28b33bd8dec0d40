"""The dashboard in a real browser: sign in, filter, sort, page, live refresh,
Sync now on a real worker, export, and the same controls without JavaScript."""

from __future__ import annotations

import csv
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from batches.models import Batch, BatchDestination, SyncRun
from tests.factories import finished_sync, make_batch

from .conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

IN_PROGRESS = 70
COMPLETED = 20


@pytest.fixture
def batches():
    """70 In Progress batches (failed 0..69, a few stuck), 20 Completed, one
    with a name that is markup; and the summary a sync would store."""
    now = timezone.now()
    for n in range(IN_PROGRESS):
        make_batch(
            id=f"rb_ip{n:03d}", name=f"Statements #{n}", status="In Progress", total=200,
            created_at=now - timedelta(minutes=n), destinations={"salesforce": (100, n, 100 - n)},
            last_progress_at=now - timedelta(hours=5) if n % 10 == 0 else None,
        )
    for n in range(COMPLETED):
        make_batch(
            id=f"rb_done{n:03d}", name=f"Invoices #{n}", status="Completed", total=5,
            created_at=now - timedelta(hours=2, minutes=n), destinations={"inkit_storage": (5, 0, 0), "sepire": (5, 0, 0)},
        )
    make_batch(id="rb_markup", name="<script>alert(1)</script> invoices", created_at=now + timedelta(seconds=30))
    finished_sync(ago=timedelta(seconds=20))


def no_dialogs(page) -> None:
    """Fail on any alert(): a name that ran as script would open one."""
    page.on("dialog", lambda dialog: pytest.fail(f"a script ran: dialog {dialog.message!r}"))


def query(page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def column(page, index: int) -> list[str]:
    """The text of one column of the batch table, row by row (1-based)."""
    return page.locator(f"table.batches tbody tr td:nth-child({index})").all_inner_texts()


def active_id(page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.id")


def test_sign_in_filter_sort_and_page_with_htmx(new_page, ops_user, batches, results_dir):
    page = new_page()
    no_dialogs(page)
    sign_in(page, "ops", "ops-password-1")
    page.wait_for_selector("table.batches")
    page.screenshot(path=results_dir / "list-light.png")
    assert page.locator("td.col-name .name", has_text="<script>alert(1)</script> invoices").count() == 1

    # Marks this document: a full page load would lose it.
    page.evaluate("window.sameDocument = true")

    # Keyboard: Space on the In Progress chip filters, and focus stays on it.
    checkbox = page.locator("input[name=status][value='In Progress']")
    checkbox_id = checkbox.get_attribute("id")
    checkbox.focus()
    page.keyboard.press("Space")
    page.wait_for_url(re.compile(r"status=In\+Progress"))
    page.wait_for_function("() => document.querySelectorAll('table.batches tbody tr').length === 50")
    assert all("In Progress" in cell for cell in column(page, 2))
    assert active_id(page) == checkbox_id
    assert page.get_by_text("1–50 of 70 batches").count() == 1

    # Sort by failed: most failures first; the heading keeps focus.
    page.focus("#sort-failed")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"sort=-failed"))
    page.wait_for_function("() => document.querySelector('th.col-failed').getAttribute('aria-sort') === 'descending'")
    failed = [int(cell) for cell in column(page, 5)]
    assert failed == sorted(failed, reverse=True) and failed[0] == IN_PROGRESS - 1
    assert active_id(page) == "sort-failed"
    assert query(page)["status"] == ["In Progress"]

    # Next page: the remaining 20, still filtered and sorted.
    page.focus("#page-next")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"page=2"))
    page.wait_for_function("() => document.querySelectorAll('table.batches tbody tr').length === 20")
    assert [int(cell) for cell in column(page, 5)] == list(range(19, -1, -1))
    # On the last page Next is a disabled control with the same id, so a
    # keyboard user stays where they were rather than back at the page's top.
    assert active_id(page) == "page-next"
    assert page.get_attribute("#page-next", "aria-disabled") == "true"
    assert page.evaluate("window.sameDocument") is True

    # The back button returns to the previous view (fetched afresh).
    page.go_back()
    page.wait_for_function("() => document.querySelectorAll('table.batches tbody tr').length === 50")
    assert "page" not in query(page) and query(page)["sort"] == ["-failed"]

    # A summary figure applies its filter, and the form follows.
    page.click("#sum-stuck")
    page.wait_for_url(re.compile(r"/\?stuck=1$"))
    page.wait_for_function("() => document.querySelectorAll('table.batches tbody tr').length === 7")
    assert page.locator("#f-stuck").is_checked()
    assert not page.locator(f"#{checkbox_id}").is_checked()
    assert page.locator(".stuck-flag", has_text=re.compile(r"stuck for 5 h")).count() == 7


def test_the_list_in_dark_mode(new_page, ops_user, batches, results_dir):
    page = new_page(color_scheme="dark")
    sign_in(page, "ops", "ops-password-1", then="/?sort=last_progress_at")
    page.wait_for_selector("table.batches")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"
    page.screenshot(path=results_dir / "list-dark.png")


def test_the_live_refresh_picks_up_changes_and_keeps_what_the_user_was_doing(new_page, ops_user, batches, settings):
    settings.DASHBOARD_REFRESH_SECONDS = 1
    page = new_page(viewport={"width": 1440, "height": 600})
    sign_in(page, "ops", "ops-password-1", then="/?status=In+Progress&sort=-failed")
    page.wait_for_selector("table.batches")
    url = page.url

    # Search text not sent yet (as while the search as you type waits for a
    # pause: set without an input event), the cursor in it, the page scrolled down.
    page.focus("#f-q")
    page.evaluate("document.getElementById('f-q').value = 'half typed'")
    page.evaluate("window.scrollTo(0, 400)")

    Batch.objects.filter(pk="rb_ip069").update(name="Renamed while watching", failed=70)
    BatchDestination.objects.filter(batch_id="rb_ip069").update(failed=70)
    page.wait_for_selector("text=Renamed while watching", timeout=30_000)

    assert page.url == url
    assert page.input_value("#f-q") == "half typed"
    assert active_id(page) == "f-q"
    assert page.evaluate("window.scrollY") == 400

    # Hidden tab: no refreshes. Every poll asks document.visibilityState, so
    # counting the asks tells when polls came and were turned down: the test
    # waits for the page's own polls, not for a guess of how long they take.
    # The page also notes what set off each refresh: becoming visible, or a
    # poll (dashboard.js says which in the live-refresh event's detail).
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url) if request.headers.get("hx-request") else None)
    page.evaluate(
        "window.refreshTriggers = [];"
        "document.addEventListener('htmx:configRequest', (event) => window.refreshTriggers.push("
        " event.detail.triggeringEvent && event.detail.triggeringEvent.detail"
        " ? event.detail.triggeringEvent.detail.reason : 'unknown'));"
        "window.visibilityAsks = 0;"
        "Object.defineProperty(document, 'visibilityState', {configurable: true,"
        " get() { window.visibilityAsks += 1; return 'hidden'; }});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    # A refresh already in flight lands first (htmx marks it .htmx-request).
    expect(page.locator(".htmx-request")).to_have_count(0, timeout=30_000)
    requests.clear()
    asked, made = page.evaluate("[window.visibilityAsks, window.refreshTriggers.length]")
    # Three polls turned down, or (a failure, seen at once) a refresh made.
    page.wait_for_function(f"() => window.visibilityAsks >= {asked + 3} || window.refreshTriggers.length > {made}", timeout=30_000
    )
    assert page.evaluate("window.refreshTriggers.length") == made
    assert requests == []

    # Visible again: one at once, asked for by becoming visible, not by the next poll.
    with page.expect_request(lambda request: request.headers.get("hx-request") == "true", timeout=30_000) as refresh:
        page.evaluate(
            "window.refreshTriggers = [];"
            "Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});"
            "document.dispatchEvent(new Event('visibilitychange'))"
        )
    assert "status=In+Progress" in refresh.value.url
    assert page.evaluate("window.refreshTriggers[0]") == "visible"


@pytest.fixture
def slow_inkit(simulator, monkeypatch):
    """Inkit answering slowly and a worker reading one page at a time, so a
    sync lasts long enough for the header to show it running."""
    simulator.faults.latency_seconds = 0.6
    monkeypatch.setenv("SYNC_CONCURRENCY", "1")
    return simulator


def test_sync_now_runs_on_a_real_worker_and_the_header_follows_it(new_page, staff_user, slow_inkit, worker):
    page = new_page()
    sign_in(page, "lead", "lead-password-1")
    header = page.locator("#sync-status")
    assert "No successful sync yet" in header.inner_text()

    page.click("#sync-now")
    page.wait_for_selector("[data-testid=sync-running] >> text=/Syncing.*page \\d+ of \\d+/", timeout=30_000)
    page.wait_for_selector("[data-testid=sync-last] >> text=Last sync", timeout=60_000)
    assert header.get_attribute("hx-trigger") is None  # Polling has stopped.

    run = SyncRun.objects.get(trigger=SyncRun.Trigger.MANUAL)
    # Sync now is a quick sync; the first one runs as a full sweep.
    assert run.outcome == SyncRun.Outcome.SUCCEEDED and run.pages_done == run.page_count > 1
    assert run.kind == SyncRun.Kind.FULL
    assert Batch.objects.count() == len(slow_inkit.snapshot())


def test_export_downloads_the_filtered_sorted_set(new_page, ops_user, batches):
    page = new_page()
    sign_in(page, "ops", "ops-password-1", then="/?status=Completed&sort=name")
    with page.expect_download() as download_info:
        page.click("#export")
    download = download_info.value
    assert re.fullmatch(r"batches-\d{8}-\d{6}\.csv", download.suggested_filename)
    with open(download.path(), newline="") as f:
        rows = list(csv.DictReader(f))
    expected = list(Batch.objects.filter(status="Completed").order_by("name", "id").values_list("id", flat=True))
    assert [row["id"] for row in rows] == expected
    done = next(row for row in rows if row["id"] == "rb_done000")
    assert (done["name"], done["sepire_count"], done["inkit_storage_completed"]) == ("Invoices #0", "5", "5")


def test_without_javascript_the_same_controls_are_plain_forms_and_links(new_page, ops_user, batches):
    page = new_page(javascript=False)
    sign_in(page, "ops", "ops-password-1")
    page.check("input[name=status][value='Completed']", force=True)
    page.click("#f-apply")
    page.wait_for_url(re.compile(r"status=Completed"))
    assert len(column(page, 1)) == COMPLETED + 1  # and the markup-named one
    page.click("#sort-total")
    page.wait_for_url(re.compile(r"sort=-total"))
    assert query(page)["status"] == ["Completed"]
    page.click("a.batch-link >> nth=0")
    page.wait_for_url(re.compile(r"/batches/rb_"))
    page.click("#back")
    page.wait_for_url(re.compile(r"status=Completed.*sort=-total"))
