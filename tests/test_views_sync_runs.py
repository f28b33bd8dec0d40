"""/sync-runs/: recent sync runs with outcome, duration, pages, counts, errors."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from batches.models import SyncRun

from .factories import finished_sync
from .html import text

pytestmark = pytest.mark.django_db


def test_it_lists_runs_newest_first_with_their_figures(ops_client):
    ok = finished_sync(
        ago=timedelta(minutes=10), page_count=12, pages_fetched=12, batches_seen=1180,
        batches_created=3, batches_updated=40, batches_gone=1, api_requests=14, api_retries=2, complete=True,
    )
    failed = finished_sync(outcome=SyncRun.Outcome.FAILED, ago=timedelta(minutes=1), error="Inkit answered 401: check INKIT_API_TOKEN")
    response = ops_client.get("/sync-runs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert re.findall(r'<tr id="run-(\d+)"', html) == [str(failed.pk), str(ok.pk)]
    row = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.search(rf'<tr id="run-{ok.pk}".*?</tr>', html, re.DOTALL).group(0)))
    assert "Succeeded" in row and "complete" in row and "3 s" in row
    assert "12 / 12 1,180 3 40 1 14 2" in row
    assert "Inkit answered 401: check INKIT_API_TOKEN" in text(response)


def test_run_errors_are_escaped(ops_client):
    finished_sync(outcome=SyncRun.Outcome.FAILED, error="<script>alert(1)</script>")
    html = ops_client.get("/sync-runs/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_older_runs_are_a_link_away(ops_client, monkeypatch):
    monkeypatch.setattr("dashboard.views.SYNC_RUNS_SHOWN", 3)
    runs = [finished_sync(ago=timedelta(minutes=10 - n), with_summary=False) for n in range(5)]
    html = ops_client.get("/sync-runs/").content.decode()
    assert re.findall(r'<tr id="run-(\d+)"', html) == [str(r.pk) for r in runs[:1:-1]]
    older = re.search(r'href="(/sync-runs/\?before=\d+)"', html).group(1)
    html = ops_client.get(older).content.decode()
    assert re.findall(r'<tr id="run-(\d+)"', html) == [str(r.pk) for r in runs[1::-1]]


def test_without_runs_it_says_so(ops_client):
    assert "No sync has run yet." in text(ops_client.get("/sync-runs/"))


def test_it_needs_a_login(client):
    assert client.get("/sync-runs/").status_code == 302


def test_each_run_shows_its_kind_and_requests_per_minute(ops_client):
    finished_sync(kind=SyncRun.Kind.QUICK, api_requests=30, ago=timedelta(minutes=2))
    sweep = finished_sync(outcome=SyncRun.Outcome.UNVERIFIED, note="Read 3 pages; completeness not verified: page 2 of 3 was empty.")
    html = ops_client.get("/sync-runs/").content.decode()
    rows = {m.group(1): re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", m.group(0))) for m in re.finditer(r'<tr id="run-(\d+)".*?</tr>', html, re.DOTALL)}
    quick_row = next(row for pk, row in rows.items() if pk != str(sweep.pk))
    assert "Quick sync" in quick_row and " 30 600 " in quick_row  # 30 requests in 3 s: 600 a minute
    assert "Full sweep" in rows[str(sweep.pk)] and "Unverified" in rows[str(sweep.pk)]
    assert "completeness not verified" in rows[str(sweep.pk)]


def test_staff_start_a_full_sweep_from_the_page(staff_client, monkeypatch, django_capture_on_commit_callbacks):
    from batches.tasks import sync_batches

    queued = []
    monkeypatch.setattr(sync_batches, "delay", lambda **kwargs: queued.append(kwargs))
    assert 'id="full-sweep"' in staff_client.get("/sync-runs/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post("/sync-runs/full-sweep/", follow=True)
    assert response.redirect_chain == [("/sync-runs/", 302)]
    assert "Full sweep queued" in text(response)
    assert queued == [{"trigger": "manual", "kind": "full"}]
    assert staff_client.get("/sync-runs/full-sweep/").status_code == 405


def test_only_staff_start_a_full_sweep_and_only_with_the_csrf_token(ops_client, staff_user, client):
    assert 'id="full-sweep"' not in ops_client.get("/sync-runs/").content.decode()
    assert ops_client.post("/sync-runs/full-sweep/").status_code == 403
    from django.test import Client

    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(staff_user)
    assert csrf.post("/sync-runs/full-sweep/").status_code == 403
