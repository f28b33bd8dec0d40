"""The full sweep against every way the listing can behave: either order
for sort=created_at, -created_at honoured or not, batches deleted and
created while it pages, with faults on top. The database must equal the
simulator afterwards, in the same run, with no batch wrongly marked gone."""

from __future__ import annotations

import itertools

import pytest

from batches.inkit import InkitClient
from batches.models import Batch, SyncListing, SyncRun
from batches.sync import sync_all

from .conftest import TOKEN, no_sleep
from .test_sync import assert_database_matches

pytestmark = pytest.mark.django_db

# Every combination, each with a different fault mix on top.
FAULTS = [
    ["429", "200", "503"],
    ["bad-json", "200", "200", "slow"],
    ["500", "reset"],
    ["200", "200", "502", "429"],
]
COMBINATIONS = [
    pytest.param(
        order,
        honoured,
        deleting,
        creating,
        FAULTS[n % len(FAULTS)],
        id=f"{order}-{'honoured' if honoured else 'ignored'}{'-deleting' if deleting else ''}{'-creating' if creating else ''}",
    )
    for n, (order, honoured, deleting, creating) in enumerate(
        itertools.product(["newest", "oldest"], [True, False], [False, True], [False, True])
    )
]


def assert_mirrors_but_for_deleted_after_reading(sim) -> None:
    """Every batch Inkit has is stored exactly; a stored batch Inkit no
    longer has was deleted while the sweep read (after it read it), and
    none Inkit has is marked gone."""
    expected = sim.snapshot()
    present = set(Batch.objects.present().values_list("id", flat=True))
    missing = set(expected) - present
    if missing:
        import os

        if os.environ.get("SYNC_DEBUG"):
            print(
                "REQUESTS",
                [
                    (
                        r.path[-6:],
                        r.params.get("page"),
                        r.params.get("sort"),
                        r.params.get("page_size"),
                        round(r.at % 100, 4),
                        r.status,
                    )
                    for r in sim.requests[-40:]
                ],
            )
            print("MISSING", [(m, expected[m]["created_at"]) for m in missing])
            print(
                "RUN",
                SyncRun.objects.order_by("-pk")
                .values_list("note", "pages_fetched", "api_requests")
                .first(),
            )
    assert not missing
    assert present - set(expected) <= set(sim.deleted_while_listing)
    assert not Batch.objects.filter(pk__in=list(expected), gone_at__isnull=False).exists()
    for batch in Batch.objects.filter(pk__in=list(expected)):
        assert batch.raw == expected[batch.id]


@pytest.mark.parametrize(("order", "honoured", "deleting", "creating", "faults"), COMBINATIONS)
def test_a_full_sweep_mirrors_the_listing_however_it_behaves(
    simulator, settings, order, honoured, deleting, creating, faults
):
    client = InkitClient(
        settings.INKIT_API_BASE_URL, TOKEN, sleep=no_sleep, read_timeout=0.5, pool_size=8
    )
    simulator.faults.slow_seconds = 1.5
    simulator.faults.created_at_order = order
    simulator.faults.descending_honoured = honoured
    first = sync_all(client=client, concurrency=3)
    assert first.outcome == SyncRun.Outcome.SUCCEEDED, first.note or first.error
    assert_database_matches(simulator)
    listing = SyncListing.load()
    # Oldest first wherever the server offers it: the order nothing slips past in.
    offers_oldest_first = order == "oldest" or honoured
    assert listing.order == ("ascending" if offers_oldest_first else "descending")

    # Now the listing changes while the sweep reads it, and Inkit misbehaves.
    simulator.faults.delete_every_listing = 3 if deleting else 0
    simulator.faults.create_every_listing = 2 if creating else 0
    simulator.faults.queue.extend(faults)
    for _ in range(3):
        run = sync_all(client=client, concurrency=3)
        assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.note or run.error
        assert run.complete
        assert_mirrors_but_for_deleted_after_reading(simulator)
    assert run.api_retries >= 0

    # Once the listing is still again, a sweep marks the deleted ones gone.
    simulator.faults.delete_every_listing = simulator.faults.create_every_listing = 0
    final = sync_all(client=client, concurrency=3)
    assert final.outcome == SyncRun.Outcome.SUCCEEDED, final.note
    assert_database_matches(simulator)
    if deleting:
        gone = set(Batch.objects.filter(gone_at__isnull=False).values_list("id", flat=True))
        assert gone == set(simulator.deleted_while_listing) & gone
        assert gone and not gone & set(simulator.snapshot())
