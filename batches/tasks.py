"""Celery tasks: thin wrappers around the services they name."""

import logging

from celery import shared_task
from celery.signals import worker_shutting_down
from django.utils import timezone
from kombu.exceptions import OperationalError

from .models import SyncRun
from .stuck import evaluate_stuck
from .sync import shutdown_requested, sync_all

log = logging.getLogger(__name__)


@worker_shutting_down.connect
def _stop_syncing(**kwargs: object) -> None:
    """On SIGTERM a running sync stops at the next page and records itself,
    so the worker exits inside the platform's grace period."""
    shutdown_requested.set()


# Late acks: the sync is idempotent, so a task lost with its worker is safely
# run again from the broker rather than dropped.
@shared_task(acks_late=True, ignore_result=True)
def sync_batches(trigger: str = SyncRun.Trigger.SCHEDULE) -> int:
    """Run one full sync of Inkit's batches; return the SyncRun's id."""
    return sync_all(trigger=trigger).pk


def queue_sync(trigger: str) -> None:
    """Queue a sync for a worker. When the broker cannot take it, the failure
    is recorded as a failed sync run, so the header and /sync-runs/ say so
    rather than a "Sync now" that silently never happens."""
    try:
        sync_batches.delay(trigger=trigger)
    except OperationalError:
        log.warning("could not queue a sync: the broker is unreachable")
        SyncRun.objects.create(
            trigger=trigger,
            outcome=SyncRun.Outcome.FAILED,
            finished_at=timezone.now(),
            error="Could not queue the sync: the task broker (REDIS_URL) is unreachable.",
        )


# Late acks: evaluation claims every transition and delivery, so a task run
# twice alerts nothing twice.
@shared_task(acks_late=True, ignore_result=True)
def check_stuck() -> int | None:
    """Evaluate stuck batches and syncing, and send or retry due alert
    deliveries; return the id of the alert made, if any."""
    alert = evaluate_stuck().alert
    return alert.pk if alert else None
