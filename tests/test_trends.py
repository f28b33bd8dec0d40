"""Trend rollups: what the sync records as it sees counts change, checked
against a history worked out by hand; retention; the failing-destination
rule; and a real first sync from the simulator."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from batches import trends
from batches.inkit import parse_batch
from batches.models import Batch, CreationTrend, DestinationTrend
from batches.sync import sync_all, upsert_batches

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 10, 12, 20, tzinfo=UTC)  # 20 past the hour.
H = timedelta(hours=1)


def item(batch_id: str, created_at: datetime, status: str = "In Progress", total: int = 10, **destinations):
    """A List Batches item; destinations name=(completed, failed, in_progress)."""
    return parse_batch(
        {
            "id": batch_id,
            "name": None,
            "status": status,
            "total": total,
            "created_at": created_at.isoformat().replace("+00:00", "Z"),
            "destinations": {
                name: {"count": sum(c), "completed": c[0], "failed": c[1], "in_progress": c[2], "status": "in_progress"}
                for name, c in destinations.items()
            },
        }
    )


def documents() -> dict[tuple[datetime, str], tuple[int, int]]:
    return {
        (row.hour, row.destination): (row.completed, row.failed)
        for row in DestinationTrend.objects.order_by("hour", "destination")
    }


def created() -> dict[datetime, tuple[int, int]]:
    return {row.hour: (row.batches, row.documents) for row in CreationTrend.objects.order_by("hour")}


def test_the_rollups_match_a_history_worked_out_by_hand(settings):
    settings.TRENDS_RETENTION_DAYS = 30
    hour = trends.hour_of(T0)  # 12:00
    # 12:20, first sight: A created three hours ago with 5 done and 1 failed
    # at salesforce; B created in this hour with nothing done yet; C created
    # 40 days ago, older than retention: stored, never counted.
    upsert_batches(
        [
            item("rb_a", T0 - 3 * H, total=20, salesforce=(5, 1, 14)),
            item("rb_b", T0 - timedelta(minutes=10), total=4, sepire=(0, 0, 4)),
            item("rb_c", T0 - timedelta(days=40), status="Completed", total=7, salesforce=(7, 0, 0)),
        ],
        T0,
    )
    # 13:05: A moves on at salesforce (+3 done, +2 failed) and gains sepire
    # (4 done); B gets 1 done and 1 failed. The same page read again at
    # 13:06 changes nothing.
    page = [
        item("rb_a", T0 - 3 * H, total=20, salesforce=(8, 3, 9), sepire=(4, 0, 16)),
        item("rb_b", T0 - timedelta(minutes=10), total=4, sepire=(1, 1, 2)),
    ]
    upsert_batches(page, T0 + timedelta(minutes=45))
    upsert_batches(page, T0 + timedelta(minutes=46))
    # 14:30: Inkit corrects A's salesforce down by one (nothing recorded)
    # while B completes (+2 done).
    upsert_batches(
        [
            item("rb_a", T0 - 3 * H, total=20, salesforce=(7, 3, 10), sepire=(4, 0, 16)),
            item("rb_b", T0 - timedelta(minutes=10), status="Completed", total=4, sepire=(3, 1, 0)),
        ],
        T0 + 2 * H + timedelta(minutes=10),
    )

    assert documents() == {
        (hour - 3 * H, "salesforce"): (5, 1),  # A at first sight, at its creation hour.
        (hour + H, "salesforce"): (3, 2),
        (hour + H, "sepire"): (4 + 1, 1),  # A's new destination and B's progress.
        (hour + 2 * H, "sepire"): (2, 0),
    }
    assert created() == {hour - 3 * H: (1, 20), hour: (1, 4)}
    assert Batch.objects.count() == 3


def test_a_first_sight_from_the_future_counts_now_and_old_rows_are_pruned(settings):
    settings.TRENDS_RETENTION_DAYS = 7
    upsert_batches([item("rb_skewed", T0 + 5 * H, salesforce=(2, 0, 0))], T0)
    assert documents() == {(trends.hour_of(T0), "salesforce"): (2, 0)}
    DestinationTrend.objects.create(hour=trends.hour_of(T0) - timedelta(days=8), destination="box", completed=1)
    CreationTrend.objects.create(hour=trends.hour_of(T0) - timedelta(days=8), batches=1)
    assert trends.prune(T0) == 2
    assert list(DestinationTrend.objects.values_list("destination", flat=True)) == ["salesforce"]


def test_a_first_sync_records_every_batch_within_retention_at_its_creation_hour(simulator, inkit, settings):
    settings.TRENDS_RETENTION_DAYS = 30
    run = sync_all(client=inkit)
    assert run.outcome == "succeeded"
    start = trends.retention_start(run.started_at)
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    batches = 0
    for item_ in simulator.items():
        created_at = datetime.fromisoformat(item_["created_at"].replace("Z", "+00:00"))
        if trends.hour_of(created_at) < start:
            continue  # The vendor's 2023 batches among them.
        batches += 1
        for name, dest in item_["destinations"].items():
            expected[name][0] += dest["completed"]
            expected[name][1] += dest["failed"]
    recorded: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in DestinationTrend.objects.all():
        recorded[row.destination][0] += row.completed
        recorded[row.destination][1] += row.failed
    assert dict(recorded) == dict(expected) and batches > 50
    assert sum(row.batches for row in CreationTrend.objects.all()) == batches
    # No spike at the sync's own hour: first sights went to their creation hours.
    assert DestinationTrend.objects.values("hour").distinct().count() > 10

    # A second sync with nothing changed adds nothing.
    before = documents()
    sync_all(client=inkit)
    assert documents() == before


def test_the_charts_read_the_rollups_by_hour_and_by_day():
    now = datetime(2026, 3, 10, 12, 20, tzinfo=UTC)
    hour = trends.hour_of(now)
    DestinationTrend.objects.bulk_create(
        [
            DestinationTrend(hour=hour, destination="sepire", completed=3, failed=1),
            DestinationTrend(hour=hour - 2 * H, destination="sepire", completed=5, failed=0),
            DestinationTrend(hour=hour - 13 * H, destination="sepire", completed=7, failed=2),  # yesterday 23:00
            DestinationTrend(hour=hour - 40 * H, destination="box", completed=1, failed=1),  # 8 March, 20:00
        ]
    )
    CreationTrend.objects.bulk_create(
        [CreationTrend(hour=hour, batches=2, documents=20), CreationTrend(hour=hour - 25 * H, batches=1, documents=5)]
    )
    by_hour = trends.destinations_by_hour(now)
    assert list(by_hour) == ["sepire"]
    assert by_hour["sepire"].values["completed"][-3:] == [5, 0, 3]
    assert by_hour["sepire"].values["completed"][-14] == 7 and by_hour["sepire"].totals == {"completed": 15, "failed": 3}
    by_day = trends.destinations_by_day(now)
    assert by_day["sepire"].values["completed"][-2:] == [7, 8]  # yesterday, today
    assert by_day["box"].values["failed"][-3:] == [1, 0, 0]
    created_by_hour, created_by_day = trends.batches_created(now)
    assert created_by_hour.totals == {"batches": 2, "documents": 20}
    assert created_by_day.values["batches"][-2:] == [1, 2]


@pytest.mark.parametrize(
    ("recent", "baseline", "failing"),
    [
        ((20, 30), (4800, 48), True),  # 60 % against 1 %.
        ((15, 4), (4800, 48), False),  # 21 %, but only 19 deliveries ended.
        ((91, 9), (1000, 0), False),  # 9 % against 0 %: under 10 points...
        ((90, 10), (1000, 0), True),  # ...10 % is 10 points above.
        ((50, 50), (600, 400), False),  # 50 % against 40 %: not 1.5 times.
        ((30, 70), (600, 400), True),  # 70 % against 40 %.
    ],
)
def test_a_destination_fails_well_above_its_week_only_past_both_thresholds(recent, baseline, failing):
    now = datetime(2026, 3, 10, 12, 20, tzinfo=UTC)
    hour = trends.hour_of(now)
    DestinationTrend.objects.create(hour=hour, destination="sepire", completed=recent[0], failed=recent[1])
    DestinationTrend.objects.create(hour=hour - 5 * H, destination="sepire", completed=baseline[0], failed=baseline[1])
    summary = trends.summary_trends(now)
    found = trends.failing_destinations(summary, now)
    assert [d.name for d in found] == (["sepire"] if failing else [])
    # Judged from a summary that no longer covers the last hour: nothing.
    assert trends.failing_destinations(summary, now + 3 * H) == []


def test_a_page_touching_thousands_of_hours_is_written_whole(settings, monkeypatch):
    # SQLite takes the rows in chunks (a first sync's big page spans years).
    monkeypatch.setattr(trends, "_SQLITE_CHUNK", 7)
    settings.TRENDS_RETENTION_DAYS = 400
    page = [item(f"rb_{n:04d}", T0 - n * H, total=1, box=(1, 0, 0), sepire=(0, 1, 0)) for n in range(3000)]
    upsert_batches(page, T0)
    assert DestinationTrend.objects.count() == 6000 and CreationTrend.objects.count() == 3000
    assert sum(DestinationTrend.objects.values_list("completed", flat=True)) == 3000
