"""The sync task through a real broker and a real Celery worker process.

With REDIS_URL set (as in CI) the broker is Redis, and a Redis that cannot
be reached fails these tests; without it, the embedded filesystem broker.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from batches.models import SyncRun
from batches.tasks import sync_batches

from .processes import Process, base_env, database_url_for_tests, poll, procfile, stop_all
from .test_sync import assert_database_matches


def succeeded_run() -> SyncRun | None:
    return SyncRun.objects.filter(outcome=SyncRun.Outcome.SUCCEEDED).first()


@pytest.mark.django_db(transaction=True)
def test_a_queued_sync_runs_on_a_real_worker(simulator, worker):
    sync_batches.delay(trigger=SyncRun.Trigger.MANUAL)
    run = poll(succeeded_run, timeout=60, what="a sync on the worker")
    assert run.trigger == SyncRun.Trigger.MANUAL
    assert run.complete
    assert_database_matches(simulator)


@pytest.mark.django_db(transaction=True)
def test_beat_syncs_as_it_starts_without_waiting_an_interval(simulator, worker):
    """A fresh deploy shows batches at once, not one interval later."""
    env = base_env(
        DATABASE_URL=database_url_for_tests(),
        INKIT_API_BASE_URL=settings.INKIT_API_BASE_URL,
        INKIT_API_TOKEN=simulator.token,
        SYNC_INTERVAL_SECONDS="3600",
    )
    beat = Process("beat", procfile()["beat"], env)
    try:
        run = poll(succeeded_run, timeout=60, what="a sync sent by beat as it started")
    finally:
        stop_all([beat])
    assert run.trigger == SyncRun.Trigger.SCHEDULE
    assert_database_matches(simulator)
