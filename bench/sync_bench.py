"""Benchmark: a full sync of N batches from the simulator into PostgreSQL.

Run by hand, never by the test suite:

    .venv/bin/python bench/sync_bench.py                # 100,000 batches
    .venv/bin/python bench/sync_bench.py --batches 20000 --skip-latency

It creates a throwaway PostgreSQL database, starts the simulator in its own
process and runs each measurement in a fresh child process (so peak memory
is that measurement's own):

- anchor: the plain approach to beat, one bulk_create(update_conflicts=True)
  transaction per 100-item page, pages fetched one after another;
- first sync of N batches (and of N/10, to show memory stays flat);
- a no-change re-sync: time and rows written (must be 0);
- with 100 ms of latency on every page and concurrency 8: wall time against
  the ideal pages × 0.1 s / 8.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_probe, peak_rss_kb  # bench/machine.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
PAGE_SIZE = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(database_url: str) -> dict[str, str]:
    return dict(
        os.environ,
        DEBUG="false",
        SECRET_KEY=secrets.token_hex(32),
        ALLOWED_HOSTS="localhost",
        DATABASE_URL=database_url,
        INKIT_API_TOKEN=TOKEN,
        INKIT_PAGE_SIZE=str(PAGE_SIZE),
        LOG_LEVEL="WARNING",
        # The budget paces real runs; here it would only measure itself.
        INKIT_MAX_REQUESTS_PER_MINUTE="100000000",
        PYTHONPATH=str(ROOT),
        DJANGO_SETTINGS_MODULE="dashboard.settings",
    )


# Child: one measurement ------------------------------------------------------------


def child(scenario: str, concurrency: int) -> dict:
    import django

    django.setup()
    import threading

    from django.db import connection, transaction
    from django.db.backends.signals import connection_created

    from batches.models import Batch, BatchDestination, SyncRun
    from batches.sync import sync_all

    # rows_written: batch and destination rows whose content was written;
    # checked_rows: rows whose checked_at alone moved (every read does that).
    statements = {"all": 0, "writes": 0, "rows_written": 0, "checked_rows": 0}
    lock = threading.Lock()

    def count(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        head = sql.lstrip()[:6].upper()
        with lock:
            statements["all"] += 1
            if sql.lstrip().startswith('UPDATE "batches_batch" SET checked_at'):
                statements["checked_rows"] += max(context["cursor"].rowcount, 0)
            elif head in ("INSERT", "UPDATE", "DELETE") and (
                '"batches_batch"' in sql or '"batches_batchdestination"' in sql
            ):
                statements["writes"] += 1
                statements["rows_written"] += max(context["cursor"].rowcount, 0)
        return result

    # The sync's writer threads open connections of their own: count theirs too.
    connection_created.connect(
        lambda sender, connection, **kwargs: connection.execute_wrappers.append(count), weak=False
    )

    # COPY does not pass through execute(): count it where psycopg runs it.
    import psycopg

    copy = psycopg.Cursor.copy

    def counted_copy(self, statement, *args, **kwargs):
        with lock:
            statements["all"] += 1
            statements["writes"] += 1
        return copy(self, statement, *args, **kwargs)

    psycopg.Cursor.copy = counted_copy
    write_row = psycopg.Copy.write_row

    def counted_write_row(self, row):
        with lock:
            statements["rows_written"] += 1
        return write_row(self, row)

    psycopg.Copy.write_row = counted_write_row

    probe = cpu_probe()  # How fast the machine runs just now.
    connection.ensure_connection()  # Counted from here, through the signal above.
    started = time.perf_counter()
    if scenario == "anchor":
        from batches.inkit import InkitClient

        pages = requests = 0
        client = InkitClient(os.environ["INKIT_API_BASE_URL"], TOKEN)
        for page in client.iter_pages(page_size=PAGE_SIZE, sort="created_at"):
            pages += 1
            with transaction.atomic():
                Batch.objects.bulk_create(
                    [_anchor_batch(item) for item in page.items],
                    update_conflicts=True,
                    unique_fields=["id"],
                    update_fields=["name", "status", "total", "count", "completed", "failed", "in_progress", "raw"],
                )
                BatchDestination.objects.bulk_create(
                    [_anchor_destination(item, d) for item in page.items for d in item.destinations],
                    update_conflicts=True,
                    unique_fields=["batch", "name"],
                    update_fields=["count", "completed", "failed", "in_progress", "status"],
                )
        requests = client.stats.requests
        seen = Batch.objects.count()
        outcome = "succeeded"
    else:
        run = sync_all(trigger=SyncRun.Trigger.COMMAND, concurrency=concurrency)
        pages, requests, seen, outcome = run.pages_fetched, run.api_requests, run.batches_seen, run.outcome
        if run.error:
            outcome += f" ({run.error})"
    wall = time.perf_counter() - started
    return {
        "scenario": scenario,
        "cpu_probe_seconds": round(probe, 2),
        "outcome": outcome,
        "batches": seen,
        "pages": pages,
        "api_requests": requests,
        "wall_seconds": round(wall, 2),
        "batches_per_second": round(seen / wall) if wall else 0,
        "peak_rss_mb": round(peak_rss_kb() / 1024, 1),
        "statements": statements["all"],
        "statements_per_page": round(statements["all"] / pages, 2) if pages else 0,
        "batch_and_destination_writes": statements["writes"],
        "rows_written": statements["rows_written"],
        "checked_rows": statements["checked_rows"],
    }


def _anchor_batch(item):
    from django.utils import timezone

    from batches.models import Batch

    now = timezone.now()
    count, completed, failed, in_progress = item.sums()
    return Batch(
        id=item.id, name=item.name, status=item.status, total=item.total, created_at=item.created_at,
        count=count, completed=completed, failed=failed, in_progress=in_progress,
        first_seen_at=now, last_changed_at=now, last_progress_at=now, raw=item.raw,
    )


def _anchor_destination(item, dest):
    from batches.models import BatchDestination

    return BatchDestination(
        batch_id=item.id, name=dest.name, count=dest.count, completed=dest.completed,
        failed=dest.failed, in_progress=dest.in_progress, status=dest.status,
        batch_created_at=item.created_at,
    )


# Parent: orchestration --------------------------------------------------------------


class Simulator:
    """The simulator in its own process, so it does not share our GIL."""

    # The same clock for every simulator, so a second one serves the same
    # batches and a re-sync against it changes nothing.
    NOW = "2026-11-01T12:00:00+00:00"

    def __init__(self, env: dict, batches: int, latency: float = 0.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "inkit_simulator", "--port", str(self.port), "--batches", str(batches),
             "--token", TOKEN, "--advance-every", "0", "--now", self.NOW, "--max-page-size", str(PAGE_SIZE), "--latency", str(latency)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit("the simulator exited:\n" + self.process.stdout.read()) from None
                time.sleep(0.2)
        raise SystemExit("the simulator did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def run_child(env: dict, scenario: str, concurrency: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "child", scenario, str(concurrency)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{scenario} failed:\n{out.stdout}\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def reset_tables(env: dict) -> None:
    subprocess.run(
        [sys.executable, "-c",
         "import django; django.setup(); from django.db import connection; "
         "connection.cursor().execute('TRUNCATE batches_batch, batches_batchdestination, batches_batchevent, "
         "batches_syncrun, batches_synclock CASCADE')"],
        cwd=ROOT, env=env, check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100_000)
    parser.add_argument("--database", default="bw_bench_sync")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()

    admin_url = f"postgres://postgres@{args.host}:5432/postgres"
    database_url = f"postgres://postgres@{args.host}:5432/{args.database}"
    import psycopg

    with psycopg.connect(admin_url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}"')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    env = base_env(database_url)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)

    results: list[dict] = []
    small = max(args.batches // 10, 1)
    for batches in (small, args.batches):
        sim = Simulator(env, batches)
        env["INKIT_API_BASE_URL"] = sim.url
        try:
            reset_tables(env)
            anchor = run_child(env, "anchor", 1)
            reset_tables(env)
            first = run_child(env, "first", args.concurrency)
            resync = run_child(env, "resync", args.concurrency)
            results.extend(
                [dict(anchor, size=batches), dict(first, size=batches), dict(resync, size=batches)]
            )
        finally:
            sim.stop()

    if not args.skip_latency:
        sim = Simulator(env, args.batches, latency=0.1)
        env["INKIT_API_BASE_URL"] = sim.url
        try:
            resync = run_child(env, "resync", 8)
            results.append(dict(resync, size=args.batches, scenario="resync, 100 ms latency, concurrency 8"))
        finally:
            sim.stop()

    print()
    print("| measurement | batches | wall s | batches/s | peak RSS MB | SQL/page | API requests | rows written | checked_at updates | CPU probe s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['scenario']} | {r['batches']:,} | {r['wall_seconds']} | {r['batches_per_second']:,} | "
            f"{r['peak_rss_mb']} | {r['statements_per_page']} | {r['api_requests']:,} | {r['rows_written']:,} | "
            f"{r.get('checked_rows', 0):,} | "
            f"{r['cpu_probe_seconds']} |"
        )
    if not args.skip_latency:
        pages = -(-args.batches // PAGE_SIZE)
        ideal = pages * 0.1 / 8
        print(f"\nlatency run: ideal {ideal:.1f} s, target ≤ {1.3 * ideal:.1f} s, measured {results[-1]['wall_seconds']} s")
    firsts = [r for r in results if r["scenario"] == "first"]
    if len(firsts) == 2:
        a, b = firsts
        print(f"peak memory: {a['peak_rss_mb']} MB at {a['batches']:,}, {b['peak_rss_mb']} MB at {b['batches']:,} "
              f"({(b['peak_rss_mb'] / a['peak_rss_mb'] - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
