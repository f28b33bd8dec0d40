"""Stuck detection: the transitions into and out of stuck, and of syncing
into and out of stale, with a controlled clock (now= and the sync runs'
times are set by each test; nothing sleeps)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batches import stuck
from batches.models import (
    COMPLETED,
    IN_PROGRESS,
    Alert,
    Batch,
    BatchDestination,
    BatchEvent,
    SyncHealth,
    SyncRun,
)
from batches.stuck import evaluate_stuck
from batches.sync import sync_all
from batches.tasks import check_stuck

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("alert_settings")]

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def make_batch(
    batch_id: str,
    *,
    seen_at: datetime = T0,
    status: str = IN_PROGRESS,
    name: str | None = "Invoices",
    created_at: datetime | None = None,
    destinations: dict[str, tuple[int, int, int, int]] | None = None,
) -> Batch:
    """A batch as the sync leaves it when it first sees it at seen_at.
    destinations: name -> (count, completed, failed, in_progress)."""
    destinations = {"inkit_storage": (10, 2, 1, 7)} if destinations is None else destinations
    sums = [sum(d[i] for d in destinations.values()) for i in range(4)]
    batch = Batch.objects.create(
        id=batch_id,
        name=name,
        status=status,
        total=sums[0],
        created_at=created_at or seen_at - 5 * MIN,
        count=sums[0],
        completed=sums[1],
        failed=sums[2],
        in_progress=sums[3],
        first_seen_at=seen_at,
        last_changed_at=seen_at,
        last_progress_at=seen_at,
        raw={},
    )
    BatchDestination.objects.bulk_create(
        BatchDestination(
            batch=batch, name=dest, count=c, completed=done, failed=f, in_progress=p,
            batch_created_at=batch.created_at,
        )
        for dest, (c, done, f, p) in destinations.items()
    )
    return batch


def synced(at: datetime, outcome: str = SyncRun.Outcome.SUCCEEDED, *, seconds: int = 5) -> SyncRun:
    """A sync run that started at `at` and finished `seconds` later."""
    return SyncRun.objects.create(
        started_at=at,
        finished_at=at + timedelta(seconds=seconds),
        outcome=outcome,
        complete=outcome == SyncRun.Outcome.SUCCEEDED,
        error="Inkit answered 503" if outcome == SyncRun.Outcome.FAILED else "",
    )


def evaluate_after(at: datetime, **kwargs) -> stuck.Evaluation:
    """A successful sync starting at `at`, then the post-sync evaluation."""
    run = synced(at)
    return evaluate_stuck(now=run.finished_at, sync_run=run, **kwargs)


def progressed(batch_id: str, at: datetime) -> None:
    """What the sync writes when it sees one more document done."""
    Batch.objects.filter(pk=batch_id).update(
        completed=F("completed") + 1,
        in_progress=F("in_progress") - 1,
        last_progress_at=at,
        last_changed_at=at,
    )


def events(kind: str) -> list[BatchEvent]:
    return list(BatchEvent.objects.filter(kind=kind).order_by("pk"))


def test_it_declares_a_batch_stuck_when_it_crosses_the_threshold():
    make_batch("rb_slow")

    assert evaluate_after(T0 + 59 * MIN).stuck == []
    evaluation = evaluate_after(T0 + 60 * MIN)

    assert evaluation.stuck == ["rb_slow"]
    batch = Batch.objects.get(pk="rb_slow")
    # stuck_since is the start of the stuck period: the last progress.
    assert batch.stuck_since == T0
    [event] = events(BatchEvent.Kind.STUCK)
    assert event.batch_id == "rb_slow" and event.seen_at == evaluation.now
    assert event.changes == {"stuck_since": T0.isoformat(), "stuck_after_minutes": 60}
    assert (event.status, event.completed, event.failed, event.in_progress) == (
        IN_PROGRESS,
        2,
        1,
        7,
    )
    assert event.alert == evaluation.alert
    assert evaluation.alert.stuck == 1 and evaluation.alert.sync_run_id == evaluation.sync.basis.pk


def test_it_judges_the_data_as_of_the_sync_start_not_the_clock():
    make_batch("rb_slow")
    # The batch's page was read after 09:59; that the clock says 10:05 now
    # proves nothing about 10:00. No alarm on a guess.
    run = synced(T0 + 59 * MIN)
    assert evaluate_stuck(now=T0 + 65 * MIN, sync_run=run).stuck == []
    assert evaluate_after(T0 + 61 * MIN).stuck == ["rb_slow"]


def test_a_batch_progressing_just_in_time_is_not_declared():
    make_batch("rb_close")
    progressed("rb_close", T0 + 59 * MIN)

    assert evaluate_after(T0 + 61 * MIN).stuck == []
    assert evaluate_after(T0 + 118 * MIN).stuck == []
    assert evaluate_after(T0 + 119 * MIN).stuck == ["rb_close"]
    assert Batch.objects.get(pk="rb_close").stuck_since == T0 + 59 * MIN


def test_a_batch_with_empty_destinations_counts_from_when_it_was_first_seen():
    # Created three days before this app first saw it: its age is no evidence.
    make_batch("rb_empty", destinations={}, created_at=T0 - timedelta(days=3))

    assert evaluate_after(T0 + 30 * MIN).stuck == []
    assert evaluate_after(T0 + 60 * MIN).stuck == ["rb_empty"]


def test_a_batch_that_stays_stuck_is_declared_once():
    make_batch("rb_slow")
    first = evaluate_after(T0 + 60 * MIN)
    again = evaluate_after(T0 + 61 * MIN)
    later = evaluate_after(T0 + 300 * MIN)

    assert first.stuck == ["rb_slow"]
    assert again.stuck == later.stuck == []
    assert again.alert is None and later.alert is None
    assert later.still_stuck == 1
    assert len(events(BatchEvent.Kind.STUCK)) == 1
    assert Alert.objects.count() == 1


def test_a_stuck_batch_that_progresses_recovers_once():
    make_batch("rb_slow")
    evaluate_after(T0 + 60 * MIN)
    progressed("rb_slow", T0 + 70 * MIN)

    evaluation = evaluate_after(T0 + 71 * MIN)

    assert evaluation.recovered == ["rb_slow"]
    assert Batch.objects.get(pk="rb_slow").stuck_since is None
    [event] = events(BatchEvent.Kind.RECOVERED)
    assert event.changes == {"stuck_since": T0.isoformat(), "stuck_for_seconds": 70 * 60}
    assert (
        evaluation.alert.recovered == 1
        and evaluation.alert.subject == "Recovered: Invoices (rb_slow)"
    )
    assert evaluate_after(T0 + 72 * MIN).recovered == []

    # Stalling again for the whole threshold is a new stuck period.
    assert evaluate_after(T0 + 130 * MIN).stuck == ["rb_slow"]
    assert Batch.objects.get(pk="rb_slow").stuck_since == T0 + 70 * MIN


def test_a_stuck_batch_that_completes_is_finished():
    make_batch("rb_done")
    evaluate_after(T0 + 60 * MIN)
    Batch.objects.filter(pk="rb_done").update(status=COMPLETED, last_progress_at=T0 + 90 * MIN)

    evaluation = evaluate_after(T0 + 91 * MIN)

    assert evaluation.finished == ["rb_done"] and evaluation.recovered == []
    [event] = events(BatchEvent.Kind.FINISHED)
    assert event.status == COMPLETED
    assert event.changes["reason"] == "status" and event.changes["stuck_for_seconds"] == 90 * 60
    assert evaluation.alert.subject == "Finished: Invoices (rb_done) (now Completed)"


def test_a_stuck_batch_in_an_unknown_status_is_finished():
    make_batch("rb_odd")
    evaluate_after(T0 + 60 * MIN)
    Batch.objects.filter(pk="rb_odd").update(
        status="Partially Failed", last_progress_at=T0 + 80 * MIN
    )
    assert evaluate_after(T0 + 81 * MIN).finished == ["rb_odd"]


def test_a_batch_that_completes_without_being_stuck_is_not_alerted():
    make_batch("rb_quick")
    Batch.objects.filter(pk="rb_quick").update(status=COMPLETED, last_progress_at=T0 + 10 * MIN)
    evaluation = evaluate_after(T0 + 120 * MIN)
    assert (evaluation.stuck, evaluation.finished, evaluation.alert) == ([], [], None)


def test_a_stuck_batch_inkit_stops_listing_is_finished_as_gone():
    make_batch("rb_vanished")
    evaluate_after(T0 + 60 * MIN)
    Batch.objects.filter(pk="rb_vanished").update(gone_at=T0 + 75 * MIN)

    evaluation = evaluate_after(T0 + 76 * MIN)

    assert evaluation.finished == ["rb_vanished"]
    [event] = events(BatchEvent.Kind.FINISHED)
    assert event.changes["reason"] == "gone" and event.changes["stuck_for_seconds"] == 75 * 60
    assert "no longer listed by Inkit" in evaluation.alert.subject


def test_gone_batches_are_never_declared_stuck():
    make_batch("rb_gone")
    Batch.objects.filter(pk="rb_gone").update(gone_at=T0 + 10 * MIN)
    assert evaluate_after(T0 + 120 * MIN).stuck == []


def test_no_stuck_alarm_after_a_failed_sync():
    make_batch("rb_slow")
    synced(T0 + 10 * MIN)
    failed = synced(T0 + 61 * MIN, SyncRun.Outcome.FAILED)

    # The post-sync hook after the failed run, and a later evaluation on its
    # own (which judges the latest finished run: the failed one).
    assert evaluate_stuck(now=T0 + 62 * MIN, sync_run=failed).stuck == []
    assert evaluate_stuck(now=T0 + 63 * MIN).stuck == []
    assert Batch.objects.get(pk="rb_slow").stuck_since is None
    # The next successful sync sees it.
    assert evaluate_after(T0 + 64 * MIN).stuck == ["rb_slow"]


def test_no_stuck_alarm_on_data_older_than_the_stale_limit():
    make_batch("rb_slow")
    synced(T0 + 61 * MIN)
    # Nothing synced for 20 minutes since: the data is too old to judge.
    evaluation = evaluate_stuck(now=T0 + 82 * MIN)
    assert evaluation.sync.stale and evaluation.stuck == []


def test_recoveries_are_recorded_even_when_the_last_sync_failed():
    make_batch("rb_slow")
    evaluate_after(T0 + 60 * MIN)
    # A failed sync still wrote the pages it read before failing.
    progressed("rb_slow", T0 + 65 * MIN)
    failed = synced(T0 + 65 * MIN, SyncRun.Outcome.FAILED)
    assert evaluate_stuck(now=T0 + 66 * MIN, sync_run=failed).recovered == ["rb_slow"]


def test_raising_the_threshold_does_not_fake_a_recovery(settings):
    make_batch("rb_slow")
    evaluate_after(T0 + 60 * MIN)
    settings.STUCK_AFTER_MINUTES = 180
    evaluation = evaluate_after(T0 + 70 * MIN)
    assert evaluation.recovered == [] and evaluation.still_stuck == 1


def test_stale_syncing_is_alerted_once_and_its_recovery_once():
    synced(T0)
    for minutes in (5, 10, 16):
        synced(T0 + minutes * MIN, SyncRun.Outcome.FAILED)

    assert evaluate_stuck(now=T0 + 14 * MIN).sync_change == ""
    stale = evaluate_stuck(now=T0 + 16 * MIN)
    assert stale.sync.stale and stale.sync_change == "stale"
    assert SyncHealth.declared_stale_since() == T0 + 5 * timedelta(seconds=1)
    alert = stale.alert
    assert alert.sync_state == "stale"
    assert alert.subject == "Syncing stale: no successful sync for 15 min"
    assert alert.payload["sync"]["failed_runs"] == 3
    assert alert.payload["sync"]["last_error"] == "Inkit answered 503"

    assert evaluate_stuck(now=T0 + 30 * MIN).alert is None

    back = evaluate_after(T0 + 40 * MIN)
    assert back.sync_change == "recovered" and back.alert.sync_state == "recovered"
    assert back.alert.subject.startswith("Syncing recovered after 40 min")
    assert SyncHealth.declared_stale_since() is None
    assert evaluate_after(T0 + 41 * MIN).alert is None


def test_a_sync_that_never_succeeded_is_stale_from_its_first_attempt():
    synced(T0, SyncRun.Outcome.FAILED)
    assert not evaluate_stuck(now=T0 + 10 * MIN).sync.stale
    assert evaluate_stuck(now=T0 + 16 * MIN).sync_change == "stale"


def test_a_fresh_install_is_neither_stale_nor_stuck():
    make_batch("rb_slow")
    evaluation = evaluate_stuck(now=T0 + 500 * MIN)
    assert not evaluation.sync.stale and evaluation.stuck == [] and evaluation.alert is None


def test_syncing_recovering_and_batches_stuck_make_one_alert():
    make_batch("rb_slow")
    synced(T0, SyncRun.Outcome.FAILED)
    evaluate_stuck(now=T0 + 20 * MIN)  # Stale.
    evaluation = evaluate_after(T0 + 70 * MIN)
    assert evaluation.sync_change == "recovered" and evaluation.stuck == ["rb_slow"]
    assert Alert.objects.filter(sync_state="recovered").get() == evaluation.alert
    assert evaluation.alert.subject.startswith("Syncing recovered after")
    assert evaluation.alert.subject.endswith(
        "stuck: Invoices (rb_slow), no progress for 1 h 10 min"
    )


def test_a_transition_whose_evaluator_died_is_alerted_by_a_later_one():
    make_batch("rb_orphan")
    Batch.objects.filter(pk="rb_orphan").update(stuck_since=T0)
    BatchEvent.objects.create(
        batch_id="rb_orphan",
        seen_at=T0 + 60 * MIN,
        kind=BatchEvent.Kind.STUCK,
        status=IN_PROGRESS,
        completed=2,
        failed=1,
        in_progress=7,
        changes={"stuck_since": T0.isoformat(), "stuck_after_minutes": 60},
    )
    assert evaluate_after(T0 + 65 * MIN).alert is None  # Its evaluator may still be at work.
    evaluation = evaluate_after(T0 + 71 * MIN)
    assert evaluation.alert is not None and evaluation.alert.stuck == 1
    assert BatchEvent.objects.get(kind=BatchEvent.Kind.STUCK).alert == evaluation.alert


def test_a_mass_stall_is_claimed_in_chunks_into_one_alert(monkeypatch):
    monkeypatch.setattr(stuck, "CLAIM_CHUNK", 40)
    for n in range(130):
        make_batch(f"rb_{n:03}", seen_at=T0 - n * MIN, destinations={})
    evaluation = evaluate_after(T0 + 60 * MIN)
    assert len(evaluation.stuck) == 130
    # Longest without progress first.
    assert evaluation.stuck[:2] == ["rb_129", "rb_128"]
    assert Alert.objects.get().stuck == 130
    assert Batch.objects.declared_stuck().count() == 130


def test_evaluation_is_read_only_when_nothing_changes():
    make_batch("rb_slow")
    evaluate_after(T0 + 60 * MIN)
    run = synced(T0 + 61 * MIN)

    with CaptureQueriesContext(connection) as queries:
        evaluate_stuck(now=run.finished_at, sync_run=run)

    sql = [query["sql"].lstrip().upper() for query in queries.captured_queries]
    assert [q for q in sql if q.startswith(("INSERT", "UPDATE", "DELETE"))] == []
    # A handful of indexed reads, whatever the number of batches (overdue,
    # judged beside stuck, adds one).
    assert len(sql) <= 11


# Wired into the sync ---------------------------------------------------------------


def test_a_real_sync_declares_stuck_and_then_recovered(simulator, inkit):
    sync_all(client=inkit)
    target = next(
        i for i in simulator.items() if i["status"] == "In Progress" and i["destinations"]
    )
    long_ago = timezone.now() - timedelta(hours=2)
    Batch.objects.filter(pk=target["id"]).update(first_seen_at=long_ago, last_progress_at=long_ago)

    run = sync_all(client=inkit)
    check_stuck(sync_run_id=run.pk)  # The task the sync queues after each run.

    [event] = events(BatchEvent.Kind.STUCK)
    assert event.batch_id == target["id"]
    assert event.alert.sync_run == run
    assert Batch.objects.get(pk=target["id"]).stuck_since == long_ago

    name, dest = next(iter(target["destinations"].items()))
    simulator.set_batch(
        target["id"],
        destinations={**target["destinations"], name: dict(dest, completed=dest["completed"] + 1)},
    )
    check_stuck(sync_run_id=sync_all(client=inkit).pk)

    [event] = events(BatchEvent.Kind.RECOVERED)
    assert event.batch_id == target["id"]
    assert Batch.objects.get(pk=target["id"]).stuck_since is None


def test_a_failing_evaluation_never_fails_the_sync(simulator, inkit, monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("evaluator bug")

    monkeypatch.setattr(stuck, "clear_recovered", lambda now: broken())
    with caplog.at_level(logging.ERROR, logger="batches.stuck"):
        run = sync_all(client=inkit)
        # The sync only queues the evaluation; its task never raises.
        assert check_stuck(sync_run_id=run.pk) is None
    assert run.outcome == SyncRun.Outcome.SUCCEEDED
    assert "stuck evaluation after sync" in caplog.text and "evaluator bug" in caplog.text


# Overdue ----------------------------------------------------------------------------


def test_a_batch_in_progress_past_overdue_after_hours_is_declared_once(settings):
    settings.OVERDUE_AFTER_HOURS = 24
    make_batch("rb_old", created_at=T0 - timedelta(hours=23, minutes=59), seen_at=T0)
    make_batch("rb_done", status=COMPLETED, created_at=T0 - timedelta(days=3), seen_at=T0)
    assert evaluate_after(T0).overdue == []

    evaluation = evaluate_after(T0 + 2 * MIN)
    assert evaluation.overdue == ["rb_old"] and evaluation.stuck == []
    [event] = events(BatchEvent.Kind.OVERDUE)
    assert event.changes == {"created_at": (T0 - timedelta(hours=23, minutes=59)).isoformat(), "overdue_after_hours": 24}
    batch = Batch.objects.get(pk="rb_old")
    assert batch.declared_overdue_at == evaluation.now and batch.is_overdue(T0 + 2 * MIN)
    assert evaluation.alert.overdue == 1
    assert evaluation.alert.subject == "Overdue: Invoices (rb_old), In Progress for 1 d since created"

    # Still In Progress later, or progressing: never alerted again.
    progressed("rb_old", T0 + 30 * MIN)
    assert evaluate_after(T0 + 40 * MIN).overdue == []
    assert len(events(BatchEvent.Kind.OVERDUE)) == 1


def test_batches_already_overdue_at_the_first_sync_make_one_digest(settings):
    settings.OVERDUE_AFTER_HOURS = 24
    for n in range(70):
        make_batch(f"rb_{n:03d}", created_at=T0 - timedelta(days=400 - n), seen_at=T0)
    evaluation = evaluate_after(T0)
    assert len(evaluation.overdue) == 70 and Alert.objects.count() == 1
    payload = evaluation.alert.payload
    assert payload["counts"]["overdue"] == 70 and payload["not_listed"]["overdue"] == 20
    assert payload["batches"][0]["id"] == "rb_000"  # Longest In Progress first.
    assert evaluation.alert.subject == "70 batches overdue"
    assert payload["overdue_url"] is None  # No PUBLIC_URL.


def test_no_overdue_alarm_from_a_failed_sync(settings):
    settings.OVERDUE_AFTER_HOURS = 1
    make_batch("rb_old", created_at=T0 - timedelta(hours=5), seen_at=T0)
    run = synced(T0, SyncRun.Outcome.FAILED)
    assert evaluate_stuck(now=run.finished_at, sync_run=run).overdue == []
    assert Batch.objects.get(pk="rb_old").declared_overdue_at is None


def test_the_vendors_old_in_progress_batches_are_overdue_from_the_first_sync(simulator, inkit):
    run = sync_all(client=inkit)
    # What the check_stuck task the sync queued does on a worker.
    evaluate_stuck(sync_run=run)
    overdue = set(Batch.objects.overdue(run.started_at).values_list("id", flat=True))
    declared = {event.batch_id for event in events(BatchEvent.Kind.OVERDUE)}
    assert declared == overdue and len(declared) >= 3
    assert {event.alert_id for event in events(BatchEvent.Kind.OVERDUE)} == {Alert.objects.get().pk}
