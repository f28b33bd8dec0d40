"""The sync service against the simulator over real HTTP, with faults injected."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from batches.inkit import InkitClient
from batches.models import Batch, BatchEvent, SyncListing, SyncLock, SyncRun
from batches.sync import STOPPED, TIME_LIMIT, FullSweep, runs, shutdown_requested, sync_all

from .conftest import TOKEN, no_sleep

pytestmark = pytest.mark.django_db


def assert_database_matches(sim) -> None:
    """The database holds exactly the simulator's batches, field for field."""
    expected = sim.snapshot()
    stored = {b.id: b for b in Batch.objects.present().prefetch_related("destinations")}
    assert sorted(stored) == sorted(expected)
    for batch_id, item in expected.items():
        batch = stored[batch_id]
        assert batch.raw == item
        assert (batch.name, batch.status, batch.total) == (item["name"], item["status"], item["total"])
        assert batch.created_at == datetime.fromisoformat(item["created_at"])
        destinations = {d.name: d for d in batch.destinations.all()}
        assert sorted(destinations) == sorted(item["destinations"])
        for name, counts in item["destinations"].items():
            dest = destinations[name]
            assert (dest.count, dest.completed, dest.failed, dest.in_progress, dest.status) == (
                counts["count"], counts["completed"], counts["failed"], counts["in_progress"], counts.get("status"),
            )
            # The copy the list sorts a destination's batches by.
            assert dest.batch_created_at == batch.created_at
        sums = [sum(d[key] for d in item["destinations"].values()) for key in ("count", "completed", "failed", "in_progress")]
        assert [batch.count, batch.completed, batch.failed, batch.in_progress] == sums


def writes_to(queries, table: str) -> list[str]:
    """Statements writing a table's content (not the checked_at every read moves)."""
    return [
        q["sql"] for q in queries
        if table in q["sql"] and q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
        and not q["sql"].lstrip().upper().startswith("UPDATE \"BATCHES_BATCH\" SET CHECKED_AT")
    ]


def test_a_first_sync_copies_every_batch_exactly(simulator, inkit):
    run = sync_all(client=inkit)
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert run.complete
    assert_database_matches(simulator)
    total = len(simulator.snapshot())
    assert (run.batches_seen, run.batches_created, run.batches_updated) == (total, total, 0)
    assert run.page_count == -(-total // 25)
    # Every page once, plus the probes of the order and the re-reads that
    # prove the listing complete (seams, the newest end): a handful.
    assert run.page_count < run.pages_fetched <= run.page_count + 8
    assert run.api_requests == run.pages_fetched and run.api_retries == 0
    assert run.summary["batches"] == total


def test_it_includes_the_reference_examples_batches(simulator, inkit):
    sync_all(client=inkit)
    batch = Batch.objects.get(pk="rb_6WtDgF7RGqdS5Uzea9neZJ")
    assert batch.name == "test" and batch.status == "Completed"
    assert Batch.objects.get(pk="rb_esvglATMyCTJ5JfeVrFA").destinations.count() == 0


def test_a_second_sync_without_changes_writes_no_batch_rows(simulator, inkit):
    first = sync_all(client=inkit)
    with CaptureQueriesContext(connection) as queries:
        run = sync_all(client=inkit)
    # Only when each batch was last read moved on.
    assert Batch.objects.filter(checked_at__gte=run.started_at).count() == run.batches_seen
    assert Batch.objects.filter(checked_at__lt=first.finished_at).count() == 0
    assert run.outcome == SyncRun.Outcome.SUCCEEDED
    assert run.batches_unchanged == run.batches_seen == len(simulator.snapshot())
    assert run.batches_created == run.batches_updated == run.batches_gone == 0
    assert writes_to(queries.captured_queries, "batches_batch\"") == []
    assert writes_to(queries.captured_queries, "batches_batchdestination") == []
    assert writes_to(queries.captured_queries, "batches_batchevent") == []
    assert_database_matches(simulator)


def test_it_writes_changes_and_records_them_in_history(simulator, inkit):
    sync_all(client=inkit)
    target = next(i for i in simulator.items() if i["status"] == "In Progress" and i["destinations"])
    name, dest = next(iter(target["destinations"].items()))
    before = Batch.objects.get(pk=target["id"])
    progressed = dict(dest, completed=dest["completed"] + 1, in_progress=max(dest["in_progress"] - 1, 0))
    simulator.set_batch(target["id"], destinations={**target["destinations"], name: progressed})

    run = sync_all(client=inkit)

    assert run.batches_updated == 1
    assert_database_matches(simulator)
    after = Batch.objects.get(pk=target["id"])
    assert after.last_progress_at > before.last_progress_at
    assert after.first_seen_at == before.first_seen_at
    event = BatchEvent.objects.get(batch=after)
    assert event.kind == BatchEvent.Kind.CHANGED
    assert event.changes["completed"] == [before.completed, before.completed + 1]
    assert event.changes["destinations"][name]["completed"] == [dest["completed"], dest["completed"] + 1]


def test_a_change_without_progress_does_not_move_last_progress(simulator, inkit):
    sync_all(client=inkit)
    target = next(i for i in simulator.items() if i["status"] == "In Progress")
    before = Batch.objects.get(pk=target["id"])
    simulator.set_batch(target["id"], name="renamed by ops")
    sync_all(client=inkit)
    after = Batch.objects.get(pk=target["id"])
    assert after.name == "renamed by ops"
    assert after.last_progress_at == before.last_progress_at
    assert after.last_changed_at > before.last_changed_at
    assert not BatchEvent.objects.filter(batch=after).exists()  # Not a status or count change.


def test_a_status_change_is_progress(simulator, inkit):
    sync_all(client=inkit)
    target = next(i for i in simulator.items() if i["status"] == "In Progress" and not i["destinations"])
    before = Batch.objects.get(pk=target["id"])
    simulator.set_batch(target["id"], status="Completed")
    sync_all(client=inkit)
    after = Batch.objects.get(pk=target["id"])
    assert after.status == "Completed" and after.last_progress_at > before.last_progress_at
    assert BatchEvent.objects.get(batch=after, kind=BatchEvent.Kind.CHANGED).changes["status"] == ["In Progress", "Completed"]


def test_a_destination_that_disappears_is_removed(simulator, inkit):
    sync_all(client=inkit)
    target = next(i for i in simulator.items() if len(i["destinations"]) >= 2)
    dropped, *kept = sorted(target["destinations"])
    simulator.set_batch(target["id"], destinations={k: target["destinations"][k] for k in kept})
    sync_all(client=inkit)
    assert_database_matches(simulator)
    event = BatchEvent.objects.get(batch_id=target["id"])
    assert event.changes["destinations"][dropped] == "removed"


def test_a_destination_added_to_a_known_batch_carries_its_created_at(simulator, inkit):
    sync_all(client=inkit)
    target = next(
        i for i in simulator.items() if i["destinations"] and "box" not in i["destinations"]
    )
    box = {"count": 2, "completed": 1, "failed": 1, "in_progress": 0, "status": "completed"}
    simulator.set_batch(target["id"], destinations={**target["destinations"], "box": box})
    run = sync_all(client=inkit)
    assert run.batches_updated == 1
    assert_database_matches(simulator)


def test_a_batch_whose_created_at_moves_takes_its_destinations_along(simulator, inkit):
    # Inkit does not move a batch's created_at; should it, the destination
    # rows' copy follows, although their counts did not change.
    sync_all(client=inkit)
    target = next(i for i in simulator.items() if i["destinations"])
    simulator.set_batch(target["id"], created_at="2021-03-04T05:06:07Z")
    run = sync_all(client=inkit)
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert run.batches_updated == 1
    assert_database_matches(simulator)
    assert not BatchEvent.objects.filter(batch_id=target["id"]).exists()


@pytest.mark.parametrize("fault", ["429", "500", "502", "503", "504", "bad-json", "reset", "slow"])
def test_it_recovers_from_each_transient_fault(simulator, settings, fault):
    client = InkitClient(settings.INKIT_API_BASE_URL, TOKEN, sleep=no_sleep, read_timeout=0.5)
    simulator.faults.slow_seconds = 1.5
    # Faults on the first page and again in the middle of the concurrent part.
    simulator.faults.queue.extend([fault, fault])
    run = sync_all(client=client, concurrency=3)
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert run.complete
    assert run.api_retries >= 2
    assert run.api_requests == run.pages_fetched + run.api_retries
    assert_database_matches(simulator)


def test_a_failed_sync_keeps_what_it_wrote_and_the_next_one_converges(simulator, settings):
    client = InkitClient(settings.INKIT_API_BASE_URL, TOKEN, sleep=no_sleep, max_retries=2)
    gone = simulator.items()[0]["id"]
    simulator.remove_batch(gone)
    Batch.objects.create(
        id=gone, status="In Progress", total=1, created_at=timezone.now(), first_seen_at=timezone.now(),
        last_changed_at=timezone.now(), last_progress_at=timezone.now(), raw={},
    )
    # Page 1 (newest first), page 1 (oldest first), the last page (6, with
    # 2 batches) are read; page 5 fails on every attempt.
    simulator.faults.queue.extend(["200"] * 3 + ["503"] * 3)

    failed = sync_all(client=client, concurrency=1)

    assert failed.outcome == SyncRun.Outcome.FAILED
    assert "page 5" in failed.error and "503" in failed.error
    assert not failed.complete
    # Page 1 both ways are kept (page 6, the 2 newest, was on page 1 newest first).
    assert failed.batches_created == 50
    assert Batch.objects.count() == 51
    assert Batch.objects.get(pk=gone).gone_at is None  # Never marked gone after a failure.

    recovered = sync_all(client=client)
    assert recovered.outcome == SyncRun.Outcome.SUCCEEDED
    assert_database_matches(simulator)
    assert Batch.objects.get(pk=gone).gone_at is not None


def test_a_batch_absent_from_a_complete_sync_is_marked_gone_and_can_return(simulator, inkit):
    sync_all(client=inkit)
    removed = simulator.items()[5]
    simulator.remove_batch(removed["id"])

    run = sync_all(client=inkit)

    assert run.complete and run.batches_gone == 1
    batch = Batch.objects.get(pk=removed["id"])
    assert batch.gone_at is not None
    assert BatchEvent.objects.filter(batch=batch, kind=BatchEvent.Kind.GONE).count() == 1
    assert_database_matches(simulator)



def test_a_gone_batch_that_is_listed_again_comes_back(simulator, inkit):
    sync_all(client=inkit)
    batch_id = simulator.items()[5]["id"]
    Batch.objects.filter(pk=batch_id).update(gone_at=timezone.now())

    run = sync_all(client=inkit)

    assert run.batches_updated == 1
    assert Batch.objects.get(pk=batch_id).gone_at is None
    assert BatchEvent.objects.filter(batch_id=batch_id, kind=BatchEvent.Kind.RETURNED).count() == 1
    assert_database_matches(simulator)


def test_batches_created_mid_sync_are_neither_missed_nor_duplicated(simulator, inkit):
    sync_all(client=inkit)
    # 40 new batches arrive just before page 3 is served: the listing grows
    # by two pages while the sync reads it.
    simulator.faults.add_when_serving = {3: 40}
    run = sync_all(client=inkit, concurrency=2)
    assert run.outcome == SyncRun.Outcome.SUCCEEDED
    assert run.complete, run.note
    assert run.batches_created == 40
    assert run.batches_gone == 0
    assert Batch.objects.filter(gone_at__isnull=False).count() == 0
    assert_database_matches(simulator)


def test_a_listing_out_of_order_is_never_used_to_mark_batches_gone(httpserver):
    """A server whose pages follow no order cannot prove the listing complete."""
    old = timezone.now() - timedelta(days=2)
    Batch.objects.create(
        id="rb_old", status="Completed", total=1, created_at=old, first_seen_at=old,
        last_changed_at=old, last_progress_at=old, raw={},
    )

    def item(n: int, day: int) -> dict:
        return {"id": f"rb_{n}", "name": None, "status": "Completed", "total": 1,
                "created_at": f"2024-01-{day:02d}T00:00:00.000000Z", "destinations": {}}

    pages = {1: [item(1, 9), item(2, 7)], 2: [item(3, 8), item(4, 6)]}

    def answer(request: Request) -> Response:
        number = int(request.args["page"])
        body = {"items": pages.get(number, []), "metadata": {"pagination": {
            "current_page": number, "next_page": 2 if number == 1 else None, "page_count": 2,
            "page_size": 2, "prev_page": None, "total_count": 4}}}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/v1/batch").respond_with_handler(answer)  # Whatever the sort.
    client = InkitClient(httpserver.url_for("/v1"), "t", sleep=no_sleep)
    run = sync_all(client=client)
    assert run.outcome == SyncRun.Outcome.UNVERIFIED, run.error
    assert not run.complete
    assert "completeness not verified: pages 1 and 2 do not follow in order" in run.note
    assert Batch.objects.get(pk="rb_old").gone_at is None
    assert Batch.objects.filter(pk__startswith="rb_").count() == 5


def oldest_first(sim) -> list[dict]:
    return sorted(sim.items(), key=lambda item: (item["created_at"], item["id"]))


def test_an_unreadable_batch_fails_the_sync_loudly_but_keeps_the_rest(simulator, inkit):
    bad = oldest_first(simulator)[30]  # On page 2, at 25 a page, oldest first.
    simulator.set_batch(bad["id"], total="lots")
    run = sync_all(client=inkit)
    assert run.outcome == SyncRun.Outcome.FAILED
    assert run.error.startswith("1 batches could not be read: page 2: batch " + bad["id"])
    assert "total is 'lots'" in run.error
    assert not run.complete
    assert Batch.objects.count() == len(simulator.items()) - 1


def test_it_fails_clearly_without_a_token(simulator, settings):
    settings.INKIT_API_TOKEN = ""
    run = sync_all()
    assert run.outcome == SyncRun.Outcome.FAILED
    assert run.error == "INKIT_API_TOKEN is not set, so there is nothing to sync from"
    assert not SyncLock.objects.filter(holder__isnull=False).exists()


def test_it_says_when_inkit_rejects_the_token(simulator, settings):
    settings.INKIT_API_TOKEN = "wrong"
    run = sync_all()
    assert run.outcome == SyncRun.Outcome.FAILED
    assert "rejected the API token (401)" in run.error
    assert "wrong" not in run.error


def test_pages_are_fetched_concurrently_within_the_bound(simulator, inkit):
    simulator.faults.latency_seconds = 0.05
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    fetch = inkit.list_batches

    def counting(**kwargs):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            return fetch(**kwargs)
        finally:
            with lock:
                in_flight -= 1

    inkit.list_batches = counting
    run = sync_all(client=inkit, concurrency=3)
    assert run.outcome == SyncRun.Outcome.SUCCEEDED
    assert peak == 3
    assert_database_matches(simulator)


# Single flight ---------------------------------------------------------------------


def test_a_sync_that_finds_the_lock_taken_is_recorded_as_skipped(simulator, inkit):
    holder = SyncRun.objects.create()
    assert SyncLock.acquire(holder, 300)[0]
    run = sync_all(client=inkit)
    assert run.outcome == SyncRun.Outcome.SKIPPED
    assert f"#{holder.pk}" in run.note
    assert Batch.objects.count() == 0
    assert inkit.stats.requests == 0


def test_an_expired_lock_is_taken_over_and_its_run_marked_failed(simulator, inkit):
    killed = SyncRun.objects.create()
    SyncLock.acquire(killed, 300)
    SyncLock.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    run = sync_all(client=inkit)
    assert run.outcome == SyncRun.Outcome.SUCCEEDED
    killed.refresh_from_db()
    assert killed.outcome == SyncRun.Outcome.FAILED
    assert "stopped without finishing" in killed.error


def test_the_lock_is_released_after_a_sync(simulator, inkit):
    sync_all(client=inkit)
    assert SyncLock.current_holder() is None
    assert sync_all(client=inkit).outcome == SyncRun.Outcome.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_two_syncs_at_once_run_one_at_a_time(simulator, settings):
    """Two threads with their own database connections start syncs together:
    one syncs, the other is skipped."""
    simulator.faults.latency_seconds = 0.1
    barrier = threading.Barrier(2)
    runs: list[SyncRun] = []

    def start() -> None:
        client = InkitClient(settings.INKIT_API_BASE_URL, TOKEN, sleep=no_sleep)
        barrier.wait()
        try:
            runs.append(sync_all(client=client))
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(run.outcome for run in runs) == [SyncRun.Outcome.SKIPPED, SyncRun.Outcome.SUCCEEDED]
    assert_database_matches(simulator)


def test_a_retry_backoff_is_cut_short_when_the_worker_shuts_down(simulator):
    simulator.faults.queue.extend(["503"] * 3)

    def stop_after_the_first_answer() -> None:
        while not simulator.requests:
            time.sleep(0.005)
        shutdown_requested.set()  # As the worker_shutting_down signal does.

    stopper = threading.Thread(target=stop_after_the_first_answer)
    stopper.start()
    try:
        run = sync_all()  # The client from settings waits through wait_unless_stopping.
    finally:
        stopper.join()
        shutdown_requested.clear()
    assert run.outcome == SyncRun.Outcome.FAILED
    assert run.error == STOPPED
    assert run.api_requests == 1  # No retry was made after the stop.
    assert SyncLock.current_holder() is None


# Parallel writers ----------------------------------------------------------------
# Outside a transaction, on PostgreSQL, pages are written by SYNC_WRITERS
# threads with connections of their own; these tests let them.

parallel = pytest.mark.django_db(transaction=True)


@parallel
@pytest.mark.parametrize("fault", [None, "503", "bad-json"])
def test_parallel_writers_copy_every_batch_exactly(simulator, settings, fault):
    client = InkitClient(settings.INKIT_API_BASE_URL, TOKEN, sleep=no_sleep)
    if fault:
        simulator.faults.queue.extend(["200", "200", fault, fault])
    simulator.faults.add_when_serving = {4: 30}  # The listing grows mid-sync.
    run = sync_all(client=client, concurrency=4, writers=3)
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert run.complete, run.note
    assert run.batches_created == run.batches_seen == len(simulator.snapshot())
    assert_database_matches(simulator)
    again = sync_all(client=client, concurrency=4, writers=3)
    assert again.batches_unchanged == again.batches_seen


@parallel
def test_parallel_writers_stop_at_the_first_failure_and_keep_what_they_wrote(simulator, settings):
    client = InkitClient(settings.INKIT_API_BASE_URL, TOKEN, sleep=no_sleep, max_retries=1)
    simulator.faults.queue.extend(["200", "200", "200", "200", "500", "500"])
    run = sync_all(client=client, concurrency=1, writers=2)
    assert run.outcome == SyncRun.Outcome.FAILED
    assert "page 4" in run.error
    # Page 1 both ways and pages 6 and 5 (the newest 27, 25 of them on page
    # 1 newest first), written before the failure.
    assert Batch.objects.count() == run.batches_created == 25 + 25 + 2
    assert SyncLock.current_holder() is None


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite takes one writer at a time")
@parallel
def test_a_page_racing_another_writer_for_a_new_batch_is_written_again(simulator, inkit, monkeypatch):
    """Two writers both see a batch as new (the listing put it on two pages):
    the second one's COPY waits on the first one's uncommitted row, fails
    when it commits, and the page is written again as an update."""
    page = inkit.list_batches(page=1, page_size=25, sort="created_at")
    item = page.items[0].raw
    inserted = threading.Event()
    release = threading.Event()
    attempts = []
    upsert = runs.upsert_batches

    def counted_upsert(items, now, read_at):
        attempts.append(len(items))
        return upsert(items, now, read_at)

    monkeypatch.setattr(runs, "upsert_batches", counted_upsert)

    def other_writer() -> None:
        with transaction.atomic():
            Batch.objects.create(
                id=item["id"], status="In Progress", total=1, created_at=timezone.now(),
                first_seen_at=timezone.now(), last_changed_at=timezone.now(),
                last_progress_at=timezone.now(), raw={},
            )
            inserted.set()
            release.wait(30)  # Commit only once the page's COPY waits on the row.
        connection.close()

    def waiting_on_a_lock() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
            return cursor.fetchone()[0] > 0

    run = SyncRun.objects.create()
    heartbeat = runs.Heartbeat(run, threaded=False)
    sync = FullSweep(
        run, inkit, concurrency=1, writers=1, deadline=time.monotonic() + 60, progress=None,
        heartbeat=heartbeat, listing=SyncListing.load(),
    )
    other = threading.Thread(target=other_writer)
    other.start()
    assert inserted.wait(30)
    writer = threading.Thread(target=lambda: (sync.write_now(page.items, timezone.now()), connection.close()))
    writer.start()
    deadline = time.monotonic() + 30
    while not waiting_on_a_lock() and time.monotonic() < deadline:
        time.sleep(0.02)
    release.set()
    writer.join(30)
    other.join(30)

    assert attempts == [25, 25]  # The COPY failed once; the page went again.
    assert (run.batches_created, run.batches_updated) == (24, 1)
    stored = Batch.objects.get(pk=item["id"])
    assert stored.raw == item and stored.status == item["status"]


def test_a_last_page_that_fills_up_mid_sync_is_read_again(settings):
    """Page 3 of 3 is read while it holds 5 batches; then 25 batches are
    created and page 2 reports 4 pages. The 20 that joined page 3 are not
    on page 4: the sync must read page 3 again to miss none of them."""
    settings.INKIT_PAGE_SIZE = 25
    start = datetime(2024, 1, 1, tzinfo=UTC)
    batches = [
        {"id": f"rb_{n:03d}", "name": None, "status": "Completed", "total": 1, "destinations": {},
         "created_at": (start + timedelta(minutes=n)).isoformat().replace("+00:00", "Z")}
        for n in range(80)
    ]
    listing = {"size": 55}
    page_three_read = threading.Event()

    def answer(request: Request) -> Response:
        number = int(request.args["page"])
        if number == 2:
            page_three_read.wait(10)
            listing["size"] = 80  # 25 batches are created now.
        size = listing["size"]
        pages = -(-size // 25)
        body = {
            "items": batches[(number - 1) * 25 : min(number * 25, size)],
            "metadata": {"pagination": {
                "current_page": number, "next_page": number + 1 if number < pages else None,
                "page_count": pages, "page_size": 25, "prev_page": None, "total_count": size}},
        }
        if number == 3:
            page_three_read.set()
        return Response(json.dumps(body), content_type="application/json")

    server = HTTPServer(threaded=True)
    server.start()
    try:
        server.expect_request("/v1/batch").respond_with_handler(answer)
        client = InkitClient(server.url_for("/v1"), "t", sleep=no_sleep)
        run = sync_all(client=client, concurrency=2)
    finally:
        server.clear()
        server.stop()
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert run.complete, run.note
    assert sorted(Batch.objects.values_list("id", flat=True)) == [b["id"] for b in batches]
    assert run.batches_seen == run.batches_created == 80


def test_a_batch_deleted_mid_sync_on_a_page_already_read_skips_nothing(simulator, inkit):
    """Oldest first, read from the last page back: a batch deleted below the
    page being read pulls the rest down into pages still to read, so
    nothing slips past and nothing is wrongly marked gone."""
    sync_all(client=inkit)
    listing = oldest_first(simulator)
    deleted = listing[0]["id"]
    simulator.faults.remove_when_serving = {2: [deleted]}

    run = sync_all(client=inkit, concurrency=1)

    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert run.complete and run.batches_gone == 0
    assert Batch.objects.filter(gone_at__isnull=False).count() == 0
    # The deleted batch was read (page 1, first) before it went: the next
    # sweep, which no longer finds it, confirms and marks it.
    following = sync_all(client=inkit)
    assert following.batches_gone == 1
    assert Batch.objects.get(pk=deleted).gone_at is not None
    assert_database_matches(simulator)


def test_nothing_is_marked_gone_when_inkit_cannot_confirm_it(simulator, settings):
    client = InkitClient(settings.INKIT_API_BASE_URL, TOKEN, sleep=no_sleep, max_retries=0)
    sync_all(client=client)
    before = client.stats.requests
    sync_all(client=client, concurrency=1)
    reads = client.stats.requests - before  # What a sweep of this listing asks.
    removed = simulator.items()[3]["id"]
    simulator.remove_batch(removed)
    simulator.faults.queue.extend(["200"] * reads + ["503"])  # The confirmation fails.

    run = sync_all(client=client, concurrency=1)

    assert run.outcome == SyncRun.Outcome.SUCCEEDED
    assert run.batches_gone == 0
    assert Batch.objects.get(pk=removed).gone_at is None
    assert "confirming with Inkit failed" in run.note


def test_a_sync_stops_itself_at_its_time_limit(simulator, settings):
    """Celery's threads pool cannot stop a task, so the sync keeps its own
    time limit, between pages..."""
    settings.SYNC_TIME_LIMIT_SECONDS = 0
    run = sync_all()
    assert run.outcome == SyncRun.Outcome.FAILED
    assert run.error == TIME_LIMIT
    assert Batch.objects.count() == 0
    assert SyncLock.current_holder() is None


def test_a_retry_wait_past_the_time_limit_is_not_waited(simulator, settings):
    """...and before a retry wait that would end past it."""
    settings.SYNC_TIME_LIMIT_SECONDS = 30
    simulator.faults.retry_after = "60"
    simulator.faults.queue.append("429")
    run = sync_all()
    assert run.outcome == SyncRun.Outcome.FAILED
    assert run.error == TIME_LIMIT
    assert run.api_requests == 1
