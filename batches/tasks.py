"""Celery tasks: thin wrappers around the services they name."""

from celery import shared_task
from celery.signals import worker_shutting_down

from .models import SyncRun
from .stuck import evaluate_stuck
from .sync import shutdown_requested, sync_all


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


# Late acks: evaluation claims every transition and delivery, so a task run
# twice alerts nothing twice.
@shared_task(acks_late=True, ignore_result=True)
def check_stuck() -> int | None:
    """Evaluate stuck batches and syncing, and send or retry due alert
    deliveries; return the id of the alert made, if any."""
    alert = evaluate_stuck().alert
    return alert.pk if alert else None
