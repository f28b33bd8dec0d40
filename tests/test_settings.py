"""Production settings: start-up refuses what is missing or unsafe with one
line, check --deploy passes, static files build without secrets, DATABASE_URL
and REDIS_URL (rediss:// with a self-signed certificate, against a real TLS
Redis) are read as a platform provides them, and logs hold no secret."""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from batches.models import SyncRun
from batches.simulator import InkitSimulator
from batches.sync import sync_all
from dashboard.settings import _database, _redis_ssl

from .processes import (
    ROOT,
    Process,
    base_env,
    database_url_for_tests,
    free_port,
    poll,
    procfile,
    run_to_completion,
)

CONFIG_ERROR = "Batchwatch configuration error: "


def production_env(tmp_path: Path, **overrides: str | None) -> dict[str, str]:
    """What a platform's config vars look like, minus any running service."""
    return base_env(
        **{
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "batchwatch.example.com",
            "SECURE_SSL_REDIRECT": None,
            "DJANGO_ALLOW_ASYNC_UNSAFE": None,
            "DATABASE_URL": "postgres://batchwatch:db-pw-7@db.example.com:5432/batchwatch",
            "REDIS_URL": "rediss://:redis-pw-8@redis.example.com:6380",
            "BATCHWATCH_VAR_DIR": str(tmp_path / "var"),
            "PORT": str(free_port()),
            **overrides,
        }
    )


def one_line_refusal(process: Process) -> str:
    """The process's output, which must be exactly one configuration-error line."""
    lines = [line for line in process.lines if line.strip()]
    assert len(lines) == 1, "expected one line, got:\n" + process.output
    assert lines[0].startswith(CONFIG_ERROR), process.output
    assert process.popen.returncode == 2
    return lines[0].removeprefix(CONFIG_ERROR)


# Start-up refusals ----------------------------------------------------------


@pytest.mark.parametrize("process_type", ["release", "web", "worker", "beat"])
def test_every_process_refuses_to_start_without_a_secret_key(tmp_path, process_type):
    env = production_env(tmp_path, SECRET_KEY=None)
    process = run_to_completion(process_type, procfile()[process_type], env, timeout=60)
    assert one_line_refusal(process) == "SECRET_KEY is not set (it is required when DEBUG is off)"


@pytest.mark.parametrize(
    "secret_key",
    ["django-insecure-" + "x" * 50, "short-key", "   ", "ab" * 30, secrets.token_hex(24) + "a"],
    ids=["django-default", "short", "blank", "few-characters", "49-characters"],
)
def test_it_refuses_a_default_or_weak_secret_key(tmp_path, secret_key):
    env = production_env(tmp_path, SECRET_KEY=secret_key)
    process = run_to_completion("check", "python manage.py check", env, timeout=60)
    assert "SECRET_KEY" in one_line_refusal(process)


def test_it_refuses_to_start_on_a_platform_without_a_shared_broker(tmp_path):
    # Heroku and Dokku set DYNO; there the embedded broker would deliver nothing.
    env = production_env(tmp_path, REDIS_URL=None, DYNO="worker.1")
    process = run_to_completion("check", "python manage.py check", env, timeout=60)
    assert one_line_refusal(process).startswith("REDIS_URL is not set")


def test_it_refuses_to_start_without_allowed_hosts(tmp_path):
    env = production_env(tmp_path, ALLOWED_HOSTS=None)
    process = run_to_completion("check", "python manage.py check", env, timeout=60)
    assert (
        one_line_refusal(process) == "ALLOWED_HOSTS is not set (it is required when DEBUG is off)"
    )


@pytest.mark.parametrize(
    "database_url",
    [
        "postgres://batchwatch:hunter2-secret@db.example.com:notaport/batchwatch",
        "mysql://batchwatch:hunter2-secret@db.example.com/batchwatch",
    ],
    ids=["malformed", "unsupported"],
)
def test_a_bad_database_url_is_refused_without_echoing_its_password(tmp_path, database_url):
    env = production_env(tmp_path, DATABASE_URL=database_url)
    process = run_to_completion("check", "python manage.py check", env, timeout=60)
    assert one_line_refusal(process).startswith("DATABASE_URL ")
    assert "hunter2" not in process.output


def test_check_deploy_passes_with_production_settings(tmp_path):
    env = production_env(tmp_path)
    process = run_to_completion(
        "check", "python manage.py check --deploy --fail-level WARNING", env, timeout=60
    )
    assert process.popen.returncode == 0, process.output
    assert "System check identified no issues" in process.output


def test_check_deploy_fails_without_the_https_redirect(tmp_path):
    # The same check, shown able to fail: the production defaults are what pass it.
    env = production_env(tmp_path, SECURE_SSL_REDIRECT="false")
    process = run_to_completion(
        "check", "python manage.py check --deploy --fail-level WARNING", env, timeout=60
    )
    assert process.popen.returncode != 0
    assert "security.W008" in process.output


# Static files ---------------------------------------------------------------


def test_static_files_build_without_secrets_and_are_served_compressed_and_hashed(
    tmp_path, settings
):
    """What the buildpack does: collectstatic with no SECRET_KEY, hosts or
    database (a first deploy, a Docker build). STATIC_ROOT is moved, to keep
    the test out of the repository's staticfiles/, and Django admin's own
    files are left out: compressing them takes most of a minute here."""
    static_root = tmp_path / "staticfiles"
    (tmp_path / "build_settings.py").write_text(
        f"from dashboard.settings import *  # noqa: F403\nSTATIC_ROOT = {str(static_root)!r}\n"
    )
    env = base_env(
        DJANGO_SETTINGS_MODULE="build_settings",
        PYTHONPATH=f"{tmp_path}:{ROOT}",
        DEBUG=None,
        SECRET_KEY=None,
        ALLOWED_HOSTS=None,
        DATABASE_URL=None,
        REDIS_URL=None,
        BATCHWATCH_VAR_DIR=str(tmp_path / "var"),
    )
    build = run_to_completion(
        "collectstatic", "python manage.py collectstatic --noinput --ignore admin", env
    )
    assert build.popen.returncode == 0, build.output

    hashed = json.loads((static_root / "staticfiles.json").read_text())["paths"]
    assert hashed, "nothing was collected"
    for original, name in hashed.items():
        assert name != original and static_root.joinpath(name).is_file()
    largest = max(hashed.values(), key=lambda name: static_root.joinpath(name).stat().st_size)
    assert static_root.joinpath(f"{largest}.br").is_file()
    assert static_root.joinpath(f"{largest}.gz").is_file()

    # Served by whitenoise in production mode: compressed, cached for ever.
    settings.STATIC_ROOT = static_root
    response = Client().get(f"/static/{largest}", headers={"Accept-Encoding": "br, gzip"})
    assert response.status_code == 200
    assert response["Content-Encoding"] == "br"
    assert "immutable" in response["Cache-Control"]
    assert "max-age=315360000" in response["Cache-Control"]


# DATABASE_URL and REDIS_URL -------------------------------------------------


def test_a_platform_database_gets_ssl_persistent_connections_and_health_checks(monkeypatch):
    monkeypatch.delenv("DATABASE_SSL_REQUIRE", raising=False)
    config = _database("postgres://u:p@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d1")
    assert config["OPTIONS"]["sslmode"] == "require"
    assert config["OPTIONS"]["connect_timeout"] == 3
    assert config["CONN_MAX_AGE"] == 600
    assert config["CONN_HEALTH_CHECKS"] is True


def test_a_local_database_needs_no_ssl(monkeypatch):
    monkeypatch.delenv("DATABASE_SSL_REQUIRE", raising=False)
    assert "sslmode" not in _database("postgres://postgres@127.0.0.1:5432/d1")["OPTIONS"]


@pytest.mark.parametrize(
    ("url", "require", "expected"),
    [
        ("postgres://u:p@db.internal/d", "false", None),
        ("postgres://u@localhost/d", "true", "require"),
    ],
)
def test_database_ssl_require_overrides_the_guess(monkeypatch, url, require, expected):
    monkeypatch.setenv("DATABASE_SSL_REQUIRE", require)
    assert _database(url)["OPTIONS"].get("sslmode") == expected


def test_rediss_skips_certificate_checks_unless_asked(monkeypatch):
    monkeypatch.delenv("REDIS_SSL_VERIFY", raising=False)
    assert _redis_ssl("rediss://:p@ec2.compute.amazonaws.com:6380") == {
        "ssl_cert_reqs": ssl.CERT_NONE
    }
    assert _redis_ssl("redis://127.0.0.1:6379/0") is None
    monkeypatch.setenv("REDIS_SSL_VERIFY", "true")
    assert _redis_ssl("rediss://:p@redis.example.com:6380") == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


@pytest.fixture
def tls_redis(tmp_path) -> Iterator[tuple[str, str]]:
    """A real Redis over TLS only, with a self-signed certificate (as Heroku
    Redis serves) and a password: yields (rediss:// URL, password)."""
    redis_server = shutil.which("redis-server")
    assert redis_server, "redis-server is needed (Debian: apt-get install redis-server)"
    cert, key = tmp_path / "redis.crt", tmp_path / "redis.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=redis.invalid",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    password = f"redis-pw-{secrets.token_hex(8)}"
    port = free_port()
    server = subprocess.Popen(
        [
            redis_server,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        import redis

        client = redis.Redis(
            host="127.0.0.1", port=port, password=password, ssl=True, ssl_cert_reqs=ssl.CERT_NONE
        )

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        poll(answers, 30, "the TLS Redis answering")
        client.close()
        yield f"rediss://:{password}@127.0.0.1:{port}/0", password
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.django_db(transaction=True)
def test_a_sync_goes_through_a_tls_redis_with_a_self_signed_certificate(
    tls_redis, simulator, settings, tmp_path
):
    """The app's own settings for rediss:// carry a real round trip: a task
    sent by one process, run by the Procfile's worker, over TLS."""
    url, password = tls_redis
    env = base_env(
        REDIS_URL=url,
        DATABASE_URL=database_url_for_tests(),
        INKIT_API_BASE_URL=settings.INKIT_API_BASE_URL,
        INKIT_API_TOKEN=settings.INKIT_API_TOKEN,
        INKIT_PAGE_SIZE=str(settings.INKIT_PAGE_SIZE),
        REDIS_SSL_VERIFY=None,
    )
    health = "from dashboard.health import broker_problem; print(broker_problem())"
    check = run_to_completion("health", f'python manage.py shell -c "{health}"', env, timeout=60)
    assert check.lines[-1] == "None", check.output

    worker = Process("worker", procfile()["worker"], env)
    try:
        worker.wait_for_line(r"celery@\S+ ready\.")
        call = "celery -A dashboard call batches.tasks.sync_batches"
        send = run_to_completion("send", f'{call} --kwargs \'{{"trigger": "manual"}}\'', env)
        assert send.popen.returncode == 0, send.output
        run = poll(
            lambda: SyncRun.objects.filter(
                trigger=SyncRun.Trigger.MANUAL, outcome=SyncRun.Outcome.SUCCEEDED
            ).first(),
            60,
            "the sync sent over TLS succeeding",
        )
        assert run.complete
    finally:
        worker.signal(signal.SIGTERM)
        if worker.wait(30) is None:
            worker.kill()
    assert "rediss://" in worker.output  # the banner names the transport...
    assert password not in worker.output + send.output + check.output  # ...never the password

    # Certificate checks on: the self-signed certificate is refused.
    strict = run_to_completion(
        "health",
        f'python manage.py shell -c "{health}"',
        {**env, "REDIS_SSL_VERIFY": "true"},
        timeout=60,
    )
    assert strict.lines[-1] == "the broker is unreachable", strict.output
    assert "CERTIFICATE_VERIFY_FAILED" in strict.output
    assert password not in strict.output


# Logs -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_sync_logs_one_line_and_never_a_secret(settings, caplog, capfd):
    """Everything logged at DEBUG, urllib3 included, during a sync that
    succeeds and one that Inkit refuses: no token, no webhook URL, no
    database password."""
    token = f"inkit-{secrets.token_hex(16)}"
    wrong = f"wrong-{secrets.token_hex(16)}"
    webhook = f"https://hooks.example.invalid/services/{secrets.token_hex(16)}"
    caplog.set_level(logging.DEBUG)
    for noisy in ("urllib3", "batches", "dashboard", "django"):
        caplog.set_level(logging.DEBUG, logger=noisy)
    settings.ALERT_WEBHOOK_URL = webhook
    simulator = InkitSimulator(batches=40, seed=5, token=token, max_page_size=25)
    with simulator.serve() as server:
        settings.INKIT_API_BASE_URL = server.url
        settings.INKIT_API_TOKEN = token
        settings.INKIT_PAGE_SIZE = 25
        first = sync_all()
        settings.INKIT_API_TOKEN = wrong
        second = sync_all()
    assert first.outcome == SyncRun.Outcome.SUCCEEDED, first.error
    assert second.outcome == SyncRun.Outcome.FAILED
    captured = capfd.readouterr()
    logged = caplog.text + captured.out + captured.err
    # One line per sync, naming its outcome.
    assert caplog.text.count(f"sync #{first.pk} succeeded") == 1
    assert caplog.text.count(f"sync #{second.pk} failed") == 1
    secrets_ = [token, wrong, webhook, webhook.rsplit("/", 1)[1], settings.SECRET_KEY]
    if settings.DATABASES["default"].get("PASSWORD"):
        secrets_.append(settings.DATABASES["default"]["PASSWORD"])
    for secret in secrets_:
        assert secret not in logged
    assert token not in second.error and wrong not in second.error


def test_an_error_with_its_traceback_is_logged_on_one_line():
    """Platforms split stdout into events by line: a traceback must not be
    scattered over twenty events."""
    from dashboard.logs import LINE_FORMATTER, OneLineFormatter

    formatter = OneLineFormatter(LINE_FORMATTER["format"])
    try:
        raise ValueError("bad page\nwith a second line")
    except ValueError:
        record = logging.LogRecord("batches.sync", logging.ERROR, __file__, 1, "sync #%s failed", (7,), sys.exc_info())
    line = formatter.format(record)
    assert "\n" not in line
    assert "sync #7 failed" in line and "Traceback" in line and "ValueError: bad page | with a second line" in line
