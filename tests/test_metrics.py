"""/metrics: Prometheus text format behind METRICS_TOKEN."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from batches.models import Batch, BatchQuerySet, SyncRun
from batches.sync import sync_all
from dashboard import health

pytestmark = pytest.mark.django_db

TOKEN = "metrics-test-token-0123456789"
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(
    rf"^(?P<name>{NAME})(?:\{{(?P<labels>{NAME}={LABEL_VALUE}(?:,{NAME}={LABEL_VALUE})*)\}})? "
    rf"(?P<value>-?[0-9.e+-]+|NaN|[+-]Inf)$"
)


@pytest.fixture
def metrics_token(settings) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(token: str = TOKEN) -> str:
    response = Client().get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return response.content.decode()


def parse(text: str) -> dict[str, float]:
    """Check the exposition format line by line; return {'name{labels}': value}.

    Every sample follows its metric's HELP and TYPE, each metric once."""
    samples: dict[str, float] = {}
    typed: dict[str, str] = {}
    helped: set[str] = set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helped, f"HELP twice for {name}"
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helped and name not in typed and kind in {"gauge", "counter"}, line
            typed[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            assert match["name"] in typed, f"sample before its TYPE: {line!r}"
            key = line.rpartition(" ")[0]
            assert key not in samples, f"duplicate sample: {line!r}"
            samples[key] = float(match["value"])
    return samples


def test_it_is_not_found_while_metrics_token_is_unset(settings):
    settings.METRICS_TOKEN = ""
    response = Client().get("/metrics", headers={"Authorization": "Bearer "})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer "],
)
def test_it_asks_for_the_bearer_token(metrics_token, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = Client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer ")
    assert TOKEN not in response.content.decode()


def test_it_needs_no_login_with_the_token(metrics_token):
    # A fresh client: no session (LoginRequiredMiddleware would redirect).
    assert Client().get("/metrics", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_it_compares_the_token_in_constant_time(metrics_token, monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    real = health.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(health.hmac, "compare_digest", spy)
    scrape()
    assert compared == [(TOKEN.encode(), TOKEN.encode())]


def test_before_any_sync_it_serves_what_it_knows(metrics_token):
    samples = parse(scrape())
    assert samples['batchwatch_info{version="1.0.0"}'] == 1
    assert samples["batchwatch_stuck_batches"] == 0
    assert not any(key.startswith("batchwatch_last_") for key in samples)
    assert not any(key.startswith("batchwatch_batches") for key in samples)


def test_after_a_sync_it_matches_the_database(simulator, inkit, metrics_token, settings):
    run = sync_all(client=inkit)
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    # Two In Progress batches without progress for two hours: stuck.
    long_ago = timezone.now() - timedelta(hours=2)
    stuck_ids = list(Batch.objects.in_progress().values_list("pk", flat=True)[:2])
    Batch.objects.filter(pk__in=stuck_ids).update(last_progress_at=long_ago)
    samples = parse(scrape())

    present = Batch.objects.present()
    for status in set(present.values_list("status", flat=True)):
        assert (
            samples[f'batchwatch_batches{{status="{status}"}}']
            == present.filter(status=status).count()
        )
    by_status = {k: v for k, v in samples.items() if k.startswith("batchwatch_batches{")}
    assert sum(by_status.values()) == present.count()
    assert samples["batchwatch_failed_documents"] == present.aggregate(n=Sum("failed"))["n"]
    assert samples["batchwatch_documents"] == present.aggregate(n=Sum("total"))["n"]
    assert samples["batchwatch_stuck_batches"] == Batch.objects.stuck().count() == 2

    run.refresh_from_db()
    assert samples['batchwatch_last_sync_outcome{outcome="succeeded"}'] == 1
    assert samples['batchwatch_last_sync_outcome{outcome="failed"}'] == 0
    assert samples["batchwatch_last_sync_timestamp_seconds"] == pytest.approx(
        run.finished_at.timestamp()
    )
    assert samples["batchwatch_last_success_timestamp_seconds"] == pytest.approx(
        run.finished_at.timestamp()
    )
    assert samples["batchwatch_last_sync_duration_seconds"] == pytest.approx(
        run.duration.total_seconds()
    )
    assert 0 <= samples["batchwatch_last_sync_age_seconds"] < 60
    assert samples["batchwatch_last_sync_api_requests"] == run.api_requests == run.pages_fetched
    assert samples['batchwatch_last_sync_api_responses{status="200"}'] == run.pages_fetched
    assert samples["batchwatch_last_sync_api_errors"] == 0
    assert samples["batchwatch_sync_interval_seconds"] == settings.SYNC_INTERVAL_SECONDS


def test_it_reports_the_api_errors_of_the_last_finished_sync(simulator, inkit, metrics_token):
    # Every third answer is a 429: retried, and the sync still succeeds.
    simulator.faults.rate_limit_every = 3
    run = sync_all(client=inkit)
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    samples = parse(scrape())
    assert (
        samples['batchwatch_last_sync_api_responses{status="429"}'] == run.api_responses["429"] > 0
    )
    assert samples["batchwatch_last_sync_api_errors"] == run.api_responses["429"]
    assert samples["batchwatch_last_sync_api_retries"] == run.api_retries > 0


def test_a_failed_sync_is_the_last_sync_but_not_the_last_success(metrics_token):
    now = timezone.now()
    SyncRun.objects.create(
        outcome=SyncRun.Outcome.SUCCEEDED,
        started_at=now - timedelta(minutes=10, seconds=4),
        finished_at=now - timedelta(minutes=10),
        api_requests=3,
        api_responses={"200": 3},
        summary={"by_status": {"Completed": 5}, "documents": 9, "failed_documents": 1},
    )
    SyncRun.objects.create(
        outcome=SyncRun.Outcome.FAILED,
        started_at=now - timedelta(seconds=30),
        finished_at=now - timedelta(seconds=20),
        api_requests=7,
        api_retries=5,
        api_responses={"503": 6, "timeout": 1},
        error="Inkit answered 503 after 5 retries",
    )
    samples = parse(scrape())
    assert samples['batchwatch_last_sync_outcome{outcome="failed"}'] == 1
    assert samples["batchwatch_last_sync_duration_seconds"] == 10
    assert samples['batchwatch_last_sync_api_responses{status="503"}'] == 6
    assert samples['batchwatch_last_sync_api_responses{status="timeout"}'] == 1
    assert samples["batchwatch_last_sync_api_errors"] == 7
    assert 600 <= samples["batchwatch_last_success_age_seconds"] < 660
    # The failed run made no summary: the last one stands, and both of
    # Inkit's documented statuses are always there.
    assert samples['batchwatch_batches{status="Completed"}'] == 5
    assert samples['batchwatch_batches{status="In Progress"}'] == 0
    assert samples["batchwatch_failed_documents"] == 1


def test_label_values_are_escaped(metrics_token):
    # Statuses are Inkit's data: anything may come.
    SyncRun.objects.create(
        outcome=SyncRun.Outcome.SUCCEEDED,
        finished_at=timezone.now(),
        summary={"by_status": {'Odd "quoted" \\ status\nnext': 2}},
    )
    samples = parse(scrape())
    assert samples['batchwatch_batches{status="Odd \\"quoted\\" \\\\ status\\nnext"}'] == 2


def test_a_scrape_scans_no_table(metrics_token, monkeypatch, django_assert_max_num_queries):
    """The figures come from the last sync's summary and indexed queries:
    never the per-sync summary computation, and a fixed few queries."""

    def no_summary(self: BatchQuerySet) -> dict:
        raise AssertionError("a scrape computed the batch summary")

    monkeypatch.setattr(BatchQuerySet, "summary", no_summary)
    for seconds in range(5):
        SyncRun.objects.create(
            outcome=SyncRun.Outcome.SUCCEEDED,
            finished_at=timezone.now() - timedelta(seconds=seconds),
            summary={"by_status": {"Completed": 1}},
        )
    with django_assert_max_num_queries(4):
        scrape()


def test_runs_are_reported_by_kind_with_their_requests_per_minute(metrics_token):
    now = timezone.now()
    SyncRun.objects.create(kind=SyncRun.Kind.FULL, outcome=SyncRun.Outcome.UNVERIFIED, started_at=now - timedelta(minutes=10), finished_at=now - timedelta(minutes=5), api_requests=450)
    SyncRun.objects.create(kind=SyncRun.Kind.QUICK, outcome=SyncRun.Outcome.SUCCEEDED, started_at=now - timedelta(seconds=30), finished_at=now - timedelta(seconds=28), api_requests=6)
    text = scrape()
    assert 'batchwatch_last_run_verified{kind="full"} 0' in text
    assert 'batchwatch_last_run_verified{kind="quick"} 1' in text
    assert 'batchwatch_last_run_api_requests_per_minute{kind="full"} 90' in text
    assert 'batchwatch_last_run_api_requests_per_minute{kind="quick"} 180' in text
    assert 'batchwatch_last_sync_outcome{outcome="unverified"} 0' in text
    assert "batchwatch_inkit_request_budget_per_minute 120" in text
