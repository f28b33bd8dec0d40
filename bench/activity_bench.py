"""Benchmark: quick syncs and full sweeps on a living account, by hand.

    .venv/bin/python bench/activity_bench.py                       # 10k, 100k, 1M at once, 20 min
    .venv/bin/python bench/activity_bench.py --sizes 2000 --minutes 3   # a quick check

For each size, in its own process and at the same time (they share the
machine, the figures say so beside the CPU probe), an "instance":

- a PostgreSQL database of its own (bw_bench_activity_<size>) and the
  simulator in activity mode (about 2,000 new batches a day through the
  history, each finishing 1 to 6 hours after creation, 1 % with failures,
  0.5 % stalled for ever) serving 100-item pages from this process;
- the first sync (no latency, no budget), then 100 ms of latency on every
  request and a real Celery worker and beat with the default settings
  (quick sync every SYNC_INTERVAL_SECONDS, full sweep every
  SYNC_FULL_SWEEP_MINUTES, INKIT_MAX_REQUESTS_PER_MINUTE), on the embedded
  broker (the budget is then per process: there is one worker);
- for --minutes, the simulator's batches live in real time while this
  process watches: for every change the simulator makes it records how long
  until the database row equals the simulator's item (freshness);
- then the worker and beat stop, the simulator freezes, one more quick
  sync runs and every row is compared with the simulator (mismatches).

It reports requests and wall time per quick sync, freshness p50/p95/max,
the full sweeps' duration and pace under the budget (and, where a sweep
could not finish inside SYNC_TIME_LIMIT_SECONDS, the duration its pace
implies), and the mismatches. Results go to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from machine import cpu_probe, peak_rss_kb  # bench/machine.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGE_SIZE = 100


def base_env(database_url: str, var_dir: Path, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    return dict(
        env,
        DEBUG="false",
        SECRET_KEY=secrets.token_hex(32),
        ALLOWED_HOSTS="localhost",
        DATABASE_URL=database_url,
        INKIT_API_TOKEN=token,
        INKIT_PAGE_SIZE=str(PAGE_SIZE),
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        BATCHWATCH_VAR_DIR=str(var_dir),
    )


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(share * len(values)))], 1)


def instance(size: int, minutes: float, latency: float, host: str) -> dict:
    """One account size, from an empty database to the figures."""
    import psycopg

    name = f"bw_bench_activity_{size}"
    token = f"bench-{size}"
    admin = f"postgresql://postgres@{host}:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    var_dir = RESULTS / f"var-{size}"
    subprocess.run(["rm", "-rf", str(var_dir)], check=True)
    var_dir.mkdir(parents=True)
    env = base_env(f"postgres://postgres@{host}:5432/{name}", var_dir, token)
    os.environ.update(env)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )

    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from batches.models import Batch, SyncRun
    from batches.simulator import InkitSimulator

    started = time.perf_counter()
    sim = InkitSimulator(
        batches=size, seed=size, token=token, max_page_size=PAGE_SIZE, activity=True
    )
    generated = time.perf_counter() - started
    server = sim.serve()
    env["INKIT_API_BASE_URL"] = server.url

    # The first sync: no latency, no budget (a one-off load).
    probe_first = cpu_probe()
    first_env = dict(env, INKIT_MAX_REQUESTS_PER_MINUTE="100000000")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "manage.py", "sync_batches", "-v", "0"],
        cwd=ROOT,
        env=first_env,
        check=True,
    )
    first_seconds = time.perf_counter() - started

    # Life: real time, 100 ms a request, the default settings.
    sim.faults.latency_seconds = latency
    stop = threading.Event()

    def live() -> None:
        while not stop.wait(5):
            sim.advance()

    liver = threading.Thread(target=live, daemon=True)
    liver.start()

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dashboard", *args, "--loglevel", "WARNING"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    procs = [
        start(
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "4",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ),
        start("beat", "--schedule", str(var_dir / "celerybeat-schedule")),
    ]
    window_started = time.time()
    seen_changes = len(sim.change_log)
    pending: dict[str, float] = {}
    lags: list[float] = []
    probes = [cpu_probe()]
    deadline = time.monotonic() + minutes * 60
    while time.monotonic() < deadline:
        time.sleep(1)
        with sim._lock:
            fresh = sim.change_log[seen_changes:]
            seen_changes = len(sim.change_log)
            for at, batch_id in fresh:
                pending.setdefault(batch_id, at)
            expected = {i: sim._by_id[i].item() for i in pending if i in sim._by_id}
        now = time.time()
        ids = list(expected)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for batch_id, raw in Batch.objects.filter(pk__in=chunk).values_list("id", "raw"):
                if raw == expected[batch_id]:
                    lags.append(now - pending.pop(batch_id))
        if int(time.monotonic()) % 120 == 0:
            probes.append(cpu_probe())
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    stop.set()
    liver.join()
    unmatched = len(pending)
    oldest_unmatched = max((time.time() - at for at in pending.values()), default=0.0)

    runs = list(
        SyncRun.objects.filter(started_at__gte=_aware(window_started)).order_by("started_at")
    )
    quick = [
        r for r in runs if r.kind == SyncRun.Kind.QUICK and r.outcome == SyncRun.Outcome.SUCCEEDED
    ]
    sweeps = [
        r for r in runs if r.kind == SyncRun.Kind.FULL and r.outcome != SyncRun.Outcome.SKIPPED
    ]

    # Frozen: one more quick sync (no budget), then every row against the simulator.
    sim.faults.latency_seconds = 0
    subprocess.run(
        [sys.executable, "manage.py", "sync_batches", "--quick", "-v", "0"],
        cwd=ROOT,
        env=first_env,
        check=True,
    )
    expected = sim.snapshot()
    stored = dict(Batch.objects.present().values_list("id", "raw").iterator(chunk_size=10000))
    mismatches = {
        "missing": len(set(expected) - set(stored)),
        "extra": len(set(stored) - set(expected)),
        "different": sum(1 for i, raw in stored.items() if i in expected and raw != expected[i]),
    }
    server.stop()

    def sweep_figures(run) -> dict:
        minutes_taken = run.duration.total_seconds() / 60 if run.duration else None
        pace = run.pages_fetched / minutes_taken if minutes_taken else None
        pages_needed = -(-size // PAGE_SIZE)
        return {
            "outcome": run.outcome,
            "error": run.error[:120],
            "note": run.note[:160],
            "minutes": round(minutes_taken, 1) if minutes_taken else None,
            "pages": run.pages_fetched,
            "requests": run.api_requests,
            "pages_per_minute": round(pace, 1) if pace else None,
            "minutes_at_that_pace_for_every_page": round(pages_needed / pace, 1) if pace else None,
        }

    return {
        "size": size,
        "generated_seconds": round(generated, 1),
        "first_sync_seconds": round(first_seconds, 1),
        "first_sync_cpu_probe": round(probe_first, 2),
        "window_minutes": minutes,
        "cpu_probes": [round(p, 2) for p in probes],
        "quick_syncs": len(quick),
        "quick_requests_median": statistics.median([r.api_requests for r in quick])
        if quick
        else None,
        "quick_requests_mean": round(statistics.mean([r.api_requests for r in quick]), 1)
        if quick
        else None,
        "quick_requests_max": max((r.api_requests for r in quick), default=None),
        "quick_seconds_median": round(
            statistics.median([r.duration.total_seconds() for r in quick]), 2
        )
        if quick
        else None,
        "changes_seen": len(lags) + unmatched,
        "freshness_p50": percentile(lags, 0.5),
        "freshness_p95": percentile(lags, 0.95),
        "freshness_max": round(max(lags), 1) if lags else None,
        "unmatched_at_end": unmatched,
        "oldest_unmatched_seconds": round(oldest_unmatched, 1),
        "sweeps": [sweep_figures(r) for r in sweeps],
        "mismatches_after": mismatches,
        "peak_rss_mb": round(peak_rss_kb() / 1024, 1),
    }


def _aware(timestamp: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    children = {
        size: subprocess.Popen(
            [
                sys.executable,
                __file__,
                "instance",
                str(size),
                str(args.minutes),
                str(args.latency),
                args.host,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for size in map(int, args.sizes.split(","))
    }
    results = []
    for size, child in children.items():
        out, _ = child.communicate()
        if child.returncode != 0:
            print(f"size {size} failed:\n{out}", file=sys.stderr)
            continue
        result = json.loads(out.strip().splitlines()[-1])
        results.append(result)
        print(json.dumps(result), flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"activity-{stamp}.json").write_text(json.dumps(results, indent=2))
    print()
    print(
        "| batches | quick syncs | requests/quick sync (median, mean, max) | wall/quick sync | freshness p50 / p95 / max | unmatched at end | full sweeps | mismatches after |"
    )
    print("|---:|---:|---|---:|---|---:|---|---|")
    for r in results:
        sweeps = "; ".join(
            f"{s['outcome']} {s['minutes']} min, {s['pages_per_minute']} pages/min"
            + (
                f" (all pages: {s['minutes_at_that_pace_for_every_page']} min)"
                if s["outcome"] == "failed"
                else ""
            )
            for s in r["sweeps"]
        )
        print(
            f"| {r['size']:,} | {r['quick_syncs']} | {r['quick_requests_median']}, {r['quick_requests_mean']}, {r['quick_requests_max']} | "
            f"{r['quick_seconds_median']} s | {r['freshness_p50']} / {r['freshness_p95']} / {r['freshness_max']} s | "
            f"{r['unmatched_at_end']} | {sweeps} | {r['mismatches_after']} |"
        )


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "instance":
        print(
            json.dumps(
                instance(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
            )
        )
    else:
        main()
