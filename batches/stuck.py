"""Where stuck is decided: the transitions of batches into and out of "stuck",
and of syncing into and out of "stale", each recorded once and alerted once.

`evaluate_stuck()` is the one entry point; the post-sync hook, the periodic
Celery task, the `check_stuck` command and the tests all call it.

The rules, and why:

- A batch is *declared* stuck (Batch.stuck_since set, a STUCK event, an
  alert) only from fresh data: after a sync that succeeded, judged as of that
  sync's start. A batch's page was read after the sync started, so "no
  progress for STUCK_AFTER_MINUTES as of the start" is a fact, never a guess.
  When syncs fail, every batch looks frozen only because this app is blind:
  no stuck alarm then; instead, once no sync has succeeded for
  SYNC_STALE_AFTER_MINUTES, one "syncing is stale" alert (and one "syncing
  recovered" when a sync succeeds again).
- stuck_since is set to the batch's last progress at the time it was
  declared: the start of the stuck period. Progress moves last_progress_at
  past it, which is how a recovery is told from "the threshold was raised".
- A batch is *declared* overdue (Batch.declared_overdue_at set, an OVERDUE
  event, an alert) on the same fresh data, once it has been In Progress for
  OVERDUE_AFTER_HOURS since created_at (BatchQuerySet.overdue()). Inkit gives
  created_at, so this is known from the first sync: every batch already
  overdue then is declared by that one evaluation, into one digest. It is
  never cleared: one alert per batch, whatever it does next (a batch that
  finishes is no longer overdue by the rule, and one still In Progress stays
  so).
- A declared batch is cleared as RECOVERED when it progresses while still In
  Progress, and as FINISHED when its status leaves In Progress or Inkit stops
  listing it (gone): whoever was told "stuck" is always told when it ends.
- Every change is a claim: a conditional UPDATE on rows this transaction has
  locked (SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite's
  BEGIN IMMEDIATE serialises writers), with the row count checked, so two
  evaluators at once record and alert each transition exactly once, and an
  evaluator never waits on a row the sync is writing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from . import alerts
from .alerts import DeliveryOutcome
from .models import Alert, Batch, BatchEvent, SyncHealth, SyncRun
from .timefmt import format_utc

log = logging.getLogger(__name__)

# Transitions claimed per transaction: big enough that a mass stall (every
# In Progress batch at once) takes a few statements per thousand batches,
# small enough that locks are held for milliseconds.
CLAIM_CHUNK = 500

# The batch fields a transition event records (its state after the event).
_ROW_FIELDS = (
    "id",
    "status",
    "created_at",
    "completed",
    "failed",
    "in_progress",
    "last_progress_at",
    "stuck_since",
    "gone_at",
)


class ClaimConflict(RuntimeError):
    """A conditional update changed fewer rows than were locked for it; the
    chunk is rolled back and the next evaluation tries again."""


@dataclass
class SyncState:
    """What the sync runs say about how fresh the batches' data is."""

    basis: SyncRun | None  # The run whose data is judged.
    last_success: SyncRun | None
    stale: bool  # No successful sync for SYNC_STALE_AFTER_MINUTES.
    stale_since: datetime | None  # When blindness began, if stale.

    @property
    def fresh(self) -> bool:
        """Whether stuck may be declared: the judged run succeeded, recently."""
        return (
            not self.stale
            and self.basis is not None
            and self.basis.outcome in SyncRun.READ_OUTCOMES
        )


@dataclass
class Evaluation:
    """What one evaluation found, claimed and sent."""

    now: datetime
    sync: SyncState
    stuck: list[str] = field(default_factory=list)
    overdue: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    still_stuck: int = 0  # Declared earlier and still stuck: not alerted again.
    sync_change: str = ""  # "stale" or "recovered" when this evaluation claimed one.
    alert: Alert | None = None
    deliveries: list[DeliveryOutcome] = field(default_factory=list)

    @property
    def delivery_failed(self) -> bool:
        return any(not outcome.sent for outcome in self.deliveries)


# Freshness -------------------------------------------------------------------


def sync_state(now: datetime, sync_run: SyncRun | None = None) -> SyncState:
    """Judge freshness from the sync runs: the given run (just finished) or
    else the latest finished one, and the last success."""
    basis = sync_run or SyncRun.objects.finished().order_by("-started_at").first()
    last_success = SyncRun.objects.last_success()
    stale_after = timedelta(minutes=settings.SYNC_STALE_AFTER_MINUTES)
    if last_success is not None:
        since = last_success.finished_at or last_success.started_at
    else:
        # Never succeeded: blind since the first attempt. No attempt at all
        # (a fresh install) is not stale: there is nothing to be blind to yet.
        first = SyncRun.objects.finished().order_by("started_at").first()
        since = first.started_at if first else None
    stale = since is not None and since < now - stale_after
    return SyncState(
        basis=basis, last_success=last_success, stale=stale, stale_since=since if stale else None
    )


# Batch transitions ---------------------------------------------------------------


def declare_stuck(as_of: datetime, now: datetime) -> list[BatchEvent]:
    """Declare stuck every batch stuck as of `as_of` not declared yet, among
    those the API showed at or after `as_of` (a quick sync reads only some
    batches; each batch's checked_at says how fresh its row is): one STUCK
    event each. Longest without progress first."""
    candidates = Batch.objects.stuck(as_of).filter(
        Q(checked_at__isnull=True) | Q(checked_at__gte=as_of), stuck_since__isnull=True
    )
    ids = candidates.order_by("last_progress_at", "id").values_list("id", flat=True)

    def event(row: dict) -> BatchEvent:
        return _event(
            row,
            BatchEvent.Kind.STUCK,
            now,
            {
                "stuck_since": row["last_progress_at"].isoformat(),
                "stuck_after_minutes": settings.STUCK_AFTER_MINUTES,
            },
        )

    return _claim(candidates, list(ids), {"stuck_since": F("last_progress_at")}, event)


def declare_overdue(as_of: datetime, now: datetime) -> list[BatchEvent]:
    """Declare overdue every batch overdue as of `as_of` not declared yet,
    among those the API showed at or after `as_of` (as declare_stuck()); one
    OVERDUE event each. Oldest first."""
    candidates = Batch.objects.overdue(as_of).filter(
        Q(checked_at__isnull=True) | Q(checked_at__gte=as_of), declared_overdue_at__isnull=True
    )
    ids = candidates.order_by("created_at", "id").values_list("id", flat=True)

    def event(row: dict) -> BatchEvent:
        return _event(
            row,
            BatchEvent.Kind.OVERDUE,
            now,
            {
                "created_at": row["created_at"].isoformat(),
                "overdue_after_hours": settings.OVERDUE_AFTER_HOURS,
            },
        )

    return _claim(candidates, list(ids), {"declared_overdue_at": now}, event)


def clear_recovered(now: datetime) -> list[BatchEvent]:
    """Clear declared batches that progressed while still In Progress."""
    candidates = Batch.objects.recovered_from_stuck()

    def event(row: dict) -> BatchEvent:
        return _event(
            row, BatchEvent.Kind.RECOVERED, now, _stuck_period(row, row["last_progress_at"])
        )

    ids = candidates.order_by("stuck_since", "id").values_list("id", flat=True)
    return _claim(candidates, list(ids), {"stuck_since": None}, event)


def clear_finished(now: datetime) -> list[BatchEvent]:
    """Clear declared batches no longer In Progress, or no longer listed."""
    candidates = Batch.objects.finished_while_stuck()

    def event(row: dict) -> BatchEvent:
        if row["gone_at"] is not None:
            changes = _stuck_period(row, row["gone_at"]) | {"reason": "gone"}
        else:
            changes = _stuck_period(row, row["last_progress_at"]) | {
                "reason": "status",
                "status": row["status"],
            }
        return _event(row, BatchEvent.Kind.FINISHED, now, changes)

    ids = candidates.order_by("stuck_since", "id").values_list("id", flat=True)
    return _claim(candidates, list(ids), {"stuck_since": None}, event)


def _claim(
    candidates: QuerySet[Batch],
    ids: list[str],
    changes: dict,
    make_event: Callable[[dict], BatchEvent],
) -> list[BatchEvent]:
    """Apply `changes` to those of `ids` still matching `candidates`, and
    record an event for each row changed, chunk by chunk. Rows another
    transaction holds are skipped, never waited for: the next evaluation
    gets them."""
    events: list[BatchEvent] = []
    for start in range(0, len(ids), CLAIM_CHUNK):
        chunk = ids[start : start + CLAIM_CHUNK]
        with transaction.atomic():
            rows = list(
                candidates.filter(pk__in=chunk)
                .order_by("pk")
                .select_for_update(skip_locked=True)
                .values(*_ROW_FIELDS)
            )
            if not rows:
                continue
            claimed = candidates.filter(pk__in=[row["id"] for row in rows]).update(**changes)
            if claimed != len(rows):
                raise ClaimConflict(f"claimed {claimed} of {len(rows)} locked batches")
            # Locked in pk order (so evaluators never deadlock each other);
            # recorded in the candidates' order, which the alert lists by.
            position = {batch_id: n for n, batch_id in enumerate(chunk)}
            rows.sort(key=lambda row: position[row["id"]])
            events.extend(BatchEvent.objects.bulk_create(make_event(row) for row in rows))
    return events


def _event(row: dict, kind: str, now: datetime, changes: dict) -> BatchEvent:
    return BatchEvent(
        batch_id=row["id"],
        seen_at=now,
        kind=kind,
        status=row["status"],
        completed=row["completed"],
        failed=row["failed"],
        in_progress=row["in_progress"],
        changes=changes,
    )


def _stuck_period(row: dict, ended: datetime) -> dict:
    """How long a cleared batch went without progress, for its event and alert."""
    return {
        "stuck_since": row["stuck_since"].isoformat(),
        "stuck_for_seconds": max(int((ended - row["stuck_since"]).total_seconds()), 0),
    }


# Syncing transitions -------------------------------------------------------------


def sync_change_due(state: SyncState) -> str:
    """ "stale" or "recovered" when syncing's declared state differs from what
    the sync runs say; empty otherwise. Claimed later, with the alert."""
    declared = SyncHealth.declared_stale_since()
    if state.stale and declared is None:
        return "stale"
    if not state.stale and declared is not None:
        return "recovered"
    return ""


# The entry point -----------------------------------------------------------------


def evaluate_stuck(
    now: datetime | None = None,
    sync_run: SyncRun | None = None,
    *,
    deliver: bool = True,
) -> Evaluation:
    """Find and claim stuck/recovered/finished batches and stale/recovered
    syncing, alert them as one digest, then send (or retry) due deliveries.

    `sync_run` is the run that just finished (the post-sync hook); without
    it the latest finished run is judged. `now` fixes the clock (tests).
    """
    fixed_clock = now is not None
    now = now or timezone.now()
    state = sync_state(now, sync_run)
    evaluation = Evaluation(now=now, sync=state)
    events: list[BatchEvent] = []
    if state.fresh:
        # A quick sync re-reads only what can have changed; the last full
        # sweep read the rest, and what it read is fact as of its start.
        judged = [state.basis.started_at]
        sweep = SyncRun.objects.full_sweeps().succeeded().order_by("-started_at").first()
        if sweep is not None and sweep.pk != state.basis.pk:
            judged.append(sweep.started_at)
        for as_of in judged:
            events += declare_stuck(as_of=as_of, now=now)
            events += declare_overdue(as_of=as_of, now=now)
    # Recoveries and finishes are observed progress, true however old the
    # data: they are recorded whether or not the last sync succeeded.
    events += clear_recovered(now)
    events += clear_finished(now)
    for event in events:
        {
            BatchEvent.Kind.STUCK: evaluation.stuck,
            BatchEvent.Kind.OVERDUE: evaluation.overdue,
            BatchEvent.Kind.RECOVERED: evaluation.recovered,
            BatchEvent.Kind.FINISHED: evaluation.finished,
        }[event.kind].append(event.batch_id)
    evaluation.still_stuck = Batch.objects.declared_stuck().count() - len(evaluation.stuck)

    change = sync_change_due(state)
    if events or change or alerts.has_orphaned_transitions(now):
        evaluation.alert, evaluation.sync_change = alerts.create_alert(
            now=now,
            sync_run=state.basis,
            event_ids=[event.pk for event in events],
            sync_change=change,
            sync=state,
        )
    if deliver:
        # A fixed clock (tests) is followed by delivery too; otherwise
        # delivery reads the time afresh after each slow network call.
        evaluation.deliveries = alerts.deliver_due(now if fixed_clock else None)
    return evaluation


def evaluate_after_sync(run: SyncRun) -> Evaluation | None:
    """The post-sync hook: evaluate after `run`, never raising, so a broken
    alert channel or a bug here can never fail or block syncing."""
    try:
        evaluation = evaluate_stuck(sync_run=run)
    except Exception:
        log.exception("stuck evaluation after sync #%s failed; the next evaluation retries", run.pk)
        return None
    if evaluation.alert is not None:
        log.info("sync #%s: %s", run.pk, evaluation.alert.subject)
    return evaluation


def summary_lines(evaluation: Evaluation) -> Iterable[str]:
    """What an evaluation did, for the command and the log."""
    state = evaluation.sync
    basis = state.basis
    if basis is None:
        yield "No finished sync yet: nothing to judge, no batch declared stuck."
    elif state.fresh:
        started = format_utc(basis.started_at, seconds=True)
        yield f"Judged the data of sync #{basis.pk} (started {started}, succeeded)."
    elif state.stale:
        since = format_utc(state.stale_since, seconds=True)
        yield (
            f"Syncing is stale: no successful sync since {since}; "
            "no batch declared stuck on data this old."
        )
    else:
        yield (
            f"The last sync (#{basis.pk}) {basis.get_outcome_display().lower()}: "
            "no batch declared stuck until a sync succeeds."
        )
    yield f"Became stuck: {_ids(evaluation.stuck)}"
    yield f"Became overdue: {_ids(evaluation.overdue)}"
    yield f"Recovered: {_ids(evaluation.recovered)}"
    yield f"Finished: {_ids(evaluation.finished)}"
    yield f"Still stuck, already alerted: {evaluation.still_stuck}"
    if evaluation.sync_change:
        yield f"Syncing: {evaluation.sync_change}"
    if evaluation.alert is not None:
        yield f"Alert #{evaluation.alert.pk}: {evaluation.alert.subject}"
    elif evaluation.stuck or evaluation.overdue or evaluation.recovered or evaluation.finished:
        yield "Alert: the transitions were alerted by another evaluator running at the same time."
    if not alerts.configured_channels():
        yield (
            "No alert channel is configured (ALERT_EMAILS, ALERT_WEBHOOK_URL): "
            "alerts are only recorded."
        )
    for outcome in evaluation.deliveries:
        yield outcome.line()


def _ids(ids: list[str], limit: int = 10) -> str:
    if not ids:
        return "none"
    shown = ", ".join(ids[:limit])
    return f"{len(ids)} ({shown}{', …' if len(ids) > limit else ''})"
