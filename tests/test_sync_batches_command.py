"""python manage.py sync_batches: one sync in the foreground."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command

from batches.models import Batch, SyncLock, SyncRun

from .conftest import TOKEN
from .processes import base_env, database_url_for_tests, run_to_completion


@pytest.mark.django_db
def test_it_shows_pages_done_of_the_total_and_ends_with_a_summary(simulator):
    out = io.StringIO()
    call_command("sync_batches", "--concurrency", "1", stdout=out)
    lines = out.getvalue().splitlines()
    pages = -(-len(simulator.items()) // 25)
    assert f"Page {pages} of {pages}" in lines
    run = SyncRun.objects.get()
    assert lines[-1].startswith(f"sync #{run.pk} succeeded in ")
    assert re.search(rf"{pages} of {pages} pages \(\d+ reads\), {len(simulator.items())} batches", lines[-1])
    assert Batch.objects.count() == len(simulator.items())


@pytest.mark.django_db
def test_a_sync_another_one_is_running_exits_2(simulator):
    holder = SyncRun.objects.create()
    SyncLock.acquire(holder, 300)
    with pytest.raises(CommandError) as raised:
        call_command("sync_batches", stdout=io.StringIO())
    assert raised.value.returncode == 2
    assert str(raised.value) == f"sync skipped: Another full sweep (#{holder.pk}) was running."


@pytest.mark.django_db
def test_it_refuses_a_concurrency_below_one(simulator):
    with pytest.raises(CommandError, match="--concurrency must be at least 1"):
        call_command("sync_batches", "--concurrency", "0")


@pytest.mark.django_db(transaction=True)
def test_a_failed_sync_exits_1_with_the_reason_on_one_line(simulator, settings):
    env = base_env(
        DATABASE_URL=database_url_for_tests(),
        INKIT_API_BASE_URL=settings.INKIT_API_BASE_URL,
        INKIT_API_TOKEN="not-" + TOKEN,
    )
    process = run_to_completion("sync_batches", "python manage.py sync_batches", env, timeout=120)
    assert process.popen.returncode == 1
    errors = [line for line in process.lines if line.startswith("CommandError")]
    assert errors == [
        "CommandError: sync failed: Inkit rejected the API token (401): check INKIT_API_TOKEN and its role"
    ]
    assert "not-" + TOKEN not in process.output
