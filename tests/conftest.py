"""Shared fixtures: a running Inkit simulator, an Inkit client that does not
sleep between retries, and ready-made users."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import override_settings

from batches.inkit import InkitClient
from batches.simulator import InkitSimulator

from .processes import Process, base_env, database_url_for_tests, procfile, stop_all

TOKEN = "simulator-token"

# The List Batches response on Inkit's reference page, verbatim (the vendor's
# example of 7 batches, which the simulator also serves).
VENDOR_EXAMPLE = json.loads((Path(__file__).parent / "data" / "list_batches_reference_example.json").read_text())


def pytest_sessionstart(session: pytest.Session) -> None:
    """CI runs the suite on PostgreSQL and Redis (.ci/run sets both): never
    let it pass on SQLite and the embedded broker by mistake."""
    if os.environ.get("CI") != "true":
        return
    if django_settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise pytest.UsageError("CI=true but DATABASE_URL is not PostgreSQL")
    if not django_settings.REDIS_URL:
        raise pytest.UsageError("CI=true but REDIS_URL is not set")


def no_sleep(seconds: float) -> None:
    """Stand-in for time.sleep so retry tests run at once."""


@pytest.fixture
def simulator(settings) -> Iterator[InkitSimulator]:
    """A frozen simulator (it changes only when a test says so), served over
    real HTTP, with the app's settings pointed at it."""
    sim = InkitSimulator(batches=120, seed=7, token=TOKEN, max_page_size=25)
    with sim.serve() as server:
        settings.INKIT_API_BASE_URL = server.url
        settings.INKIT_API_TOKEN = TOKEN
        settings.INKIT_PAGE_SIZE = 25
        # The budget is tested on its own (test_sync_budget.py); elsewhere it
        # must not slow the suite.
        settings.INKIT_MAX_REQUESTS_PER_MINUTE = 1_000_000
        yield sim


@pytest.fixture
def alert_settings(settings):
    """Stuck and alert settings at known values, every channel off."""
    settings.STUCK_AFTER_MINUTES = 60
    settings.SYNC_STALE_AFTER_MINUTES = 15
    settings.ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_URL = ""
    settings.ALERT_WEBHOOK_TIMEOUT_SECONDS = 5
    settings.PUBLIC_URL = ""
    settings.DEFAULT_FROM_EMAIL = "batchwatch@example.com"


@pytest.fixture
def inkit(simulator, settings) -> Iterator[InkitClient]:
    """A client for the simulator that skips backoff sleeps."""
    client = InkitClient(
        settings.INKIT_API_BASE_URL, TOKEN, sleep=no_sleep, read_timeout=5, pool_size=8
    )
    yield client
    client.close()


@pytest.fixture(scope="session", autouse=True)
def collected_static(tmp_path_factory) -> Iterator[Path]:
    """Static files collected once per run, as a deploy does, so pages render
    with DEBUG off: the manifest storage raises for a file it has no entry
    for (a typo in a {% static %} fails the test that renders it).

    Django's ManifestStaticFilesStorage gives the same hashed names and strict
    lookups as WhiteNoise's production storage; WhiteNoise's extra step,
    compressing every file, is what takes seconds, and tests need no gzip."""
    root = tmp_path_factory.mktemp("staticfiles")
    storages = {
        **django_settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
    }
    with override_settings(STATIC_ROOT=root, STORAGES=storages):
        call_command("collectstatic", interactive=False, verbosity=0)
        yield root


@pytest.fixture
def fast_passwords(settings) -> None:
    """A cheap password hasher: the default one spends most of a second per
    password by design, which tests need not pay."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def ops_user(django_user_model, fast_passwords):
    """An ops person (password ops-password-1): sees everything, may not
    start a sync."""
    return django_user_model.objects.create_user("ops", password="ops-password-1")


@pytest.fixture
def staff_user(django_user_model, fast_passwords):
    """Staff (password lead-password-1): may also press Sync now."""
    return django_user_model.objects.create_user("lead", password="lead-password-1", is_staff=True)


@pytest.fixture
def ops_client(client, ops_user):
    """The test client signed in as ops_user."""
    client.force_login(ops_user)
    return client


@pytest.fixture
def staff_client(client, staff_user):
    """The test client signed in as staff_user."""
    client.force_login(staff_user)
    return client


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Started processes, killed at the end whatever happens."""
    started: list[Process] = []
    yield started
    for process in started:
        if process.running():
            process.kill()


@pytest.fixture
def worker(simulator) -> Iterator[Process]:
    """The Procfile's Celery worker in its own process, on this run's broker
    (emptied first: a task left over from an earlier run would muddle the
    test) and test database, syncing from the simulator."""
    from dashboard.celery import app

    app.control.purge()
    env = base_env(
        DATABASE_URL=database_url_for_tests(),
        INKIT_API_BASE_URL=django_settings.INKIT_API_BASE_URL,
        INKIT_API_TOKEN=TOKEN,
        INKIT_PAGE_SIZE=str(django_settings.INKIT_PAGE_SIZE),
    )
    process = Process("worker", procfile()["worker"], env)
    try:
        process.wait_for_line(r"ready\.")
        yield process
    finally:
        stop_all([process])
