"""The sync's errors, and the one function through which any text from
outside (Inkit's answers, exception messages, rejected items) reaches a
sync run's error or note, or the log: describe()."""

from __future__ import annotations

import threading

from ..inkit import InkitError
from ..secrets import scrub


class SyncError(Exception):
    """The sync cannot go on; the message is meant for an operator."""


class SyncLockLost(SyncError):
    pass


class SyncStopped(SyncError):
    pass


# Set when the process is shutting down (a Celery worker on SIGTERM): the
# sync stops between pages, records itself and releases the lock, well
# within a platform's shutdown grace period. The next sync carries on.
shutdown_requested = threading.Event()
STOPPED = "stopped because the worker is shutting down; the next sync carries on"
TIME_LIMIT = "stopped at its time limit (SYNC_TIME_LIMIT_SECONDS); the next sync carries on"


def describe(error: BaseException | str) -> str:
    """One line for an operator from an error or from text that came from
    outside. Every such text the sync stores (SyncRun.error and .note) or
    logs goes through here, and leaves it scrubbed of secrets (batches.secrets):
    an error's message may quote Inkit's body or a database driver's text."""
    if isinstance(error, str):
        text = error
    elif isinstance(error, (InkitError, SyncError)):
        text = str(error)
    elif isinstance(error, KeyboardInterrupt):
        text = "interrupted"
    else:
        text = f"unexpected error: {type(error).__name__}: {error}"
    return scrub(" ".join(text.split()))
