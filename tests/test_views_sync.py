"""Sync now (POST /sync/) and the header's sync status (/sync/status/)."""

from __future__ import annotations

import re
import socket
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from batches.models import SyncLock, SyncRun
from batches.tasks import sync_batches

from .factories import finished_sync
from .html import text

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def queued(monkeypatch) -> list[dict]:
    """Stands in for the broker: records what sync_batches.delay() was given."""
    calls: list[dict] = []
    monkeypatch.setattr(sync_batches, "delay", lambda **kwargs: calls.append(kwargs))
    return calls


def polls(response) -> bool:
    """Whether the status fragment asks to be fetched again."""
    tag = re.search(r'<div id="sync-status"[^>]*>', response.content.decode(), re.DOTALL).group(0)
    return 'hx-trigger="every 2s"' in tag


def running_run(pages_fetched: int = 3, page_count: int = 10, *, with_lock: bool = True, started_ago=timedelta(seconds=5)) -> SyncRun:
    run = SyncRun.objects.create(
        started_at=timezone.now() - started_ago, outcome=SyncRun.Outcome.RUNNING,
        pages_fetched=pages_fetched, page_count=page_count,
    )
    if with_lock:
        SyncLock.objects.create(name=SyncLock.NAME, holder=run, expires_at=timezone.now() + timedelta(minutes=5))
    return run


# Sync now ------------------------------------------------------------------------


def test_only_staff_may_start_a_sync(ops_client, queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = ops_client.post("/sync/", **HTMX)
    assert response.status_code == 403
    assert "Only staff can start a sync." in text(response)
    assert callbacks == [] and queued == []


def test_sync_now_is_post_only(staff_client, queued):
    assert staff_client.get("/sync/").status_code == 405
    assert queued == []


def test_sync_now_needs_the_csrf_token(staff_user, queued):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    assert client.post("/sync/").status_code == 403
    assert queued == []


def test_anonymous_visitors_are_sent_to_sign_in(client, queued):
    response = client.post("/sync/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert queued == []


def test_staff_queue_a_manual_sync_once_the_request_commits(staff_client, queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post("/sync/", **HTMX)
    assert response.status_code == 200
    assert queued == []  # Not before the transaction commits.
    for callback in callbacks:
        callback()
    assert queued == [{"trigger": "manual", "kind": "quick"}]  # Sync now: a quick sync.


def test_the_htmx_answer_is_a_header_that_follows_the_queued_sync(staff_client, queued):
    previous = finished_sync()
    response = staff_client.post("/sync/", **HTMX)
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="sync-status"')
    assert polls(response)
    assert re.search(rf'hx-get="/sync/status/\?after={previous.pk}&amp;queued=\d+"', html)
    assert "Sync queued, waiting for a worker" in text(response)


def test_without_javascript_it_goes_back_with_a_message(staff_client, queued):
    response = staff_client.post("/sync/", {"next": "/?status=Completed"}, follow=True)
    assert response.redirect_chain == [("/?status=Completed", 302)]
    assert "Sync queued" in text(response)
    response = staff_client.post("/sync/", {"next": "https://evil.example/"})
    assert response["Location"] == "/"


def test_the_header_follows_a_sync_now_to_its_end(staff_client, simulator, monkeypatch, django_capture_on_commit_callbacks):
    # The task path without a broker: Celery runs the task body here.
    monkeypatch.setattr(sync_batches, "delay", lambda **kwargs: sync_batches.apply(kwargs=kwargs).get())
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post("/sync/", **HTMX)
    follow = re.search(r'hx-get="(/sync/status/\?[^"]+)"', response.content.decode()).group(1).replace("&amp;", "&")
    waiting = staff_client.get(follow)
    assert polls(waiting) and "Sync queued" in text(waiting)

    for callback in callbacks:
        callback()
    run = SyncRun.objects.get()
    assert (run.outcome, run.trigger) == (SyncRun.Outcome.SUCCEEDED, SyncRun.Trigger.MANUAL)
    done = staff_client.get(follow)
    assert not polls(done)
    assert "Last sync just now" in text(done)
    assert "Sync queued" not in text(done)


# The status fragment ---------------------------------------------------------------


def test_a_running_sync_shows_pages_done_of_total_and_keeps_polling(ops_client):
    finished_sync(ago=timedelta(minutes=1))
    running_run(pages_fetched=3, page_count=10)
    response = ops_client.get("/sync/status/")
    assert "Syncing: page 3 of 10" in text(response)
    assert '<progress max="100" value="30"' in response.content.decode()
    assert polls(response)


def test_once_the_run_ends_the_header_stops_polling(ops_client):
    run = running_run()
    assert polls(ops_client.get("/sync/status/"))
    SyncRun.objects.filter(pk=run.pk).update(outcome=SyncRun.Outcome.SUCCEEDED, finished_at=timezone.now())
    response = ops_client.get("/sync/status/")
    assert not polls(response)
    assert "Last sync just now" in text(response)


def test_a_run_whose_heartbeat_lapsed_is_not_shown_as_syncing(ops_client):
    """The lock is still the dead run's, but expired a second ago: the
    header shows it stopped at once, not when the next run takes over."""
    finished_sync(ago=timedelta(minutes=20))
    run = running_run(started_ago=timedelta(minutes=1))
    SyncLock.objects.filter(holder=run).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = ops_client.get("/sync/status/")
    assert not polls(response)
    assert "Syncing" not in text(response)
    assert f"Sync #{run.pk} failed" in text(response)


def test_a_quick_sync_during_a_full_sweep_shows_both(ops_client):
    finished_sync(ago=timedelta(minutes=20))
    finished_sync(ago=timedelta(minutes=1), kind=SyncRun.Kind.QUICK)
    running_run(pages_fetched=40, page_count=100)
    quick = SyncRun.objects.create(kind=SyncRun.Kind.QUICK, outcome=SyncRun.Outcome.RUNNING)
    SyncLock.objects.create(name=SyncLock.QUICK, holder=quick, expires_at=timezone.now() + timedelta(seconds=30))
    page = text(ops_client.get("/sync/status/"))
    assert "Syncing: page 40 of 100 (full sweep)" in page
    assert "Syncing: quick sync" in page
    assert "Last quick sync 1 min ago" in page
    assert "Last full sweep 20 min ago" in page


def test_an_unverified_full_sweep_is_said_in_the_header(ops_client):
    finished_sync(outcome=SyncRun.Outcome.UNVERIFIED, note="Read 3 pages; completeness not verified: page 2 of 3 was empty.")
    page = text(ops_client.get("/sync/status/"))
    assert "Last full sweep 30 s ago" in page
    assert "unverified (Read 3 pages; completeness not verified: page 2 of 3 was empty.)" in page


def test_a_run_whose_worker_died_is_reported_not_followed(ops_client):
    finished_sync(ago=timedelta(minutes=20))
    run = running_run(with_lock=False, started_ago=timedelta(minutes=10))
    response = ops_client.get("/sync/status/")
    assert not polls(response)
    assert f"Sync #{run.pk} failed" in text(response)
    assert "The worker stopped without finishing this sync." in text(response)


def test_a_failed_sync_shows_its_message_until_one_succeeds(ops_client):
    finished_sync(ago=timedelta(minutes=5))
    failed = finished_sync(outcome=SyncRun.Outcome.FAILED, ago=timedelta(minutes=1), error="Inkit answered 503 six times")
    page = text(ops_client.get("/sync/status/"))
    assert f"Sync #{failed.pk} failed 1 min ago: Inkit answered 503 six times" in page
    finished_sync(ago=timedelta(seconds=5))
    assert "failed" not in text(ops_client.get("/sync/status/"))


def test_a_skipped_run_hides_nothing(ops_client):
    finished_sync(outcome=SyncRun.Outcome.FAILED, ago=timedelta(minutes=1), error="boom")
    finished_sync(outcome=SyncRun.Outcome.SKIPPED, ago=timedelta(seconds=10))
    assert "boom" in text(ops_client.get("/sync/status/"))


def test_the_header_warns_when_the_last_success_is_stale(ops_client, settings):
    settings.SYNC_INTERVAL_SECONDS = 60
    finished_sync(ago=timedelta(minutes=4))
    page = text(ops_client.get("/sync/status/"))
    assert "Stale: Last sync 4 min ago (expected every 3 min at most)" in page
    finished_sync(ago=timedelta(minutes=2))
    assert "Stale" not in text(ops_client.get("/sync/status/"))


def test_before_any_sync_it_says_so(ops_client):
    assert "No successful sync yet" in text(ops_client.get("/sync/status/"))


def test_a_queued_sync_no_worker_takes_stops_polling_with_a_warning(ops_client):
    previous = finished_sync()
    long_ago = int((timezone.now() - timedelta(minutes=3)).timestamp())
    response = ops_client.get(f"/sync/status/?after={previous.pk}&queued={long_ago}")
    assert not polls(response)
    assert "is the Celery worker running?" in text(response)


def test_a_sync_now_that_was_skipped_follows_the_run_in_progress(ops_client):
    before = finished_sync(ago=timedelta(minutes=1))
    running_run(pages_fetched=1, page_count=4)
    SyncRun.objects.create(outcome=SyncRun.Outcome.SKIPPED, trigger=SyncRun.Trigger.MANUAL, finished_at=timezone.now())
    response = ops_client.get(f"/sync/status/?after={before.pk}&queued={int(timezone.now().timestamp())}")
    assert polls(response)
    assert "Syncing: page 1 of 4" in text(response)


@pytest.mark.parametrize("query", ["?after=x&queued=1", "?after=1", "?after=-1&queued=5", "?after=1&queued=99999999999999999999"])
def test_odd_follow_parameters_just_give_the_status(ops_client, query):
    finished_sync()
    response = ops_client.get(f"/sync/status/{query}")
    assert response.status_code == 200
    assert not polls(response)


def test_the_sync_now_button_is_for_staff(ops_client, staff_user):
    finished_sync()
    assert 'id="sync-now"' not in ops_client.get("/").content.decode()
    ops_client.force_login(staff_user)
    assert 'id="sync-now"' in ops_client.get("/").content.decode()


def test_the_status_needs_a_login(client):
    assert client.get("/sync/status/").status_code == 302


def test_the_header_costs_one_query(ops_client, django_assert_max_num_queries):
    finished_sync(ago=timedelta(minutes=3))
    finished_sync(outcome=SyncRun.Outcome.FAILED, ago=timedelta(minutes=2), error="x")
    running_run()
    ops_client.get("/sync/status/")  # Session and user loaded once.
    with django_assert_max_num_queries(3):  # session, user, runs
        ops_client.get("/sync/status/")


@pytest.mark.django_db(transaction=True)
def test_a_sync_now_the_broker_cannot_take_is_reported_not_a_server_error(staff_client, monkeypatch):
    """A real broker connection to a port nobody listens on. (Outside a
    test's transaction the request commits, and the sync is queued, at once.)"""
    from dashboard.celery import app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setitem(app.conf, "broker_url", f"redis://127.0.0.1:{closed}/0")
    monkeypatch.setitem(app.conf, "broker_transport_options", {"socket_connect_timeout": 1})
    monkeypatch.setattr(app, "_pool", None)  # Connections are made afresh, to the closed port.
    monkeypatch.setattr(app.amqp, "_producer_pool", None)

    response = staff_client.post("/sync/", **HTMX)

    assert response.status_code == 200
    run = SyncRun.objects.get()
    assert (run.outcome, run.trigger) == (SyncRun.Outcome.FAILED, SyncRun.Trigger.MANUAL)
    assert "Could not queue the sync: the task broker (REDIS_URL) is unreachable." in text(response)
    assert not polls(response)
