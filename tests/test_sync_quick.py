"""Quick syncs: new and in-flight batches between full sweeps, at a cost
that follows activity, not the account's size."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from batches.inkit import InkitClient, parse_batch
from batches.models import IN_PROGRESS, Batch, SyncListing, SyncLock, SyncRun
from batches.simulator import InkitSimulator
from batches.sync import sync_all, upsert_batches

from .conftest import TOKEN, no_sleep
from .test_sync import assert_database_matches

pytestmark = pytest.mark.django_db

QUICK = SyncRun.Kind.QUICK
# A batch one document of five into its run.
IN_FLIGHT = {"inkit_storage": {"count": 5, "completed": 1, "failed": 0, "in_progress": 4}}


@pytest.fixture
def account(settings):
    """A settled account of 1,000 batches (40 pages) with nothing in
    flight; the test adds the activity."""
    sim = InkitSimulator(batches=1000, seed=3, token=TOKEN, max_page_size=25)
    with sim.serve() as server:
        settings.INKIT_API_BASE_URL = server.url
        settings.INKIT_API_TOKEN = TOKEN
        settings.INKIT_PAGE_SIZE = 25
        settings.INKIT_MAX_REQUESTS_PER_MINUTE = 1_000_000
        settle(sim)
        yield sim


def settle(sim: InkitSimulator) -> None:
    """Every batch finished, as on an account with no activity."""
    for item in sim.items():
        if item["status"] == IN_PROGRESS:
            sim.set_batch(item["id"], status="Completed")


def client_for(settings) -> InkitClient:
    return InkitClient(settings.INKIT_API_BASE_URL, TOKEN, sleep=no_sleep, pool_size=8)


def list_requests(sim: InkitSimulator) -> list[int]:
    return [int(r.params.get("page", 1)) for r in sim.requests if r.path == "/v1/batch"]


def progress(sim: InkitSimulator, batch_id: str) -> None:
    item = sim.snapshot()[batch_id]
    name = next(iter(item["destinations"]))
    dest = item["destinations"][name]
    moved = dict(dest, completed=dest["completed"] + 1, in_progress=dest["in_progress"] - 1)
    sim.set_batch(batch_id, destinations={**item["destinations"], name: moved})


def test_a_quick_sync_before_any_verified_sweep_runs_as_a_full_sweep(simulator, inkit):
    run = sync_all(kind=QUICK, client=inkit)
    assert run.kind == SyncRun.Kind.FULL
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.note
    assert run.note.startswith("No full sweep had verified the listing yet")
    assert SyncListing.load().ready_for_quick_syncs
    assert_database_matches(simulator)


@pytest.mark.parametrize("order", ["newest", "oldest"])
@pytest.mark.parametrize("honoured", [True, False])
def test_a_quick_sync_reads_the_new_and_in_flight_batches_only(account, settings, order, honoured):
    account.faults.created_at_order = order
    account.faults.descending_honoured = honoured
    client = client_for(settings)
    flying = [
        i["id"]
        for i in account.add_batches(
            60,
            destinations=IN_FLIGHT,
        )
    ]
    sweep = sync_all(client=client)
    assert sweep.outcome == SyncRun.Outcome.SUCCEEDED, sweep.note

    new = [i["id"] for i in account.add_batches(30)]
    for batch_id in flying[::3]:
        progress(account, batch_id)
    old = account.items()[500]  # Completed, in the middle of the listing.
    account.set_batch(old["id"], name="renamed long ago")  # Not in flight: left to the sweep.
    account.reset_log()

    run = sync_all(kind=QUICK, client=client)

    assert run.kind == QUICK and run.outcome == SyncRun.Outcome.SUCCEEDED, run.note
    assert run.batches_created == 30
    assert run.batches_updated == len(flying[::3])
    stored = {b.id: b for b in Batch.objects.filter(pk__in=new + flying)}
    snapshot = account.snapshot()
    assert all(stored[batch_id].raw == snapshot[batch_id] for batch_id in new + flying)
    assert Batch.objects.get(pk=old["id"]).name != "renamed long ago"
    # The newest end only: 90 new and in-flight batches sit on its 4 pages.
    pages = list_requests(account)
    assert len(account.requests) <= 8, pages
    assert all(page <= 5 or page >= 36 for page in pages), pages
    # The next sweep brings the rest.
    assert sync_all(client=client).outcome == SyncRun.Outcome.SUCCEEDED
    assert_database_matches(account)


def quick_sync_requests(settings, batches: int) -> int:
    """Requests of a quick sync on an account of `batches` settled batches
    plus the same activity: 40 in flight, 20 more created, 10 progressing."""
    sim = InkitSimulator(batches=batches, seed=5, token=TOKEN, max_page_size=25)
    settle(sim)
    with sim.serve() as server:
        settings.INKIT_API_BASE_URL = server.url
        client = client_for(settings)
        flying = [
            i["id"]
            for i in sim.add_batches(
                40,
                destinations=IN_FLIGHT,
            )
        ]
        assert sync_all(client=client).outcome == SyncRun.Outcome.SUCCEEDED
        sim.add_batches(20)
        for batch_id in flying[:10]:
            progress(sim, batch_id)
        before = client.stats.requests
        run = sync_all(kind=QUICK, client=client)
        assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.note
        client.close()
        return client.stats.requests - before


def test_a_quick_sync_costs_the_same_on_a_small_and_a_large_account(settings):
    settings.INKIT_PAGE_SIZE = 25
    settings.INKIT_API_TOKEN = TOKEN
    settings.INKIT_MAX_REQUESTS_PER_MINUTE = 1_000_000
    small = quick_sync_requests(settings, 300)
    Batch.objects.all().delete()
    SyncListing.objects.all().delete()
    large = quick_sync_requests(settings, 3000)
    assert small == large


def test_a_quick_sync_runs_beside_a_full_sweep_but_not_beside_another_quick_sync(simulator, inkit):
    assert sync_all(client=inkit).outcome == SyncRun.Outcome.SUCCEEDED
    sweeping = SyncRun.objects.create(kind=SyncRun.Kind.FULL)
    assert SyncLock.acquire(sweeping, 300)[0]
    assert sync_all(kind=QUICK, client=inkit).outcome == SyncRun.Outcome.SUCCEEDED
    assert sync_all(client=inkit).outcome == SyncRun.Outcome.SKIPPED
    quick = SyncRun.objects.create(kind=QUICK)
    assert SyncLock.acquire(quick, 300)[0]
    skipped = sync_all(kind=QUICK, client=inkit)
    assert skipped.outcome == SyncRun.Outcome.SKIPPED
    assert f"#{quick.pk}" in skipped.note


def test_a_write_never_replaces_a_newer_read(simulator, inkit):
    sync_all(client=inkit)
    item = next(i for i in simulator.items() if i["status"] == IN_PROGRESS and i["destinations"])
    now = timezone.now()
    newer = dict(item, name="read later")
    older = dict(item, name="read earlier")
    assert upsert_batches([parse_batch(newer)], now, now).updated == 1
    late = upsert_batches(
        [parse_batch(older)], now + timedelta(seconds=1), now - timedelta(seconds=5)
    )
    assert (late.updated, late.stale) == (0, 1)
    stored = Batch.objects.get(pk=item["id"])
    assert stored.name == "read later" and stored.checked_at == now


def test_in_flight_is_one_rule_for_the_queryset_and_the_batch(simulator, inkit):
    sync_all(client=inkit)
    now = timezone.now()
    day = timedelta(hours=24)
    Batch.objects.filter(status=IN_PROGRESS).update(created_at=now - 2 * day)
    a, b, c, d = Batch.objects.filter(status=IN_PROGRESS).order_by("id")[:4]
    Batch.objects.filter(pk=a.pk).update(created_at=now - timedelta(hours=1))  # new
    # Seen progressing an hour ago, long after it was first seen.
    Batch.objects.filter(pk=b.pk).update(
        first_seen_at=now - 3 * day, last_progress_at=now - timedelta(hours=1)
    )
    # Never seen progressing: last_progress_at is still first_seen_at.
    Batch.objects.filter(pk=c.pk).update(
        first_seen_at=now - timedelta(hours=1), last_progress_at=now - timedelta(hours=1)
    )
    Batch.objects.filter(pk=d.pk).update(created_at=now - timedelta(hours=1), gone_at=now)
    flying = set(Batch.objects.in_flight(now).values_list("id", flat=True))
    assert flying == {a.pk, b.pk}
    assert {batch.pk for batch in Batch.objects.all() if batch.is_in_flight(now)} == flying
