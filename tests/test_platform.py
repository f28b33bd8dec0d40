"""The Procfile's processes, run the way Heroku, Render or Dokku run them.

Every command comes from the real Procfile and runs in its own process
group with PORT set. With DATABASE_URL and REDIS_URL set (as in CI) the
processes use PostgreSQL and Redis, and a server that cannot be reached
fails these tests; without them, SQLite and the filesystem broker.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import time

import pytest
import requests
from django.conf import settings

from batches.models import SyncLock, SyncRun
from batches.simulator import InkitSimulator

from .processes import (
    PLATFORM_GRACE_SECONDS,
    ROOT,
    Process,
    base_env,
    free_port,
    poll,
    procfile,
    run_to_completion,
    silent_port,
    stop_all,
    sweep_on_a_worker,
    throwaway_database,
)


def get(url: str, **kwargs) -> requests.Response:
    return requests.get(url, timeout=30, allow_redirects=False, **kwargs)


def healthz(base: str, query: str = "") -> tuple[int, dict]:
    response = get(f"{base}/healthz{query}")
    return response.status_code, response.json()


def parse_metrics(text: str) -> dict[str, float]:
    """{'name{labels}': value} for every sample line."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def test_the_procfile_has_the_four_process_types():
    commands = procfile()
    assert set(commands) == {"release", "web", "worker", "beat"}
    assert commands["release"] == "python manage.py migrate --noinput"
    assert "gunicorn --config gunicorn.conf.py" in commands["web"]
    # Threads: SIGTERM reaches the process the running sync is in.
    assert "--pool threads" in commands["worker"]


def test_app_json_runs_every_procfile_process_with_postgres_and_redis():
    """The Deploy button and review apps: the formation starts what the
    Procfile declares (release is a phase, not a process), the add-ons
    provide DATABASE_URL and REDIS_URL, and the secret key is generated."""
    manifest = json.loads((ROOT / "app.json").read_text())
    assert set(manifest["formation"]) == set(procfile()) - {"release"}
    assert manifest["formation"]["beat"]["quantity"] == 1  # exactly one beat
    plans = [a if isinstance(a, str) else a["plan"] for a in manifest["addons"]]
    assert {plan.split(":")[0] for plan in plans} == {"heroku-postgresql", "heroku-redis"}
    assert manifest["buildpacks"] == [{"url": "heroku/python"}]
    assert manifest["env"]["SECRET_KEY"] == {
        "description": manifest["env"]["SECRET_KEY"]["description"],
        "generator": "secret",
    }
    # Every variable offered is one the settings read.
    settings_source = (ROOT / "dashboard" / "settings.py").read_text()
    for name in manifest["env"]:
        assert f'"{name}"' in settings_source, name
    assert (ROOT / ".python-version").read_text().strip() == "3.13"


def test_gunicorn_takes_port_and_web_concurrency_from_the_platform(tmp_path):
    env = base_env(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="batchwatch.example.com",
        BATCHWATCH_VAR_DIR=str(tmp_path / "var"),
        PORT="12345",
        WEB_CONCURRENCY="3",
    )
    printed = run_to_completion(
        "print-config", "gunicorn --config gunicorn.conf.py --print-config dashboard.wsgi", env
    )
    config = dict(
        (name.strip(), value.strip())
        for name, _, value in (line.partition("=") for line in printed.lines)
        if value
    )
    assert config["bind"] == "['0.0.0.0:12345']"
    assert config["workers"] == "3"
    assert config["forwarded_allow_ips"] == "['*']"
    assert config["accesslog"] == "-"
    assert int(config["graceful_timeout"]) < 30  # inside the platform's SIGKILL
    assert config["preload_app"] == "True"


def test_it_boots_like_a_platform_and_a_scheduled_sync_turns_healthz_green(tmp_path, processes):
    """release, then web, worker and beat, against a database of their own;
    a sync beat schedules completes and /healthz goes from 503 to 200."""
    commands = procfile()
    inkit_token = f"tok-{secrets.token_hex(16)}"
    secret_key = secrets.token_urlsafe(50)
    metrics_token = f"metrics-{secrets.token_hex(16)}"
    webhook_secret = secrets.token_hex(16)
    simulator = InkitSimulator(batches=60, seed=11, token=inkit_token, max_page_size=25)
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    with (
        simulator.serve() as inkit,
        throwaway_database(os.environ.get("DATABASE_URL", ""), tmp_path) as (
            database_url,
            database_password,
        ),
    ):
        env = base_env(
            DEBUG="false",
            SECRET_KEY=secret_key,
            ALLOWED_HOSTS="127.0.0.1,localhost",
            # As in production: HTTPS enforced, /healthz exempt.
            SECURE_SSL_REDIRECT=None,
            DJANGO_ALLOW_ASYNC_UNSAFE=None,
            PORT=str(port),
            WEB_CONCURRENCY="2",
            WORKER_CONCURRENCY="2",
            DATABASE_URL=database_url,
            BATCHWATCH_VAR_DIR=str(tmp_path / "var"),
            INKIT_API_BASE_URL=inkit.url,
            INKIT_API_TOKEN=inkit_token,
            INKIT_PAGE_SIZE="25",
            SYNC_INTERVAL_SECONDS="5",
            METRICS_TOKEN=metrics_token,
            ALERT_WEBHOOK_URL=f"https://hooks.example.invalid/services/{webhook_secret}",
        )

        release = run_to_completion("release", commands["release"], env)
        assert release.popen.returncode == 0, release.output

        # The web first: with no worker yet, nothing has synced.
        web = Process("web", commands["web"], env)
        processes.append(web)
        poll(lambda: _answers(base, web), 60, "the web process answering /healthz?scope=web")
        status, body = healthz(base)
        assert status == 503, body
        assert body["reasons"] == ["no sync has succeeded yet"]
        assert body["checks"] == {
            "database": "ok", "broker": "ok", "sync": "failing", "completeness": "unverified",
        }

        worker = Process("worker", commands["worker"], env)
        beat = Process("beat", commands["beat"], env)
        processes.extend([worker, beat])
        worker.wait_for_line(r"celery@\S+ ready\.")
        beat.wait_for_line(r"beat: Starting")

        status, body = poll(lambda: _healthy(base), 90, "/healthz turning 200")
        last = body["sync"]["last_run"]
        assert (last["outcome"], last["trigger"]) == ("succeeded", "schedule")
        assert body["sync"]["last_success"]["id"] == last["id"]
        assert body["sync"]["interval_seconds"] == 5

        # /metrics over the router's HTTPS (X-Forwarded-Proto), with the token.
        assert get(f"{base}/metrics").status_code == 301  # plain HTTP is redirected
        response = get(
            f"{base}/metrics",
            headers={"X-Forwarded-Proto": "https", "Authorization": f"Bearer {metrics_token}"},
        )
        assert response.status_code == 200, response.text
        samples = parse_metrics(response.text)
        batches = sum(v for k, v in samples.items() if k.startswith("batchwatch_batches{"))
        assert batches == len(simulator.snapshot())
        assert samples['batchwatch_last_sync_outcome{outcome="succeeded"}'] == 1
        assert samples['batchwatch_last_sync_api_responses{status="200"}'] >= 3

        took = stop_all([beat, worker, web])
        for process in (beat, worker, web):
            assert process.popen.returncode == 0, f"{process.name} exited badly:\n{process.output}"

        if settings.REDIS_URL:
            # Leave no scheduled sync behind in the shared Redis database for
            # the workers of later tests.
            from dashboard.celery import app

            app.control.purge()

    logs = {p.name: p.output for p in (release, web, worker, beat)}
    # One line per event: the sync's summary, the access log per request.
    assert re.search(r"sync #\d+ succeeded in [\d.]+s: \d+ of \d+ pages", logs["worker"])
    assert re.search(r'"GET /healthz HTTP/1.1" status=200', logs["web"])
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name}:\n{text}"
        for secret in (inkit_token, secret_key, metrics_token, webhook_secret, database_password):
            if secret:
                assert secret not in text, f"a secret is in {name}'s output"
    assert inkit_token not in json.dumps(body)
    print(f"stopped after SIGTERM in {took}")


def _answers(base: str, web: Process) -> bool:
    if not web.running():
        pytest.fail(f"the web process exited:\n{web.output}")
    try:
        response = get(f"{base}/healthz?scope=web")
    except requests.ConnectionError:
        return False
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{web.output}"
    return True


def _healthy(base: str) -> tuple[int, dict] | None:
    status, body = healthz(base)
    if status == 200:
        return status, body
    # Until the first sync, only the sync may be failing.
    assert status == 503 and body["checks"]["database"] == body["checks"]["broker"] == "ok", body
    return None


def test_healthz_answers_503_quickly_when_the_database_and_broker_are_down(tmp_path, processes):
    """A web process whose database refuses connections and whose Redis
    accepts them but never answers still answers its probe, fast, and
    without the passwords in either URL."""
    commands = procfile()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    closed = free_port()
    with silent_port() as hung:
        env = base_env(
            DEBUG="false",
            SECRET_KEY=secrets.token_urlsafe(50),
            ALLOWED_HOSTS="127.0.0.1",
            SECURE_SSL_REDIRECT=None,
            PORT=str(port),
            WEB_CONCURRENCY="1",
            DATABASE_URL=f"postgres://batchwatch:db-password-1@127.0.0.1:{closed}/batchwatch",
            REDIS_URL=f"redis://:redis-password-2@127.0.0.1:{hung}/0",
            BATCHWATCH_VAR_DIR=str(tmp_path / "var"),
        )
        web = Process("web", commands["web"], env)
        processes.append(web)
        web.wait_for_line(r"Booting worker")

        def answered() -> bool:
            try:
                get(f"{base}/healthz?scope=web")
            except requests.ConnectionError:
                return False
            return True

        poll(answered, 60, "the web process answering")
        started = time.monotonic()
        response = get(f"{base}/healthz")
        took = time.monotonic() - started
        web_only = get(f"{base}/healthz?scope=web")

    assert response.status_code == 503
    body = response.json()
    assert body["reasons"] == ["the database is unreachable", "the broker is unreachable"]
    assert body["checks"] == {"database": "failing", "broker": "failing", "sync": "unknown"}
    # The broker's 2 s timeout, plus a refused connection: well inside a probe's.
    assert took < 6, f"/healthz took {took:.1f} s"
    print(f"/healthz answered 503 in {took:.2f} s")
    assert web_only.status_code == 503
    assert web_only.json()["checks"] == {"database": "failing"}
    stop_all([web])
    for text in (response.text, web_only.text, web.output):
        assert "db-password-1" not in text and "redis-password-2" not in text


@pytest.mark.django_db(transaction=True)
def test_the_worker_stops_a_running_sync_cleanly_on_sigterm(simulator, settings, processes):
    """SIGTERM mid-sync: the sync stops at the next page, records itself as
    failed, releases the lock, and the worker exits 0 well inside 30 s."""
    # 127 batches, 5 to a page, one page at a time, 0.2 s each: about 6 s.
    simulator.faults.latency_seconds = 0.2
    worker, run = sweep_on_a_worker(settings, processes)
    assert run.page_count and run.page_count > run.pages_fetched + 5  # far from done

    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = worker.wait(PLATFORM_GRACE_SECONDS)
    took = time.monotonic() - started
    if code is None:
        worker.kill()
        pytest.fail(f"still running {PLATFORM_GRACE_SECONDS:.0f} s after SIGTERM:\n{worker.output}")

    assert code == 0, worker.output
    assert took < 15, f"the worker took {took:.1f} s to stop"
    run.refresh_from_db()
    assert run.outcome == SyncRun.Outcome.FAILED
    assert "worker is shutting down" in run.error
    assert run.finished_at is not None
    assert run.pages_fetched < run.page_count
    assert SyncLock.objects.get(name=SyncLock.NAME).holder_id is None
    assert "Warm shutdown" in worker.output
    summary = rf"sync #{run.pk} failed in [\d.]+s: .*worker is shutting down"
    assert re.search(summary, worker.output)
    print(
        f"worker stopped {took:.1f} s after SIGTERM, {run.pages_fetched}/{run.page_count} pages in"
    )
