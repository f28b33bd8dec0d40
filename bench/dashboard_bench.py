"""Benchmark: the dashboard's list page at 1,000,000 batches, against Django
admin's stock changelist on the same data.

Run by hand, never by the test suite:

    .venv/bin/python bench/dashboard_bench.py                   # load, then time
    .venv/bin/python bench/dashboard_bench.py --reuse           # time the loaded data again
    .venv/bin/python bench/dashboard_bench.py --batches 100000 --repeat 10

It loads N batches (about 12 % In Progress, 1 to 3 destinations each, three
years of created_at) into its own PostgreSQL database with COPY, rebuilds
the indexes and runs VACUUM ANALYZE; then, in this process with DEBUG off,
times the list page server-side through Django's test client, as a page and
as the htmx fragment, for no filter, each filter, each sort, stuck=1, name
and id searches and deep paging: median and p95 over repeated requests and
the SQL queries per request. In the same run it times the Batch admin
changelist (list_filter status, search_fields id and name, ordering
-created_at) on the equivalent views. Last, a child process streams the CSV
export of about 100,000 rows and reports its peak memory against a 10,000
row export, to show it stays flat.

Targets: every list view median <= 50 ms, p95 <= 100 ms, <= 8 queries, and
at least 5x faster than the admin on the same view.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from machine import cpu_probe, peak_rss_kb  # bench/machine.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE = "bw_bench_dashboard"
SERVER = "postgres://postgres@127.0.0.1:5432"

# Views of the list (path and query) and, where Django admin has one, the
# equivalent admin changelist query. Admin pages show 100 rows.
LIST_VIEWS: list[tuple[str, str, str | None]] = [
    ("no filter", "", ""),
    ("status=In Progress", "status=In+Progress", "status__exact=In+Progress"),
    ("status=Completed", "status=Completed", "status__exact=Completed"),
    ("status=Failed (rare)", "status=Failed", "status__exact=Failed"),
    ("status=In Progress or Failed", "status=In+Progress&status=Failed", None),
    ("destination=salesforce", "destination=salesforce", None),
    ("destination + destination_status", "destination=salesforce&destination_status=in_progress", None),
    ("destination=box (rare)", "destination=box", None),
    ("destination + status", "destination=salesforce&status=In+Progress", None),
    ("destination + stuck=1", "destination=salesforce&stuck=1", None),
    ("destination + q (common word)", "destination=salesforce&q=invoices", None),
    ("destination=box&sort=-failed", "destination=box&sort=-failed", None),
    ("created_after/before (a month)", "created_after={month_start}&created_before={month_end}", None),
    ("stuck=1", "stuck=1", None),
    ("failed=1", "failed=1", None),
    ("failed=1&destination=sepire", "failed=1&destination=sepire", None),
    ("q: name search (common word)", "q=invoices", "q=invoices"),
    ("q: name search (one batch)", "q={one_name}", "q={one_name}"),
    ("q: id prefix", "q={id_part}", "q={id_part}"),
    ("sort=name", "sort=name", "o=2"),
    ("sort=-name", "sort=-name", "o=-2"),
    ("sort=status", "sort=status", "o=3"),
    ("sort=-total", "sort=-total", "o=-4"),
    ("sort=total", "sort=total", "o=4"),
    ("sort=-completed", "sort=-completed", "o=-5"),
    ("sort=-failed", "sort=-failed", "o=-6"),
    ("sort=-in_progress", "sort=-in_progress", "o=-7"),
    ("sort=created_at (oldest)", "sort=created_at", "o=8"),
    ("sort=last_progress_at", "sort=last_progress_at", None),
    ("sort=-last_progress_at", "sort=-last_progress_at", None),
    ("status=In Progress&sort=-failed", "status=In+Progress&sort=-failed", "status__exact=In+Progress&o=-6"),
    ("last page (rows 451-500)", "page=10", "p=5"),
    ("last page, 200 rows (401-500)", "page_size=200&page=3", None),
    ("page past the end", "page=999999", None),
]


# Loading -----------------------------------------------------------------------------

NAME_WORDS = (
    "Invoices", "Statements", "Welcome letters", "Renewal notices", "Payroll stubs",
    "Tax forms 1099", "Collections", "Onboarding packets", "Policy documents",
    "Past-due reminders", "Explanation of benefits", "Lease agreements",
)
UNICODE_NAMES = ("Relevés de compte", "Überweisungsbelege", "請求書", "Счета-фактуры", "Facturas – enero")
HOSTILE_NAMES = ("<script>alert(1)</script> invoices", "{{ 7*7 }} template test", "'; DROP TABLE batches; --")
DESTINATIONS = ("inkit_storage", "salesforce", "sepire", "docusign", "magic_link")
UNKNOWN_DESTINATIONS = ("amazon_s3", "google_drive", "dropbox", "box")
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BYTE_TO_BASE62 = bytes(ord(BASE62[byte % 62]) for byte in range(256))


def generate(count: int, now: datetime, seed: int = 1):
    """Yield (batch row, destination rows) tuples shaped like synced data."""
    rng = random.Random(seed)
    three_years = 3 * 365 * 86400
    seen: set[str] = set()
    # Oldest first, as the sync inserts them (it reads the listing oldest
    # first), so the table's physical order follows created_at as in life.
    ages = sorted((rng.uniform(60, three_years) for _ in range(count)), reverse=True)
    for age in ages:
        while True:
            batch_id = "rb_" + rng.randbytes(22).translate(BYTE_TO_BASE62).decode()
            if batch_id not in seen:
                seen.add(batch_id)
                break
        roll = rng.random()
        name = (
            None if roll < 0.35
            else rng.choice(HOSTILE_NAMES) if roll < 0.36
            else f"{rng.choice(UNICODE_NAMES)} {rng.randint(1, 999)}" if roll < 0.43
            else f"{rng.choice(NAME_WORDS)} #{rng.randint(1, 99999)}"
        )
        created_at = now - timedelta(seconds=age)
        roll = rng.random()
        status = "In Progress" if roll < 0.12 else "Failed" if roll < 0.125 else "Completed"
        total = min(5000, max(1, int(rng.lognormvariate(2.5, 1.3))))
        roll = rng.random()
        names = sorted(rng.sample(DESTINATIONS, 1 if roll < 0.6 else 2 if roll < 0.9 else 3))
        if rng.random() < 0.02:
            names[-1] = rng.choice(UNKNOWN_DESTINATIONS)
        destinations = {}
        if not (status == "In Progress" and rng.random() < 0.15):  # {} for some, as Inkit shows
            for dest in names:
                if status == "Completed":
                    failed = rng.randint(1, max(1, total // 10)) if rng.random() < 0.08 else 0
                    counts = (total - failed, failed, 0)
                elif status == "Failed":
                    counts = (0, total, 0)
                else:
                    in_progress = rng.randint(1, total)
                    failed = rng.randint(0, (total - in_progress) // 10)
                    counts = (total - in_progress - failed, failed, in_progress)
                destinations[dest] = counts
        if status == "In Progress":
            # Half progressed within the last half hour; the rest are stuck.
            quiet = rng.uniform(0, 1800) if rng.random() < 0.5 else rng.uniform(7200, 30 * 86400)
            last_progress_at = max(created_at, now - timedelta(seconds=quiet))
        else:
            last_progress_at = created_at + timedelta(seconds=rng.uniform(5, 3600))
        yield batch_id, name, status, total, created_at, destinations, last_progress_at


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def load(count: int) -> float:
    """COPY count batches in with the secondary indexes dropped, then rebuild
    them and VACUUM ANALYZE. Returns the seconds it took."""
    from django.db import connection

    started = time.perf_counter()
    now = datetime.now(UTC)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE batches_batchevent, batches_batchdestination, batches_batch CASCADE")
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
            "('batches_batch', 'batches_batchdestination') AND indexname NOT LIKE '%%pkey' "
            "AND indexdef NOT LIKE 'CREATE UNIQUE%%'"
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    from batches.models import Batch

    raw_connection = connection.connection
    # Every column, those this loader does not set at the model's default
    # (the table may have grown columns since this was written).
    fields = Batch._meta.concrete_fields
    batch_columns = ", ".join(f'"{field.column}"' for field in fields)
    defaults = {field.attname: field.get_default() for field in fields}
    destination_rows = []
    with raw_connection.cursor() as cursor:
        # Skip the foreign key's per-row check: the rows are made consistent here.
        cursor.execute("SET session_replication_role = replica")
        with cursor.copy(f"COPY batches_batch ({batch_columns}) FROM STDIN") as copy:
            for batch_id, name, status, total, created_at, destinations, last_progress in generate(count, now):
                sums = [0, 0, 0, 0]
                raw_destinations = {}
                for dest, (completed, failed, in_progress) in destinations.items():
                    dest_count = completed + failed + in_progress
                    dest_status = "completed" if in_progress == 0 else "in_progress"
                    raw_destinations[dest] = {
                        "completed": completed, "count": dest_count, "failed": failed,
                        "in_progress": in_progress, "status": dest_status,
                    }
                    for index, value in enumerate((dest_count, completed, failed, in_progress)):
                        sums[index] += value
                    destination_rows.append((
                        batch_id, dest, dest_count, completed, failed, in_progress, dest_status,
                        created_at,
                    ))
                raw = {
                    "created_at": iso(created_at), "destinations": raw_destinations, "id": batch_id,
                    "name": name, "status": status, "total": total,
                }
                values = dict(
                    defaults, id=batch_id, name=name, status=status, total=total,
                    created_at=created_at, count=sums[0], completed=sums[1], failed=sums[2],
                    in_progress=sums[3], first_seen_at=created_at, last_changed_at=last_progress,
                    last_progress_at=last_progress, raw=json.dumps(raw),
                )
                copy.write_row([values[field.attname] for field in fields])
        columns = "batch_id, name, count, completed, failed, in_progress, status, batch_created_at"
        with cursor.copy(f"COPY batches_batchdestination ({columns}) FROM STDIN") as copy:
            for row in destination_rows:
                copy.write_row(row)
        cursor.execute("SET session_replication_role = DEFAULT")
    del destination_rows
    print(f"  copied in {time.perf_counter() - started:.0f} s; rebuilding {len(indexes)} indexes", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '512MB'")
        for _, definition in indexes:
            cursor.execute(definition)
    raw_connection.autocommit = True
    with raw_connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE batches_batch")
        cursor.execute("VACUUM ANALYZE batches_batchdestination")
    return time.perf_counter() - started


# Timing ---------------------------------------------------------------------------------


def summarise(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"median_ms": statistics.median(ordered) * 1000, "p95_ms": p95 * 1000}


def time_view(client, url: str, repeat: int, headers: dict[str, str] | None = None) -> dict:
    """Server-side time of one view: warm up, count its queries once, then
    time `repeat` requests."""
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    headers = headers or {}
    for _ in range(2):
        response = client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.status_code, response.content[:500])
    # Each request starts by emptying the query log, so start from empty.
    reset_queries()
    with CaptureQueriesContext(connection) as capture:
        client.get(url, headers=headers)
    # Copied now: the context reads the log lazily, and the next request empties it.
    queries = list(capture.captured_queries)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        times.append(time.perf_counter() - started)
    return {**summarise(times), "queries": len(queries), "sql": [q["sql"] for q in queries]}


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


# The CSV export, in a child process of its own --------------------------------------------


def export_child(query: str) -> None:
    """Stream /export.csv?query and print rows, bytes, seconds and peak RSS."""
    setup_django(os.environ["DATABASE_URL"])
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    baseline = peak_rss_kb()
    started = time.perf_counter()
    response = client.get(f"/export.csv?{query}")
    lines = size = 0
    for chunk in response.streaming_content:
        size += len(chunk)
        lines += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    peak = peak_rss_kb()
    print(json.dumps({"rows": lines - 1, "bytes": size, "seconds": seconds, "rss_before_kb": baseline, "peak_rss_kb": peak}))


def measure_export(database_url: str, query: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child-export", query],
        env=dict(os.environ, DATABASE_URL=database_url), capture_output=True, text=True, check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


# Setup ------------------------------------------------------------------------------------


def setup_django(database_url: str) -> None:
    os.environ.update(
        DATABASE_URL=database_url,
        DEBUG="false",
        SECRET_KEY=os.environ.get("BENCH_SECRET_KEY") or secrets.token_hex(32),
        ALLOWED_HOSTS="testserver",
        SECURE_SSL_REDIRECT="false",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        BATCHWATCH_VAR_DIR=os.environ.get("BATCHWATCH_VAR_DIR") or tempfile.mkdtemp(prefix="bw-bench-"),
    )
    sys.path.insert(0, str(ROOT))
    import django
    from django.conf import settings

    django.setup()
    # Hashed static names as in production, without WhiteNoise's slow
    # compression step (the same choice as the tests' collected_static).
    static_root = Path(os.environ["BATCHWATCH_VAR_DIR"]) / "static"
    settings.STATIC_ROOT = static_root
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
    }
    if not (static_root / "staticfiles.json").exists():
        from django.core.management import call_command

        call_command("collectstatic", interactive=False, verbosity=0)


def ensure_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=1_000_000)
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--reuse", action="store_true", help="Keep the data already loaded.")
    parser.add_argument("--repeat", type=int, default=30, help="Timed requests per list view.")
    parser.add_argument("--admin-repeat", type=int, default=5, help="Timed requests per admin view.")
    parser.add_argument("--export-rows", type=int, default=100_000)
    parser.add_argument("--only", help="Only list views whose label contains this.")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE views over target.")
    parser.add_argument("--child-export", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_export is not None:
        export_child(args.child_export)
        return

    database_url = f"{SERVER}/{args.database}"
    os.environ["BENCH_SECRET_KEY"] = secrets.token_hex(32)
    ensure_database(args.database)
    setup_django(database_url)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from batches.models import Batch, SyncRun

    call_command("migrate", verbosity=0)
    loaded = Batch.objects.count()
    if not args.reuse or loaded != args.batches:
        print(f"Loading {args.batches:,} batches into {args.database}...", flush=True)
        print(f"  loaded in {load(args.batches):.0f} s", flush=True)
        SyncRun.objects.all().delete()
    if not SyncRun.objects.filter(summary__isnull=False).exists():
        started = time.perf_counter()
        summary = Batch.objects.summary()
        seconds = time.perf_counter() - started
        now = datetime.now(UTC)
        SyncRun.objects.create(
            started_at=now - timedelta(seconds=40), finished_at=now, outcome=SyncRun.Outcome.SUCCEEDED,
            complete=True, summary=summary, note=f"bench: summary took {seconds:.2f} s",
        )
    summary_run = SyncRun.objects.filter(summary__isnull=False).first()

    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)

    newest = Batch.objects.order_by("-created_at").values_list("created_at", flat=True).first()
    month_end = (newest - timedelta(days=200)).date()
    one = Batch.objects.filter(name__startswith="Payroll stubs #").order_by("created_at").values_list("name", "id").first()
    values = {
        "month_start": (month_end - timedelta(days=30)).isoformat(),
        "month_end": month_end.isoformat(),
        "one_name": one[0].replace(" ", "+").replace("#", "%23"),
        "id_part": one[1][:12].lower(),  # The start of an id, as pasted, any case.
    }
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('batches_batch')), pg_size_pretty(pg_total_relation_size('batches_batchdestination'))")
        sizes = cursor.fetchone()
    print(f"{loaded or args.batches:,} batches ({sizes[0]} with indexes), destinations {sizes[1]}; {summary_run.note}", flush=True)

    results = []
    probes = [cpu_probe()]  # How fast the machine runs, before and after the timings.
    print(f"CPU probe: {probes[0]:.2f} s (see bench/machine.py)", flush=True)
    for label, query, admin_query in LIST_VIEWS:
        if args.only and args.only not in label:
            continue
        query = query.format(**values)
        url = "/" + (f"?{query}" if query else "")
        fragment = time_view(client, url, args.repeat, {"HX-Request": "true"})
        page = time_view(client, url, args.repeat)
        row = {"view": label, "url": url, "fragment": fragment, "page": page}
        if admin_query is not None:
            admin_url = "/admin/batches/batch/" + (f"?{admin_query.format(**values)}" if admin_query else "")
            row["admin"] = time_view(client, admin_url, args.admin_repeat)
            row["speedup"] = row["admin"]["median_ms"] / max(fragment["median_ms"], page["median_ms"])
        results.append(row)
        report(row)
        slow = max(fragment["median_ms"], page["median_ms"]) > 50 or max(fragment["p95_ms"], page["p95_ms"]) > 100
        if args.explain and slow:
            for sql in page["sql"]:
                if "batches_batch" in sql:
                    print(explain(sql), "\n", flush=True)

    export = None
    if not args.only:
        cutoff = Batch.objects.order_by("-created_at").values_list("created_at", flat=True)[args.export_rows - 1]
        day = cutoff.date() + timedelta(days=1)
        for rows, after in ((args.export_rows // 10, None), (args.export_rows, day)):
            if after is None:
                small_cut = Batch.objects.order_by("-created_at").values_list("created_at", flat=True)[rows - 1]
                after = small_cut.date() + timedelta(days=1)
            measured = measure_export(database_url, f"created_after={after.isoformat()}")
            print(
                f"export {measured['rows']:,} rows: {measured['bytes'] / 1e6:.1f} MB in {measured['seconds']:.1f} s, "
                f"peak RSS {measured['peak_rss_kb'] / 1024:.0f} MB (before the request {measured['rss_before_kb'] / 1024:.0f} MB)",
                flush=True,
            )
            export = export or []
            export.append(measured)

    probes.append(cpu_probe())
    print(f"CPU probe: {probes[1]:.2f} s after the timings", flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"dashboard-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    for row in results:
        for key in ("fragment", "page", "admin"):
            if key in row:
                row[key].pop("sql", None)
    path.write_text(json.dumps(
        {"batches": loaded or args.batches, "cpu_probe_seconds": probes, "views": results, "export": export}, indent=2
    ))
    print(f"\n{markdown(results)}\nWritten to {path.relative_to(ROOT)}")


def report(row: dict) -> None:
    f, p = row["fragment"], row["page"]
    line = (
        f"{row['view']:<36} fragment {f['median_ms']:6.1f} / {f['p95_ms']:6.1f} ms  "
        f"page {p['median_ms']:6.1f} / {p['p95_ms']:6.1f} ms  {p['queries']} queries"
    )
    if "admin" in row:
        line += f"  admin {row['admin']['median_ms']:7.1f} ms ({row['speedup']:.0f}x)"
    print(line, flush=True)


def markdown(results: list[dict]) -> str:
    lines = [
        "| View | Fragment median / p95 | Page median / p95 | Queries | Admin median | Faster |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        f, p = row["fragment"], row["page"]
        admin = f"{row['admin']['median_ms']:.0f} ms" if "admin" in row else "–"
        faster = f"{row['speedup']:.0f}×" if "speedup" in row else "–"
        lines.append(
            f"| {row['view']} | {f['median_ms']:.1f} / {f['p95_ms']:.1f} ms | "
            f"{p['median_ms']:.1f} / {p['p95_ms']:.1f} ms | {p['queries']} | {admin} | {faster} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
