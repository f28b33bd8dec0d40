"""Running the app's processes as a platform would, for the tests that need
real ones: commands from the real Procfile, in their own process group (a
platform signals every process of a dyno), output collected line by line."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Generous: two cores shared by several test runs start Django slowly.
START_TIMEOUT = 60.0
# What Heroku and Render allow between SIGTERM and SIGKILL.
PLATFORM_GRACE_SECONDS = 30.0


def procfile() -> dict[str, str]:
    """The Procfile's process types and their commands."""
    commands: dict[str, str] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, command = line.partition(":")
        commands[name.strip()] = command.strip()
    return commands


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel does, from the backlog)
    and never answers: a hung server, which only a timeout gets past."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def base_env(**overrides: str | None) -> dict[str, str]:
    """The test run's environment with the venv first on PATH, plus
    overrides (None removes a variable)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


class Process:
    """One process type running as `bash -c <command>` in its own session;
    its stdout and stderr are read into .lines by a thread."""

    def __init__(self, name: str, command: str, env: dict[str, str]):
        self.name = name
        self.command = command
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.popen = subprocess.Popen(
            ["bash", "-c", command],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait_for_line(self, pattern: str, timeout: float = START_TIMEOUT) -> str:
        """The first output line matching the regex; fails the test if the
        process exits or the line does not come in time."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for line in self.lines:
                    if regex.search(line):
                        return line
            if not self.running():
                self._reader.join(2)
                pytest.fail(f"{self.name} exited ({self.popen.returncode}):\n{self.output}")
            time.sleep(0.1)
        pytest.fail(
            f"{self.name} printed no line matching {pattern!r} in {timeout:.0f} s:\n{self.output}"
        )

    def signal(self, signum: int) -> None:
        # The whole group, as a platform does to a dyno.
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after timeout seconds."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(5)
        return code

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(10)
        self._reader.join(5)


def run_to_completion(
    name: str, command: str, env: dict[str, str], timeout: float = 180
) -> Process:
    """Run a one-off process (release, collectstatic...) and wait for it."""
    process = Process(name, command, env)
    if process.wait(timeout) is None:
        process.kill()
        pytest.fail(f"{name} did not finish in {timeout:.0f} s:\n{process.output}")
    return process


def stop_all(processes: list[Process], grace: float = PLATFORM_GRACE_SECONDS) -> dict[str, float]:
    """SIGTERM every process at once, as a platform stopping a release does;
    fail if any needs SIGKILL. Returns the seconds each took to exit."""
    started = time.monotonic()
    for process in processes:
        process.signal(signal.SIGTERM)
    took: dict[str, float] = {}
    late: list[Process] = []
    for process in processes:
        remaining = max(0.1, grace - (time.monotonic() - started))
        if process.wait(remaining) is None:
            late.append(process)
        else:
            took[process.name] = time.monotonic() - started
    for process in late:
        process.kill()
    if late:
        pytest.fail(
            "not stopped within the platform's grace period after SIGTERM: "
            + ", ".join(f"{p.name}:\n{p.output}" for p in late)
        )
    return took


def poll(check: Callable[[], object], timeout: float, what: str, every: float = 0.25) -> object:
    """Call check() until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"{what} did not happen in {timeout:.0f} s (last: {last!r})")


# Databases ------------------------------------------------------------------


@contextmanager
def throwaway_database(base_url: str, folder: Path) -> Iterator[tuple[str, str | None]]:
    """A new, empty database for processes started like a platform's: yields
    its URL and the password in it (None for SQLite).

    On PostgreSQL (base_url names the server) a database bw_platform_<random>
    owned by a role of the same name with a random password, both dropped
    afterwards: the processes get a database and a credential of their own,
    apart from pytest-django's test database. A server that cannot be
    reached fails the test. Without base_url, a SQLite file in folder.
    """
    if not base_url:
        yield f"sqlite:///{folder / 'platform.sqlite3'}", None
        return

    import psycopg
    from psycopg import sql

    parts = urlsplit(base_url)
    admin = psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or None,
        dbname="postgres",
        autocommit=True,
        connect_timeout=10,
    )
    name = f"bw_platform_{secrets.token_hex(4)}"
    password = f"pw-{secrets.token_hex(12)}"
    try:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(name)
            )
        )
        netloc = (
            f"{quote(name)}:{quote(password)}@{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
        )
        yield urlunsplit((parts.scheme, netloc, f"/{name}", parts.query, "")), password
    finally:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        admin.close()


def database_url_for_tests() -> str:
    """A DATABASE_URL naming the test database this pytest process uses, for
    a subprocess that must see the same rows."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    host = db["HOST"] or "127.0.0.1"
    auth = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


def sweep_on_a_worker(settings, processes: list[Process], **env: str):
    """The Procfile's worker, one sync thread, 5 batches a page, syncing from
    the test's simulator; a full sweep queued and under way (two pages in).
    Returns (worker, the running SyncRun)."""
    from batches.models import SyncRun
    from batches.tasks import sync_batches

    worker = Process(
        "worker",
        procfile()["worker"],
        base_env(
            DATABASE_URL=database_url_for_tests(),
            INKIT_API_BASE_URL=settings.INKIT_API_BASE_URL,
            INKIT_API_TOKEN=settings.INKIT_API_TOKEN,
            INKIT_PAGE_SIZE="5",
            SYNC_CONCURRENCY="1",
            WORKER_CONCURRENCY="1",
            **env,
        ),
    )
    processes.append(worker)
    worker.wait_for_line(r"celery@\S+ ready\.")
    sync_batches.delay(trigger=SyncRun.Trigger.MANUAL, kind=SyncRun.Kind.FULL)
    run = poll(
        lambda: SyncRun.objects.filter(outcome=SyncRun.Outcome.RUNNING, pages_fetched__gte=2).first(),
        60,
        "the sync getting under way",
        every=0.1,
    )
    return worker, run
