"""The sync in real worker and beat processes: the request budget holds
across them, and a killed worker costs little."""

from __future__ import annotations

import signal
import time

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from batches.models import SyncLock, SyncRun
from batches.sync import sync_all
from dashboard.sync_status import SyncStatus

from .processes import (
    Process,
    base_env,
    database_url_for_tests,
    poll,
    procfile,
    stop_all,
    sweep_on_a_worker,
)

pytestmark = pytest.mark.django_db(transaction=True)


def worst_minute(times: list[float]) -> int:
    """The most requests in any 60-second window."""
    times = sorted(times)
    worst, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 60:
            start += 1
        worst = max(worst, end - start + 1)
    return worst


@pytest.mark.skipif(not django_settings.REDIS_URL, reason="without Redis the budget is per process")
def test_two_workers_and_beat_never_exceed_the_budget_in_any_minute(
    simulator, settings, tmp_path, processes
):
    """About 70 s of beat's quick syncs and full sweeps on two workers,
    against a listing whose sweep alone wants three times the budget: the
    simulator's own log never shows more than the budget in 60 s."""
    from dashboard.celery import app

    budget = 40
    simulator.add_batches(2900, status="Completed")  # 120 pages of 25
    # A verified sweep first (here, unbudgeted), so beat's quick syncs run as
    # quick syncs: each reads the in-flight batches, a dozen a minute.
    assert sync_all().outcome == SyncRun.Outcome.SUCCEEDED
    app.control.purge()
    env = base_env(
        DATABASE_URL=database_url_for_tests(),
        INKIT_API_BASE_URL=settings.INKIT_API_BASE_URL,
        INKIT_API_TOKEN=settings.INKIT_API_TOKEN,
        INKIT_PAGE_SIZE="25",
        INKIT_MAX_REQUESTS_PER_MINUTE=str(budget),
        SYNC_INTERVAL_SECONDS="5",
        SYNC_FULL_SWEEP_MINUTES="1",
        SYNC_TIME_LIMIT_SECONDS="300",
        BATCHWATCH_VAR_DIR=str(tmp_path),
    )
    commands = procfile()
    workers = [Process(f"worker-{n}", commands["worker"] + f" -n w{n}@%h", env) for n in (1, 2)]
    processes.extend(workers)
    for worker in workers:
        worker.wait_for_line(r"ready\.")
    simulator.reset_log()
    beat = Process("beat", commands["beat"], env)
    processes.append(beat)
    beat.wait_for_line(r"beat: Starting")
    time.sleep(70)
    stop_all([beat, *workers])

    times = [record.at for record in simulator.requests]
    worst = worst_minute(times)
    assert worst <= budget
    # The runs wanted more than the budget, so the window was full: the cap
    # was what held them back.
    assert worst >= 0.8 * budget, (
        f"only {worst} requests in the busiest minute: the test proves nothing"
    )
    runs = SyncRun.objects.exclude(outcome=SyncRun.Outcome.SKIPPED)
    assert {run.kind for run in runs} == {SyncRun.Kind.FULL, SyncRun.Kind.QUICK}
    print(
        f"{len(times)} requests in {times[-1] - times[0]:.0f} s, at most {worst_minute(times)} in any minute"
    )


def test_a_killed_worker_stops_showing_as_syncing_and_its_lock_is_taken_over(
    simulator, settings, processes
):
    """SIGKILL mid-sweep: no goodbye, no release. The header stops showing
    the run as syncing once its heartbeat lapses (SYNC_LOCK_SECONDS, 45 by
    default), and the next sweep then takes the lock over."""
    simulator.add_batches(500, status="Completed")  # 126 pages of 5, 0.2 s each: about 25 s
    simulator.faults.latency_seconds = 0.2
    worker, run = sweep_on_a_worker(settings, processes, INKIT_MAX_REQUESTS_PER_MINUTE="1000000")
    # Beating: the lock stays ahead of the clock while the sweep reads.
    time.sleep(1.5 * settings.SYNC_LOCK_SECONDS / 9)
    assert SyncStatus.load().running == run
    assert SyncRun.objects.get(pk=run.pk).outcome == SyncRun.Outcome.RUNNING

    worker.signal(signal.SIGKILL)
    worker.wait(10)
    killed_at = time.monotonic()
    assert SyncLock.current_holder() == run.pk  # Nobody released it.

    poll(
        lambda: SyncStatus.load().running is None,
        settings.SYNC_LOCK_SECONDS + 10,
        "the header letting go",
    )
    lapsed = time.monotonic() - killed_at
    assert lapsed <= settings.SYNC_LOCK_SECONDS + 1
    status = SyncStatus.load()
    assert status.last_failure == run
    assert status.last_failure_message == "The worker stopped without finishing this sync."

    simulator.faults.latency_seconds = 0
    taken_over = sync_all()
    took = time.monotonic() - killed_at
    assert taken_over.outcome == SyncRun.Outcome.SUCCEEDED, taken_over.error or taken_over.note
    run.refresh_from_db()
    assert run.outcome == SyncRun.Outcome.FAILED and "lock expired" in run.error
    assert run.finished_at <= timezone.now()
    print(f"killed: header let go after {lapsed:.1f} s, lock taken over after {took:.1f} s")
