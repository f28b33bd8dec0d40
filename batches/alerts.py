"""Alerts: one digest per evaluation, delivered once per channel, retried
with backoff.

Channels come from settings; either, both or none may be set:
- email to ALERT_EMAILS through Django's mail framework (MAILERS["default"]);
- a JSON POST to ALERT_WEBHOOK_URL in the shape Slack's incoming webhooks
  accept (a mrkdwn `text`), with the same content as structured fields
  beside it for any other receiver.

How delivery works, and why:
- An alert's content (Alert.payload) is frozen when it is created, so every
  channel and every retry says the same thing as of the same moment.
- Each channel has one AlertDelivery row per alert, claimed with a
  conditional update before every attempt: however many workers deliver at
  once, each attempt is made by one of them, and a retry on one channel
  never re-sends what another channel already delivered. The claim is a
  lease: a worker killed mid-attempt loses it after DELIVERY_LEASE.
- A channel's deliveries go out in order, oldest alert first, and a
  failure stops that channel for the round: a "recovered" never arrives
  before its "stuck", and a receiver that is down is not hammered. The other
  channel carries on.
- Failures are retried with exponential backoff (1 min doubling to 1 h) and
  given up a day after the alert. A message the receiver rejects outright
  (HTTP 400/413/422, SMTP 5xx on the message) is not retried.
- The webhook URL and the SMTP password are secrets: failures are described
  in this module's own words, and what a receiver answers is scrubbed
  (batches.secrets) before it is cut short, logged or stored.
"""

from __future__ import annotations

import logging
import smtplib
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import requests
from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import Count, Q
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from .models import (
    IN_PROGRESS,
    Alert,
    AlertDelivery,
    BatchDestination,
    BatchEvent,
    SyncHealth,
    SyncRun,
)
from .secrets import scrub
from .timefmt import format_duration, format_utc

if TYPE_CHECKING:
    from .stuck import SyncState

log = logging.getLogger(__name__)

# Batches named in one alert; the rest are counted ("…and 70 more"), so a
# mass stall is one readable message, never a flood.
MAX_LISTED = 50
# The order sections appear in: what needs action first.
KIND_ORDER = (
    BatchEvent.Kind.STUCK,
    BatchEvent.Kind.OVERDUE,
    BatchEvent.Kind.FINISHED,
    BatchEvent.Kind.RECOVERED,
)
# The same, as the payload's keys.
KINDS = tuple(str(kind) for kind in KIND_ORDER)

BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(days=1)
# Longer than any one attempt can take (timeouts included): a claim older
# than this belongs to a worker that died mid-attempt.
DELIVERY_LEASE = timedelta(minutes=5)
# Deliveries one channel sends per round; the periodic task takes the rest.
MAX_PER_ROUND = 20
# Transition events no alert took (their evaluator died in between) are
# adopted by a later evaluation after this grace, within this window.
ORPHAN_GRACE = timedelta(minutes=10)
ORPHAN_WINDOW = timedelta(days=1)
ADOPT_CHUNK = 1000
WEBHOOK_CONNECT_TIMEOUT = 5.0
PERMANENT_HTTP_STATUSES = {400, 413, 422}
ERROR_MAX_CHARS = 500


class DeliveryError(Exception):
    """A channel could not deliver. The message is ours, safe to log and
    store; `permanent` means retrying the same message cannot help."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass
class DeliveryOutcome:
    """One attempt's result, for the log and the check_stuck command."""

    alert_id: int
    channel: str
    sent: bool
    attempts: int
    detail: str
    retry_at: datetime | None = None

    def line(self) -> str:
        head = f"alert #{self.alert_id} {self.channel}"
        if self.sent:
            return f"{head}: sent (attempt {self.attempts}) {self.detail}"
        if self.retry_at is not None:
            return (
                f"{head}: failed (attempt {self.attempts}), next attempt at "
                f"{format_utc(self.retry_at, seconds=True)}: {self.detail}"
            )
        return f"{head}: gave up after {self.attempts} attempt(s): {self.detail}"


# Channels ----------------------------------------------------------------------


def configured_channels() -> list[str]:
    """The channels alerts go to, as settings say now."""
    channels = []
    if settings.ALERT_EMAILS:
        channels.append(AlertDelivery.Channel.EMAIL)
    if settings.ALERT_WEBHOOK_URL:
        channels.append(AlertDelivery.Channel.WEBHOOK)
    return channels


def send_email(alert: Alert) -> str:
    """Send the alert to ALERT_EMAILS through the default mailer."""
    recipients = list(settings.ALERT_EMAILS)
    message = EmailMessage(
        subject=email_subject(alert.payload),
        body=email_body(alert.payload),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
        # Lets a mail filter or a person tell a retried alert from a new one.
        headers={"X-Batchwatch-Alert": str(alert.pk)},
    )
    try:
        sent = message.send(using="default")
    except smtplib.SMTPDataError as error:
        # The server refused this message; 5xx means it always will.
        raise DeliveryError(_smtp_error(error), permanent=500 <= error.smtp_code < 600) from None
    except smtplib.SMTPException as error:
        raise DeliveryError(_smtp_error(error)) from None
    except OSError as error:  # Refused, unreachable, timed out, TLS.
        raise DeliveryError(f"SMTP: {_os_error(error)}") from None
    if not sent:
        raise DeliveryError("the mail backend sent nothing")
    return f"to {len(recipients)} recipient{'s' if len(recipients) != 1 else ''}"


def post_webhook(alert: Alert) -> str:
    """POST the alert as JSON to ALERT_WEBHOOK_URL."""
    timeout = float(settings.ALERT_WEBHOOK_TIMEOUT_SECONDS)
    try:
        response = requests.post(
            settings.ALERT_WEBHOOK_URL,
            json=webhook_body(alert.payload),
            timeout=(min(WEBHOOK_CONNECT_TIMEOUT, timeout), timeout),
            # A redirected POST becomes a GET: treat a redirect as a failure.
            allow_redirects=False,
            headers={
                "User-Agent": f"Batchwatch/{settings.VERSION}",
                "X-Batchwatch-Alert": str(alert.pk),
            },
        )
    except requests.Timeout:
        raise DeliveryError(f"timed out after {timeout:g} s") from None
    except requests.ConnectionError as error:
        raise DeliveryError(f"could not connect: {_os_error(error)}") from None
    except requests.RequestException as error:
        # requests' messages carry the URL: name the failure, never quote it.
        raise DeliveryError(f"request failed: {type(error).__name__}") from None
    if 200 <= response.status_code < 300:
        return f"HTTP {response.status_code}"
    # Scrubbed before it is cut short: a receiver may quote its own URL.
    body = " ".join(scrub(response.text).split())[:200]
    raise DeliveryError(
        f"HTTP {response.status_code}" + (f": {body}" if body else ""),
        permanent=response.status_code in PERMANENT_HTTP_STATUSES,
    )


SENDERS: dict[str, Callable[[Alert], str]] = {
    AlertDelivery.Channel.EMAIL: send_email,
    AlertDelivery.Channel.WEBHOOK: post_webhook,
}


def _smtp_error(error: smtplib.SMTPException) -> str:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return f"SMTP: all {len(error.recipients)} recipients refused"
    if isinstance(error, smtplib.SMTPResponseException):
        text = (
            error.smtp_error.decode(errors="replace")
            if isinstance(error.smtp_error, bytes)
            else str(error.smtp_error)
        )
        return f"SMTP {error.smtp_code}: {' '.join(scrub(text).split())[:200]}"
    return scrub(f"SMTP: {type(error).__name__}: {error}")


def _os_error(error: BaseException) -> str:
    """Name the lowest-level cause (refused, timed out, name not resolved)
    without quoting any message that may hold the URL."""
    seen: set[int] = set()
    cause: BaseException | None = error
    found = type(error).__name__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        found = type(cause).__name__
        if isinstance(cause, OSError) and cause.strerror:
            return f"{cause.strerror} ({found})"
        reason = getattr(cause, "reason", None)  # urllib3's MaxRetryError
        cause = (
            reason if isinstance(reason, BaseException) else (cause.__cause__ or cause.__context__)
        )
    if isinstance(error, TimeoutError):
        return "timed out"
    return found


# Creating an alert -------------------------------------------------------------


def has_orphaned_transitions(now: datetime) -> bool:
    """Whether transition events wait for an alert their evaluator never made."""
    return (
        BatchEvent.objects.filter(kind__in=BatchEvent.TRANSITIONS)
        .filter(_orphaned(now), alert__isnull=True)
        .exists()
    )


def _orphaned(now: datetime) -> Q:
    return Q(seen_at__lt=now - ORPHAN_GRACE, seen_at__gte=now - ORPHAN_WINDOW)


def create_alert(
    *,
    now: datetime,
    sync_run: SyncRun | None,
    event_ids: list[int],
    sync_change: str,
    sync: SyncState,
) -> tuple[Alert | None, str]:
    """Make one alert of this evaluation's transition events (plus any
    orphaned ones) and its syncing change, claiming each so no other alert
    takes it; queue a delivery per configured channel. Returns the alert
    (None if there was nothing left to alert) and the syncing change this
    evaluation claimed."""
    with transaction.atomic():
        claimed_change, sync_info = _claim_sync_change(sync_change, sync, now)
        alert = Alert.objects.create(created_at=now, sync_run=sync_run, subject="", payload={})
        adopted = 0
        unclaimed = BatchEvent.objects.filter(kind__in=BatchEvent.TRANSITIONS).filter(
            alert__isnull=True
        )
        for start in range(0, len(event_ids), ADOPT_CHUNK):
            chunk = event_ids[start : start + ADOPT_CHUNK]
            adopted += unclaimed.filter(pk__in=chunk).update(alert=alert)
        adopted += unclaimed.filter(_orphaned(now)).update(alert=alert)
        if not adopted and not claimed_change:
            transaction.set_rollback(True)
            return None, ""
        payload = build_payload(alert, now, sync_info)
        alert.payload = payload
        alert.subject = payload["summary"][:200]
        alert.stuck = payload["counts"]["stuck"]
        alert.overdue = payload["counts"]["overdue"]
        alert.recovered = payload["counts"]["recovered"]
        alert.finished = payload["counts"]["finished"]
        alert.sync_state = claimed_change
        alert.save()
        channels = configured_channels()
        AlertDelivery.objects.bulk_create(
            AlertDelivery(alert=alert, sync_run=sync_run, channel=channel, next_attempt_at=now)
            for channel in channels
        )
    log.info(
        "alert #%s created: %s; channels: %s",
        alert.pk,
        alert.subject,
        ", ".join(channels) or "none configured",
    )
    return alert, claimed_change


def _claim_sync_change(change: str, sync: SyncState, now: datetime) -> tuple[str, dict | None]:
    """Claim syncing's move to stale or back; the details for the alert."""
    if change == "stale" and sync.stale_since and SyncHealth.declare_stale(sync.stale_since):
        failed = SyncRun.objects.filter(
            outcome=SyncRun.Outcome.FAILED, started_at__gte=sync.stale_since
        ).order_by("-started_at")
        last_failure = failed.first()
        return "stale", {
            "state": "stale",
            "since": sync.stale_since.isoformat(),
            "for_seconds": int((now - sync.stale_since).total_seconds()),
            "last_success_id": sync.last_success.pk if sync.last_success else None,
            "failed_runs": failed.count(),
            "last_error": scrub(last_failure.error)[:ERROR_MAX_CHARS] if last_failure else "",
        }
    if change == "recovered":
        since = SyncHealth.clear_stale()
        if since is not None:
            success = sync.last_success
            return "recovered", {
                "state": "recovered",
                "since": since.isoformat(),
                "for_seconds": int(
                    ((success.finished_at if success else now) - since).total_seconds()
                ),
                "last_success_id": success.pk if success else None,
            }
    return "", None


def build_payload(alert: Alert, now: datetime, sync_info: dict | None) -> dict:
    """The alert's content: what the webhook posts beside `text`, and what
    the email and the Slack text are rendered from."""
    counts = {kind: 0 for kind in KIND_ORDER}
    counts.update(
        alert.events.order_by().values_list("kind").annotate(n=Count("pk")).values_list("kind", "n")
    )
    listed: list[BatchEvent] = []
    for kind in KIND_ORDER:
        room = MAX_LISTED - len(listed)
        if room <= 0:
            break
        listed += (
            alert.events.filter(kind=kind)
            .select_related("batch")
            .defer("batch__raw")
            .order_by("pk")[:room]
        )
    destinations: dict[str, list[dict]] = defaultdict(list)
    for dest in (
        BatchDestination.objects.filter(batch_id__in=[event.batch_id for event in listed])
        .order_by("batch_id", "name")
        .values("batch_id", "name", "count", "completed", "failed", "in_progress", "status")
    ):
        destinations[dest.pop("batch_id")].append(dest)
    batches = [_batch_item(event, destinations[event.batch_id], now) for event in listed]
    listed_counts = defaultdict(int)
    for item in batches:
        listed_counts[item["event"]] += 1
    payload = {
        "source": "batchwatch",
        "alert_id": alert.pk,
        "summary": "",
        "events": [str(kind) for kind in KIND_ORDER if counts[kind]]
        + ([f"sync_{sync_info['state']}"] if sync_info else []),
        "counts": {str(kind): counts[kind] for kind in KIND_ORDER},
        "not_listed": {str(kind): counts[kind] - listed_counts[kind] for kind in KIND_ORDER},
        "created_at": now.isoformat(),
        "stuck_after_minutes": settings.STUCK_AFTER_MINUTES,
        "overdue_after_hours": settings.OVERDUE_AFTER_HOURS,
        "sync_run_id": alert.sync_run_id,
        "sync": sync_info,
        "batches": batches,
        "stuck_url": absolute_url(_list_path() + "?stuck=1"),
        "overdue_url": absolute_url(_list_path() + "?overdue=1"),
    }
    payload["summary"] = headline(payload)
    return payload


def _batch_item(event: BatchEvent, destinations: list[dict], now: datetime) -> dict:
    batch = event.batch
    changes = event.changes or {}
    stuck_since = changes.get("stuck_since")
    if event.kind == BatchEvent.Kind.STUCK:
        stuck_for = (
            int((now - datetime.fromisoformat(stuck_since)).total_seconds()) if stuck_since else 0
        )
    elif event.kind == BatchEvent.Kind.OVERDUE:
        # How long it has been In Progress since it was created.
        stuck_for = max(int((now - batch.created_at).total_seconds()), 0)
    else:
        stuck_for = int(changes.get("stuck_for_seconds", 0))
    return {
        "event": str(event.kind),
        "id": batch.id,
        "name": batch.name,
        "status": batch.status,
        "total": batch.total,
        "created_at": batch.created_at.isoformat(),
        "last_progress_at": batch.last_progress_at.isoformat(),
        "stuck_since": stuck_since,
        "stuck_for_seconds": stuck_for,
        "stuck_for": format_duration(stuck_for),
        # For finished: "status" (left In Progress) or "gone" (no longer listed).
        "reason": changes.get("reason"),
        "destinations": destinations,
        "url": absolute_url(batch.get_absolute_url()),
    }


# Wording -------------------------------------------------------------------------


def batch_label(item: dict) -> str:
    """'Invoices March (rb_…)', on one line whatever the name holds."""
    name = " ".join((item.get("name") or "").split())
    return f"{name} ({item['id']})" if name else item["id"]


def headline(payload: dict) -> str:
    """One line saying what changed: the email subject, the Slack title."""
    counts = payload["counts"]
    parts = []
    sync = payload.get("sync")
    if sync and sync["state"] == "stale":
        parts.append(
            f"syncing stale: no successful sync for {format_duration(sync['for_seconds'])}"
        )
    elif sync:
        parts.append(f"syncing recovered after {format_duration(sync['for_seconds'])}")
    batches = payload["batches"]
    kinds = [kind for kind in KINDS if counts.get(kind)]
    if sum(counts.values()) == 1 and batches:
        item = batches[0]
        label = batch_label(item)
        if item["event"] == BatchEvent.Kind.STUCK:
            parts.append(f"stuck: {label}, no progress for {item['stuck_for']}")
        elif item["event"] == BatchEvent.Kind.OVERDUE:
            parts.append(f"overdue: {label}, In Progress for {item['stuck_for']} since created")
        elif item["event"] == BatchEvent.Kind.RECOVERED:
            parts.append(f"recovered: {label}")
        else:
            parts.append(f"finished: {label} ({_finish_reason(item)})")
    elif kinds:
        first, *rest = kinds
        noun = "batch" if counts[first] == 1 else "batches"
        parts.append(
            ", ".join([f"{counts[first]} {noun} {first}", *(f"{counts[k]} {k}" for k in rest)])
        )
    text = "; ".join(parts) or "nothing to report"
    return text[0].upper() + text[1:]


def _finish_reason(item: dict) -> str:
    if item.get("reason") == "gone":
        return "no longer listed by Inkit"
    return f"now {item['status']}" if item["status"] != IN_PROGRESS else "no longer In Progress"


def _destination_line(dest: dict) -> str:
    return (
        f"{dest['name']}: {dest['completed']} completed, {dest['failed']} failed, "
        f"{dest['in_progress']} in progress of {dest['count']}"
    )


def sections(payload: dict) -> list[dict]:
    """The alert as titled lists of batches with plain-text lines, shared by
    the email and the Slack text so both say the same."""
    created = datetime.fromisoformat(payload["created_at"])
    threshold = format_duration(payload["stuck_after_minutes"] * 60)
    # Payloads made before overdue alerts existed have no overdue figures.
    overdue_after = format_duration(payload.get("overdue_after_hours", 24) * 3600)
    titles = {
        "stuck": f"Became stuck: In Progress with no progress for {threshold} or more",
        "overdue": f"Became overdue: In Progress for more than {overdue_after} since created",
        "finished": "Finished: no longer In Progress",
        "recovered": "Progress resumed",
    }
    more_urls = {"stuck": payload["stuck_url"], "overdue": payload.get("overdue_url")}
    result = []
    for kind in KINDS:
        items = [item for item in payload["batches"] if item["event"] == kind]
        if not items and not payload["not_listed"].get(kind):
            continue
        entries = []
        for item in items:
            age = format_duration(
                (created - datetime.fromisoformat(item["created_at"])).total_seconds()
            )
            if kind == "stuck":
                since = format_utc(item["stuck_since"])
                what = f"No progress for {item['stuck_for']} (since {since})."
            elif kind == "overdue":
                what = f"In Progress for {item['stuck_for']} since it was created."
            elif kind == "recovered":
                what = f"Progressing again after {item['stuck_for']} without progress."
            else:
                what = (
                    f"Finished ({_finish_reason(item)}) after {item['stuck_for']} without progress."
                )
            entries.append(
                {
                    "item": item,
                    "label": batch_label(item),
                    "what": what,
                    "created": (
                        f"Created {format_utc(item['created_at'])} ({age} ago), "
                        f"{item['total']} documents."
                    ),
                    "destinations": [_destination_line(dest) for dest in item["destinations"]]
                    or ["No destinations reported yet."],
                }
            )
        more = payload["not_listed"][kind]
        result.append(
            {
                "kind": kind,
                "title": f"{titles[kind]} ({payload['counts'][kind]})",
                "entries": entries,
                "more": more,
                "more_url": more_urls.get(kind),
            }
        )
    return result


def sync_paragraph(payload: dict) -> str:
    """Plain words about syncing's change, or empty."""
    sync = payload.get("sync")
    if not sync:
        return ""
    if sync["state"] == "stale":
        text = (
            f"No sync of Inkit batches has succeeded for {format_duration(sync['for_seconds'])} "
            f"(since {format_utc(sync['since'])}). Batchwatch is blind: stuck batches cannot be "
            f"detected until a sync succeeds. {sync['failed_runs']} sync(s) failed since."
        )
        if sync["last_error"]:
            text += f" Last error: {sync['last_error']}"
        return text
    return (
        f"Sync #{sync['last_success_id']} succeeded: Batchwatch sees Inkit again after "
        f"{format_duration(sync['for_seconds'])} without a successful sync."
    )


def email_subject(payload: dict) -> str:
    subject = render_to_string("alerts/email_subject.txt", {"payload": payload})
    # A header is one line: batch names may hold anything.
    return " ".join(subject.split())[:200]


def email_body(payload: dict) -> str:
    return render_to_string(
        "alerts/email_body.txt",
        {
            "payload": payload,
            "sections": sections(payload),
            "sync_paragraph": sync_paragraph(payload),
            "created": format_utc(payload["created_at"]),
        },
    )


def slack_escape(text: str) -> str:
    """Text in Slack's mrkdwn: &, < and > are the only characters it asks
    to escape; unescaped, a name could open a link or a mention (<!channel>)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# In <url|text>, "|" ends the URL and ">" the link; whitespace ends it too.
_LINK_URL_UNSAFE = {"|": "%7C", "<": "%3C", ">": "%3E", " ": "%20", "\n": "%0A", "\t": "%09"}


def slack_link(url: str, text: str) -> str:
    """A mrkdwn link: the URL with the characters that would end it
    percent-encoded and its & escaped, the text escaped with any | shown as ¦
    (mrkdwn has no escape for it)."""
    safe_url = "".join(_LINK_URL_UNSAFE.get(char, char) for char in url)
    return f"<{slack_escape(safe_url)}|{slack_escape(text).replace('|', '¦')}>"


def slack_text(payload: dict) -> str:
    """The alert in Slack mrkdwn: a bold headline, then each section. Every
    piece of text from Inkit (ids, names, statuses, destination names, error
    text) is escaped."""
    lines = [f"*Batchwatch: {slack_escape(payload['summary'])}*"]
    paragraph = sync_paragraph(payload)
    if paragraph:
        lines.append(slack_escape(paragraph))
    for section in sections(payload):
        lines.append(f"*{slack_escape(section['title'])}*")
        for entry in section["entries"]:
            item = entry["item"]
            name = " ".join((item["name"] or "").split())
            ident = " ".join(item["id"].split())
            shown = name or ident
            label = slack_link(item["url"], shown) if item["url"] else slack_escape(shown)
            code = f" `{slack_escape(ident.replace('`', ''))}`" if name else ""
            lines.append(
                f"• {label}{code}: {slack_escape(entry['what'])} {slack_escape(entry['created'])}"
            )
            lines.append("      " + slack_escape("; ".join(entry["destinations"])))
        if section["more"]:
            more = f"…and {section['more']} more"
            if section["more_url"]:
                more += f": {slack_link(section['more_url'], 'see them all')}"
            lines.append(more)
    return "\n".join(lines)


def webhook_body(payload: dict) -> dict:
    """What the webhook receives: Slack's `text` with the structured payload
    beside it (Slack ignores fields it does not know)."""
    return {"text": slack_text(payload), **payload}


def absolute_url(path: str) -> str | None:
    """A link for people reading the alert, when PUBLIC_URL says where the
    app is served; None otherwise."""
    return f"{settings.PUBLIC_URL}{path}" if settings.PUBLIC_URL else None


def _list_path() -> str:
    try:
        return reverse("batch-list")
    except NoReverseMatch:
        return "/"


# Delivering ----------------------------------------------------------------------


def deliver_due(now: datetime | None = None) -> list[DeliveryOutcome]:
    """Send every delivery that is due, channel by channel. Never raises:
    a broken channel is logged and retried on the next round."""
    outcomes: list[DeliveryOutcome] = []
    for channel in AlertDelivery.Channel:
        try:
            outcomes += deliver_channel(channel, now)
        except Exception as error:
            log.error("delivering %s alerts failed unexpectedly: %s", channel, _trace(error))
    return outcomes


def deliver_channel(channel: str, now: datetime | None = None) -> list[DeliveryOutcome]:
    """Send one channel's due deliveries in order, oldest alert first,
    stopping at the first that fails (it is retried later) or that another
    worker holds (that worker carries on down the queue)."""
    clock = (lambda: now) if now is not None else timezone.now
    outcomes: list[DeliveryOutcome] = []
    for _ in range(MAX_PER_ROUND):
        head = AlertDelivery.objects.queue(channel).select_related("alert").first()
        if head is None or not head.is_due(clock()):
            break
        outcome = attempt_delivery(head, clock)
        if outcome is None:
            break
        outcomes.append(outcome)
        if outcome.retry_at is not None:
            break
    return outcomes


def attempt_delivery(
    delivery: AlertDelivery, clock: Callable[[], datetime]
) -> DeliveryOutcome | None:
    """Claim one delivery and make one attempt; record and log the outcome.
    None when another worker claimed it first."""
    now = clock()
    deadline = delivery.alert.created_at + GIVE_UP_AFTER
    if delivery.channel not in configured_channels():
        return _give_up(delivery, now, "the channel is no longer configured")
    if now >= deadline:
        return _give_up(
            delivery, now, f"not delivered within {format_duration(GIVE_UP_AFTER.total_seconds())}"
        )
    if not delivery.claim(now, DELIVERY_LEASE):
        return None
    try:
        detail = SENDERS[delivery.channel](delivery.alert)
    except DeliveryError as error:
        failure, permanent = scrub(str(error)), error.permanent
    except Exception as error:  # A bug or a library surprise: contained, retried.
        log.error(
            "alert #%s %s delivery raised: %s", delivery.alert_id, delivery.channel, _trace(error)
        )
        failure, permanent = f"unexpected error: {type(error).__name__}", False
    else:
        recorded = delivery.record_sent(clock())
        outcome = DeliveryOutcome(
            delivery.alert_id, delivery.channel, True, delivery.attempts, detail
        )
        _log(outcome, recorded)
        return outcome
    now = clock()
    retry_at = None if permanent else now + backoff(delivery.attempts)
    if retry_at is not None and retry_at >= deadline:
        retry_at = None
    recorded = delivery.record_failure(failure[:ERROR_MAX_CHARS], retry_at)
    outcome = DeliveryOutcome(
        delivery.alert_id, delivery.channel, False, delivery.attempts, failure, retry_at
    )
    _log(outcome, recorded)
    return outcome


def backoff(attempts: int) -> timedelta:
    """Wait before attempt `attempts + 1`: 1, 2, 4 … minutes, at most an hour."""
    return min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MAX)


def _give_up(delivery: AlertDelivery, now: datetime, reason: str) -> DeliveryOutcome | None:
    if delivery.error:
        reason += f"; last error: {delivery.error}"
    if not delivery.give_up(now, reason[:ERROR_MAX_CHARS]):
        return None
    outcome = DeliveryOutcome(delivery.alert_id, delivery.channel, False, delivery.attempts, reason)
    _log(outcome, True)
    return outcome


def _log(outcome: DeliveryOutcome, recorded: bool) -> None:
    level = logging.INFO if outcome.sent else logging.WARNING if outcome.retry_at else logging.ERROR
    line = scrub(outcome.line())
    if not recorded:
        # The lease ran out mid-attempt and another worker took over: the
        # message may go out twice, and that worker records the outcome.
        line += " (outcome not recorded: the claim expired during the attempt)"
        level = max(level, logging.WARNING)
    log.log(level, "%s", line)


def _trace(error: BaseException) -> str:
    return scrub("".join(traceback.format_exception(error)).strip())
