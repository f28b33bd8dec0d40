"""The sync task through a real broker and a real Celery worker process.

With REDIS_URL set (as in CI) the broker is Redis, and a Redis that cannot
be reached fails these tests; without it, the embedded filesystem broker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from batches.models import SyncRun
from batches.tasks import sync_batches

from .conftest import TOKEN
from .test_sync import assert_database_matches

ROOT = Path(__file__).resolve().parent.parent


def database_url_for_tests() -> str:
    """A DATABASE_URL naming the test database this process is using."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    host = db["HOST"] or "127.0.0.1"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def worker(simulator):
    """A Celery worker in its own process, on the same broker and test database."""
    env = dict(
        os.environ,
        DATABASE_URL=database_url_for_tests(),
        INKIT_API_BASE_URL=settings.INKIT_API_BASE_URL,
        INKIT_API_TOKEN=TOKEN,
        INKIT_PAGE_SIZE=str(settings.INKIT_PAGE_SIZE),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "--pool", "threads",
         "--concurrency", "2", "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        output.append(line)
        if "ready." in line:
            break
        if process.poll() is not None:
            pytest.fail("the worker exited:\n" + "".join(output))
    else:
        process.kill()
        pytest.fail("the worker did not start in 60 s:\n" + "".join(output))
    yield process
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the worker did not stop within 30 s of SIGTERM")


def wait_for_run(outcome: str, timeout: float = 60) -> SyncRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = SyncRun.objects.filter(outcome=outcome).first()
        if run is not None:
            return run
        time.sleep(0.2)
    pytest.fail(f"no sync run became {outcome} within {timeout} s: {list(SyncRun.objects.values())}")


@pytest.mark.django_db(transaction=True)
def test_a_queued_sync_runs_on_a_real_worker(simulator, worker):
    sync_batches.delay(trigger=SyncRun.Trigger.MANUAL)
    run = wait_for_run(SyncRun.Outcome.SUCCEEDED)
    assert run.trigger == SyncRun.Trigger.MANUAL
    assert run.complete
    assert_database_matches(simulator)


def test_the_broker_is_redis_when_redis_url_is_set():
    if settings.REDIS_URL:
        assert settings.CELERY_BROKER_URL == settings.REDIS_URL
    else:
        assert settings.CELERY_BROKER_URL.startswith("filesystem://")
        assert Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]).is_dir()


def test_beat_runs_the_sync_every_interval():
    entry = settings.CELERY_BEAT_SCHEDULE["sync-batches"]
    assert entry["task"] == sync_batches.name
    assert entry["schedule"] == settings.SYNC_INTERVAL_SECONDS


def test_the_task_is_acked_late_because_the_sync_is_idempotent():
    assert sync_batches.acks_late is True
