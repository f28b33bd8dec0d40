"""/healthz: the database, the broker and the sync's freshness, for probes.

The broker is the test run's (Redis when REDIS_URL is set, so an unreachable
Redis fails these tests; the filesystem broker otherwise) unless a test
points the Celery app elsewhere.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from batches.models import SyncRun
from dashboard.celery import app

from .processes import free_port, silent_port

pytestmark = pytest.mark.django_db


def finished_run(outcome: str, seconds_ago: float, took: float = 2.0, **fields) -> SyncRun:
    finished = timezone.now() - timedelta(seconds=seconds_ago)
    return SyncRun.objects.create(
        outcome=outcome,
        started_at=finished - timedelta(seconds=took),
        finished_at=finished,
        **fields,
    )


def test_it_is_healthy_after_a_recent_successful_sync(client, settings):
    run = finished_run(SyncRun.Outcome.SUCCEEDED, 10, took=3)
    response = client.get("/healthz")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["status"] == "ok" and body["reasons"] == []
    assert body["checks"] == {"database": "ok", "broker": "ok", "sync": "ok", "completeness": "ok"}
    assert "warnings" not in body
    last = body["sync"]["last_run"]
    assert last["id"] == run.pk and last["outcome"] == "succeeded" and last["trigger"] == "schedule"
    assert 10 <= last["age_seconds"] < 70
    assert last["duration_seconds"] == 3
    assert body["sync"]["last_success"]["id"] == run.pk
    assert body["sync"]["stale_after_seconds"] == 3 * settings.SYNC_INTERVAL_SECONDS


def test_it_needs_no_login():
    finished_run(SyncRun.Outcome.SUCCEEDED, 1)
    # A fresh client: no session, no user; the dashboard itself needs one.
    assert Client().get("/healthz").status_code == 200


def test_it_answers_head_for_probes_that_use_it():
    finished_run(SyncRun.Outcome.SUCCEEDED, 1)
    assert Client().head("/healthz").status_code == 200


def test_it_stays_on_plain_http_when_https_is_enforced(settings):
    settings.SECURE_SSL_REDIRECT = True
    finished_run(SyncRun.Outcome.SUCCEEDED, 1)
    client = Client()  # built after the setting, so SecurityMiddleware sees it
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz?scope=web").status_code == 200
    # Everything else is redirected, /metrics included (its token must not
    # travel in clear).
    assert client.get("/metrics").status_code == 301


def test_it_turns_503_when_the_last_success_is_older_than_three_intervals(client, settings):
    settings.SYNC_INTERVAL_SECONDS = 60
    finished_run(SyncRun.Outcome.SUCCEEDED, 3 * 60 - 15)
    assert client.get("/healthz").status_code == 200

    SyncRun.objects.all().delete()
    finished_run(SyncRun.Outcome.SUCCEEDED, 3 * 60 + 15)
    # Later failures do not count as fresh data.
    finished_run(SyncRun.Outcome.FAILED, 5, error="Inkit answered 503 after 5 retries")
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "failing"
    assert body["checks"] == {"database": "ok", "broker": "ok", "sync": "failing", "completeness": "ok"}
    [reason] = body["reasons"]
    assert reason.startswith("the last successful sync finished 19")
    assert "more than 3 sync intervals (180 s)" in reason
    assert body["sync"]["last_run"]["outcome"] == "failed"
    assert body["sync"]["last_success"]["outcome"] == "succeeded"


def test_an_unverified_full_sweep_is_a_warning_not_silence(client):
    """Fresh data (200), but the mirror is not proven complete: said so."""
    run = finished_run(SyncRun.Outcome.UNVERIFIED, 10, note="Read 12 pages; completeness not verified: page 3 was empty.")
    quick = finished_run(SyncRun.Outcome.SUCCEEDED, 5, kind=SyncRun.Kind.QUICK)
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["checks"]["completeness"] == "unverified"
    assert body["warnings"] == [f"the last full sweep (#{run.pk}) could not verify that the mirror is complete"]
    assert body["sync"]["last_full_sweep"]["outcome"] == "unverified"
    assert body["sync"]["last_quick_sync"]["id"] == quick.pk


def test_it_turns_503_when_no_sync_has_succeeded_yet(client):
    finished_run(SyncRun.Outcome.FAILED, 5, error="INKIT_API_TOKEN is not set")
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["reasons"] == ["no sync has succeeded yet"]
    assert body["sync"]["last_run"]["outcome"] == "failed"
    assert body["sync"]["last_success"] is None


def test_skipped_and_running_syncs_are_not_the_last_sync(client):
    success = finished_run(SyncRun.Outcome.SUCCEEDED, 30)
    finished_run(SyncRun.Outcome.SKIPPED, 5, note="Another sync (#1) was running.")
    SyncRun.objects.create(outcome=SyncRun.Outcome.RUNNING)
    body = client.get("/healthz").json()
    assert body["sync"]["last_run"]["id"] == success.pk


def test_it_turns_503_quickly_when_the_broker_does_not_answer(client, monkeypatch):
    finished_run(SyncRun.Outcome.SUCCEEDED, 1)
    with silent_port() as port:
        monkeypatch.setitem(app.conf, "broker_url", f"redis://:broker-pw@127.0.0.1:{port}/0")
        started = time.monotonic()
        response = client.get("/healthz")
        took = time.monotonic() - started
    assert response.status_code == 503
    body = response.json()
    assert body["reasons"] == ["the broker is unreachable"]
    assert body["checks"] == {"database": "ok", "broker": "failing", "sync": "ok", "completeness": "ok"}
    assert took < 5, f"{took:.1f} s"
    assert b"broker-pw" not in response.content


def test_it_turns_503_when_the_broker_refuses_connections(client, monkeypatch):
    finished_run(SyncRun.Outcome.SUCCEEDED, 1)
    monkeypatch.setitem(app.conf, "broker_url", f"redis://127.0.0.1:{free_port()}/0")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["reasons"] == ["the broker is unreachable"]


def test_the_filesystem_broker_is_healthy_while_its_folders_are_writable(
    client, monkeypatch, tmp_path
):
    finished_run(SyncRun.Outcome.SUCCEEDED, 1)
    folders = {
        "data_folder_in": tmp_path / "messages",
        "data_folder_out": tmp_path / "messages",
        "processed_folder": tmp_path / "processed",
        "control_folder": tmp_path / "control",
    }
    monkeypatch.setitem(app.conf, "broker_url", "filesystem://localhost//")
    monkeypatch.setitem(
        app.conf, "broker_transport_options", {key: str(path) for key, path in folders.items()}
    )
    # Not made yet (as when the folder is on a disk that went away).
    assert client.get("/healthz").json()["reasons"] == ["the broker's folders are not writable"]
    for path in folders.values():
        path.mkdir(exist_ok=True)
    assert client.get("/healthz").status_code == 200


def test_scope_web_checks_only_what_serving_pages_needs(client, monkeypatch):
    """The probe for a platform's router: a stale sync or a broker outage
    must not take the dashboard offline."""
    finished_run(SyncRun.Outcome.SUCCEEDED, 10 * 24 * 3600)
    monkeypatch.setitem(app.conf, "broker_url", f"redis://127.0.0.1:{free_port()}/0")
    assert client.get("/healthz").status_code == 503
    response = client.get("/healthz?scope=web")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "reasons": [],
        "checks": {"database": "ok"},
        "version": "1.0.0",
    }


def test_an_unknown_scope_is_a_bad_request(client):
    response = client.get("/healthz?scope=everything")
    assert response.status_code == 400
    assert response.json() == {"error": "scope must be one of all, web"}


def test_it_says_nothing_secret(client, settings):
    settings.INKIT_API_TOKEN = "inkit-token-that-must-not-show"
    settings.METRICS_TOKEN = "metrics-token-that-must-not-show"
    settings.ALERT_WEBHOOK_URL = "https://hooks.example.invalid/hook-that-must-not-show"
    finished_run(SyncRun.Outcome.SUCCEEDED, 100)
    finished_run(
        SyncRun.Outcome.FAILED, 1, error="unexpected error: OperationalError: host db.internal"
    )
    content = client.get("/healthz").content.decode()
    for secret in ("inkit-token", "metrics-token", "hook-that", settings.SECRET_KEY, "db.internal"):
        assert secret not in content
    assert settings.DATABASES["default"]["NAME"] not in content


@pytest.mark.parametrize(("intervals", "seconds_ago", "stale"), [(3, 3 * 60 - 15, False), (3, 3 * 60 + 15, True), (5, 4 * 60, False)])
def test_the_header_and_healthz_apply_the_one_stale_rule(client, ops_user, settings, monkeypatch, intervals, seconds_ago, stale):
    # SyncRun.stale_after() decides for both: a change there changes both.
    monkeypatch.setattr("batches.models.STALE_AFTER_SYNC_INTERVALS", intervals)
    settings.SYNC_INTERVAL_SECONDS = 60
    finished_run(SyncRun.Outcome.SUCCEEDED, seconds_ago)
    body = client.get("/healthz").json()
    assert (body["checks"]["sync"] == "failing") is stale
    assert body["sync"]["stale_after_seconds"] == intervals * 60
    client.force_login(ops_user)
    header = client.get("/sync/status/").content.decode()
    assert ("Stale:" in header) is stale
