"""The sync service: Inkit's List Batches mirrored into the database.

One file per kind of code:

- listing.py: whether a listing read page by page is complete (pure
  Python, no HTTP, no database; tests/test_sync_listing.py);
- writes.py: the database writes (a page of batches, gone batches);
- sql.py: the database-specific SQL those writes use;
- budget.py: the request budget every request to Inkit waits for;
- runs.py: the runs themselves (full sweep, quick sync) and sync_all();
- errors.py: the sync's errors and describe(), the one way outside text
  reaches a run's record or the log.

`sync_all()` is the one entry point; the Celery task, the `sync_batches`
command and the tests all call it.
"""

from .errors import STOPPED, TIME_LIMIT, SyncError, describe, shutdown_requested
from .runs import FullSweep, QuickSync, summary_line, sync_all
from .writes import fingerprint, mark_gone, upsert_batches

__all__ = [
    "STOPPED",
    "TIME_LIMIT",
    "FullSweep",
    "QuickSync",
    "SyncError",
    "describe",
    "fingerprint",
    "mark_gone",
    "shutdown_requested",
    "summary_line",
    "sync_all",
    "upsert_batches",
]
