"""Celery tasks: thin wrappers around the services they name."""

import logging

from celery import shared_task
from celery.signals import worker_shutting_down
from django.utils import timezone
from kombu.exceptions import OperationalError

from .models import SyncRun
from .stuck import evaluate_after_sync, evaluate_stuck
from .sync import shutdown_requested, sync_all

log = logging.getLogger(__name__)


@worker_shutting_down.connect
def _stop_syncing(**kwargs: object) -> None:
    """On SIGTERM a running sync stops at the next page and records itself,
    so the worker exits inside the platform's grace period."""
    shutdown_requested.set()


# Late acks: the sync is idempotent, so a task lost with its worker is safely
# run again from the broker rather than dropped. The name and the trigger
# argument are those of before quick syncs: messages queued then still run
# (as full sweeps, what they meant).
@shared_task(acks_late=True, ignore_result=True)
def sync_batches(trigger: str = SyncRun.Trigger.SCHEDULE, kind: str = SyncRun.Kind.FULL) -> int:
    """Run one full sweep or quick sync of Inkit's batches; return the SyncRun's id."""
    if kind not in SyncRun.Kind.values:
        kind = SyncRun.Kind.FULL
    return sync_all(trigger=trigger, kind=kind).pk


def queue_sync(trigger: str, kind: str = SyncRun.Kind.QUICK) -> None:
    """Queue a sync run for a worker. When the broker cannot take it, the
    failure is recorded as a failed sync run, so the header and /sync-runs/
    say so rather than a "Sync now" that silently never happens."""
    try:
        sync_batches.delay(trigger=trigger, kind=kind)
    except OperationalError:
        log.warning("could not queue a sync: the broker is unreachable")
        SyncRun.objects.create(
            trigger=trigger,
            kind=kind,
            outcome=SyncRun.Outcome.FAILED,
            finished_at=timezone.now(),
            error="Could not queue the sync: the task broker (REDIS_URL) is unreachable.",
        )


# Late acks: evaluation claims every transition and delivery, so a task run
# twice alerts nothing twice.
@shared_task(acks_late=True, ignore_result=True)
def check_stuck(sync_run_id: int | None = None) -> int | None:
    """Evaluate stuck batches and syncing, and send or retry due alert
    deliveries; return the id of the alert made, if any. With a sync run's
    id (queued after that run), its data is the one judged."""
    if sync_run_id is not None:
        run = SyncRun.objects.filter(pk=sync_run_id).first()
        if run is not None:
            evaluation = evaluate_after_sync(run)
            return evaluation.alert.pk if evaluation and evaluation.alert else None
    alert = evaluate_stuck().alert
    return alert.pk if alert else None


def queue_evaluation(run: SyncRun) -> None:
    """Hand the evaluation after a run to its own task. Never raises: with
    the broker down, the minutely check_stuck catches up."""
    try:
        check_stuck.delay(sync_run_id=run.pk)
    except Exception:
        log.warning("could not queue the stuck evaluation after sync #%s; check_stuck catches up", run.pk)
