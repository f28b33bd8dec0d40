"""Alerts through real transports: a local SMTP server (aiosmtpd) and a local
HTTP receiver (pytest-httpserver), both on free ports. The clock is fixed
(now= is passed); nothing sleeps except a receiver told to be slow."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import socket
import threading
import time
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from django.db import connection
from django.template.loader import render_to_string
from werkzeug import Request, Response

from batches import alerts, stuck
from batches.alerts import DELIVERY_LEASE, backoff, deliver_due
from batches.models import Alert, AlertDelivery, Batch, BatchEvent, SyncRun
from batches.secrets import scrub
from batches.stuck import evaluate_stuck
from batches.tasks import check_stuck
from batches.timefmt import format_duration
from dashboard.templatetags.batchwatch import short_duration

from .test_stuck import MIN, T0, evaluate_after, make_batch, progressed, synced

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("alert_settings")]

SECRET_TOKEN = "xoxb5ecretT0kenNeverLogged"
HOOK_PATH = f"/services/T0ACME/B0HOOK/{SECRET_TOKEN}"
SMTP_PASSWORD = "hunter2-smtp-password"
SENT, PENDING, FAILED = (
    AlertDelivery.Status.SENT,
    AlertDelivery.Status.PENDING,
    AlertDelivery.Status.FAILED,
)


class Inbox:
    """An aiosmtpd handler keeping what it receives."""

    def __init__(self) -> None:
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(e.original_content, policy=email.policy.default)
            for e in self.envelopes
        ]


class LocalSMTP(Controller):
    """aiosmtpd's Controller on port 0: the port the OS chose is read back
    before the controller's own readiness check connects to it."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def smtp_mailers(port: int, **options) -> dict:
    # Test setup swaps MAILERS for locmem; a test that wants real SMTP says so.
    return {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": port, "timeout": 5, **options},
        }
    }


@pytest.fixture
def smtp(settings):
    inbox = Inbox()
    server = LocalSMTP(inbox, hostname="127.0.0.1", port=0)
    server.start()
    settings.MAILERS = smtp_mailers(server.port)
    settings.ALERT_EMAILS = ["oncall@example.com", "ops@example.com"]
    yield inbox
    server.stop()


@pytest.fixture
def webhook(httpserver, settings):
    settings.ALERT_WEBHOOK_URL = httpserver.url_for(HOOK_PATH)
    return httpserver


def posted(httpserver) -> list[dict]:
    return [json.loads(request.get_data()) for request, _ in httpserver.log]


def delivery(channel: str, alert: Alert | None = None) -> AlertDelivery:
    alert = alert or Alert.objects.order_by("pk").last()
    return AlertDelivery.objects.get(alert=alert, channel=channel)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What on-call receives -------------------------------------------------------------


@pytest.mark.filterwarnings("error::django.utils.deprecation.RemovedInDjango2028Warning")
def test_it_emails_one_digest_through_smtp(smtp):
    make_batch(
        "rb_march",
        name="Invoices March",
        destinations={"inkit_storage": (100, 38, 2, 60), "sepire": (100, 0, 0, 100)},
    )
    make_batch("rb_empty", name=None, destinations={}, seen_at=T0 - 30 * MIN)

    evaluation = evaluate_after(T0 + 65 * MIN)

    [envelope] = smtp.envelopes
    assert sorted(envelope.rcpt_tos) == ["oncall@example.com", "ops@example.com"]
    [message] = smtp.messages
    assert message["Subject"] == "[Batchwatch] 2 batches stuck"
    assert message["From"] == "batchwatch@example.com"
    assert message["X-Batchwatch-Alert"] == str(evaluation.alert.pk)
    body = message.get_content()
    # Longest without progress first; everything needed to act on it.
    assert body.index("rb_empty") < body.index("Invoices March (rb_march)")
    assert "No progress for 1 h 35 min (since 2026-01-05 08:30 UTC)." in body
    assert "No progress for 1 h 5 min (since 2026-01-05 09:00 UTC)." in body
    assert "- inkit_storage: 38 completed, 2 failed, 60 in progress of 100" in body
    assert "- sepire: 0 completed, 0 failed, 100 in progress of 100" in body
    assert "- No destinations reported yet." in body
    assert "Created 2026-01-05 08:55 UTC (1 h 10 min ago), 200 documents." in body
    assert f"Batchwatch alert #{evaluation.alert.pk}" in body
    email_delivery = delivery("email")
    assert (email_delivery.status, email_delivery.attempts) == (SENT, 1)
    assert email_delivery.sent_at == evaluation.now and email_delivery.error == ""


def test_it_posts_json_that_slack_accepts_with_the_fields_beside_it(webhook, settings):
    settings.PUBLIC_URL = "https://batchwatch.example.com"
    webhook.expect_request(HOOK_PATH, method="POST").respond_with_data("ok")
    make_batch("rb_q", name="<b>Q&A</b>", destinations={"inkit_storage": (10, 2, 1, 7)})

    evaluation = evaluate_after(T0 + 65 * MIN)

    [(request, _)] = webhook.log
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("Batchwatch/")
    body = request.get_json()
    # Slack's mrkdwn: &, < and > escaped; links as <url|label>.
    assert body["text"].startswith(
        "*Batchwatch: Stuck: &lt;b&gt;Q&amp;A&lt;/b&gt; (rb_q), no progress for 1 h 5 min*"
    )
    assert (
        "• <https://batchwatch.example.com/batches/rb_q/|&lt;b&gt;Q&amp;A&lt;/b&gt;> `rb_q`"
        in body["text"]
    )
    assert "inkit_storage: 2 completed, 1 failed, 7 in progress of 10" in body["text"]
    assert body["source"] == "batchwatch" and body["alert_id"] == evaluation.alert.pk
    assert body["events"] == ["stuck"]
    assert body["counts"] == {"stuck": 1, "overdue": 0, "finished": 0, "recovered": 0}
    assert body["sync_run_id"] == evaluation.sync.basis.pk
    assert body["stuck_url"] == "https://batchwatch.example.com/?stuck=1"
    [item] = body["batches"]
    assert item == {
        "event": "stuck",
        "id": "rb_q",
        "name": "<b>Q&A</b>",
        "status": "In Progress",
        "total": 10,
        "created_at": (T0 - 5 * MIN).isoformat(),
        "last_progress_at": T0.isoformat(),
        "stuck_since": T0.isoformat(),
        "stuck_for_seconds": 65 * 60 + 5,
        "stuck_for": "1 h 5 min",
        "reason": None,
        "destinations": [
            {
                "name": "inkit_storage",
                "count": 10,
                "completed": 2,
                "failed": 1,
                "in_progress": 7,
                "status": None,
            }
        ],
        "url": "https://batchwatch.example.com/batches/rb_q/",
    }


def test_slack_text_escapes_everything_from_inkit_and_builds_links_that_hold(webhook, settings):
    # An id, name, destination and status that would open links, mentions
    # and formatting in mrkdwn if they went in raw.
    settings.PUBLIC_URL = "https://ops.example.com"
    webhook.expect_request(HOOK_PATH, method="POST").respond_with_data("ok")
    make_batch(
        "rb_<x>&y|z", name="<!channel> A&B | <@U1>", destinations={"<dest>&co": (10, 2, 1, 7)}
    )
    make_batch("a&b>c", name=None, destinations={})

    evaluate_after(T0 + 65 * MIN)
    Batch.objects.filter(pk="rb_<x>&y|z").update(status="<b>Done</b>")
    evaluate_after(T0 + 66 * MIN)

    stuck_text, finished_text = (body["text"] for body in posted(webhook))
    lines = stuck_text.splitlines()
    assert lines[0] == "*Batchwatch: 2 batches stuck*"
    # The URL's own & as &amp;, its | and > percent-encoded (the path does it),
    # the text escaped with | shown as ¦; the id in code, escaped too.
    assert (
        "• <https://ops.example.com/batches/rb_%3Cx%3E&amp;y%7Cz/|&lt;!channel&gt; A&amp;B ¦ "
        "&lt;@U1&gt;> `rb_&lt;x&gt;&amp;y|z`: No progress for"
    ) in stuck_text
    assert (
        "• <https://ops.example.com/batches/a&amp;b%3Ec/|a&amp;b&gt;c>: No progress" in stuck_text
    )
    assert "      &lt;dest&gt;&amp;co: 2 completed, 1 failed, 7 in progress of 10" in lines
    assert "Finished (now &lt;b&gt;Done&lt;/b&gt;) after" in finished_text
    for text in (stuck_text, finished_text):
        # Every < opens one of our links, every > closes one.
        opened = [part.split("|")[0] for part in text.split("<")[1:]]
        assert all(url.startswith("https://ops.example.com/") for url in opened), opened
        assert "<!" not in text and "<@" not in text


def test_slack_links_hold_whatever_the_url_holds():
    assert alerts.slack_link("https://x.example/a?b=1&c=2|3>4 5", "T|<>&") == (
        "<https://x.example/a?b=1&amp;c=2%7C3%3E4%205|T¦&lt;&gt;&amp;>"
    )


def test_slack_text_escapes_the_error_in_a_stale_alert(webhook):
    webhook.expect_request(HOOK_PATH, method="POST").respond_with_data("ok")
    failed = synced(T0, SyncRun.Outcome.FAILED)
    SyncRun.objects.filter(pk=failed.pk).update(error="Inkit answered 500: <html>&nbsp;<@U1>")
    evaluate_stuck(now=T0 + 16 * MIN)
    [body] = posted(webhook)
    assert "Last error: Inkit answered 500: &lt;html&gt;&amp;nbsp;&lt;@U1&gt;" in body["text"]


def test_without_a_public_url_alerts_carry_no_links(webhook):
    webhook.expect_request(HOOK_PATH).respond_with_data("ok")
    make_batch("rb_a")
    evaluate_after(T0 + 61 * MIN)
    [body] = posted(webhook)
    assert body["batches"][0]["url"] is None and body["stuck_url"] is None
    assert "<http" not in body["text"]


def test_with_no_channel_the_alert_is_only_recorded(caplog):
    make_batch("rb_a")
    with caplog.at_level(logging.INFO, logger="batches.alerts"):
        evaluation = evaluate_after(T0 + 61 * MIN)
    assert evaluation.alert is not None and evaluation.deliveries == []
    assert not AlertDelivery.objects.exists()
    assert "channels: none configured" in caplog.text


def test_a_batch_that_stays_stuck_is_not_alerted_again_and_its_recovery_once(smtp, webhook):
    webhook.expect_request(HOOK_PATH).respond_with_data("ok")
    make_batch("rb_a")
    evaluate_after(T0 + 61 * MIN)
    for minutes in range(62, 120, 7):
        evaluate_after(T0 + minutes * MIN)
    assert len(smtp.messages) == 1 and len(webhook.log) == 1

    progressed("rb_a", T0 + 130 * MIN)
    evaluate_after(T0 + 131 * MIN)
    evaluate_after(T0 + 132 * MIN)

    assert [m["Subject"] for m in smtp.messages] == [
        "[Batchwatch] Stuck: Invoices (rb_a), no progress for 1 h 1 min",
        "[Batchwatch] Recovered: Invoices (rb_a)",
    ]
    recovered = posted(webhook)[1]
    assert recovered["events"] == ["recovered"]
    assert recovered["batches"][0]["stuck_for"] == "2 h 10 min"
    assert "Progressing again after 2 h 10 min without progress." in recovered["text"]


def test_many_transitions_make_one_capped_digest(smtp, webhook):
    webhook.expect_request(HOOK_PATH).respond_with_data("ok")
    for n in range(2):
        make_batch(f"rb_was_{n}", seen_at=T0 - 60 * MIN)
    evaluate_after(T0)
    for n in range(2):
        progressed(f"rb_was_{n}", T0 + 30 * MIN)
    for n in range(120):
        make_batch(f"rb_{n:03}", seen_at=T0 - n * timedelta(seconds=10), destinations={})

    evaluate_after(T0 + 61 * MIN)

    assert len(smtp.messages) == 2 and len(webhook.log) == 2
    digest = posted(webhook)[1]
    assert digest["counts"] == {"stuck": 120, "overdue": 0, "finished": 0, "recovered": 2}
    assert len(digest["batches"]) == alerts.MAX_LISTED == 50
    assert digest["not_listed"] == {"stuck": 70, "overdue": 0, "finished": 0, "recovered": 2}
    assert digest["batches"][0]["id"] == "rb_119"  # Longest without progress first.
    assert "…and 70 more" in digest["text"] and "…and 2 more" in digest["text"]
    assert len(digest["text"]) < 40_000  # Slack truncates longer messages.
    message = smtp.messages[1]
    assert message["Subject"] == "[Batchwatch] 120 batches stuck, 2 recovered"
    body = message.get_content()
    assert "Became stuck: In Progress with no progress for 1 h or more (120)" in body
    assert "...and 70 more" in body and "Progress resumed (2)" in body


# Failure, retry and order ------------------------------------------------------------


def test_a_failing_receiver_is_retried_later_without_resending_email(smtp, webhook):
    webhook.expect_oneshot_request(HOOK_PATH).respond_with_data("upstream down", status=500)
    webhook.expect_request(HOOK_PATH).respond_with_data("ok")
    make_batch("rb_a")

    evaluation = evaluate_after(T0 + 61 * MIN)
    now = evaluation.now

    assert delivery("email").status == SENT
    hook = delivery("webhook")
    assert (hook.status, hook.attempts, hook.error) == (PENDING, 1, "HTTP 500: upstream down")
    assert hook.next_attempt_at == now + timedelta(minutes=1)
    assert [o.line() for o in evaluation.deliveries if not o.sent] == [
        f"alert #{evaluation.alert.pk} webhook: failed (attempt 1), next attempt at "
        "2026-01-05 10:02:05 UTC: HTTP 500: upstream down"
    ]

    assert deliver_due(now + timedelta(seconds=30)) == []  # Not due yet.
    [outcome] = deliver_due(now + timedelta(seconds=61))

    assert outcome.sent and outcome.channel == "webhook" and outcome.attempts == 2
    hook.refresh_from_db()
    assert (hook.status, hook.attempts, hook.error, hook.next_attempt_at) == (SENT, 2, "", None)
    assert len(webhook.log) == 2 and len(smtp.messages) == 1  # Email not sent again.
    assert deliver_due(now + timedelta(hours=1)) == []


def test_retries_back_off_exponentially_up_to_an_hour(webhook):
    webhook.expect_request(HOOK_PATH).respond_with_data("busy", status=503)
    make_batch("rb_a")
    now = evaluate_after(T0 + 61 * MIN).now
    waits = []
    for _ in range(8):
        hook = delivery("webhook")
        waits.append(hook.next_attempt_at - now)
        now = hook.next_attempt_at
        deliver_due(now)
    assert [w // MIN for w in waits] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff(1) == timedelta(minutes=1) and backoff(20) == timedelta(hours=1)


def test_a_receiver_that_times_out_is_retried(webhook, settings):
    settings.ALERT_WEBHOOK_TIMEOUT_SECONDS = 0.5
    release = threading.Event()
    answered = threading.Event()

    def not_until_released(request: Request) -> Response:
        # Far past the timeout: answers only once the evaluation is over, so
        # the evaluation cannot have ended by the receiver answering, however
        # slow the machine (no wall-clock bound to miss).
        release.wait(60)
        answered.set()
        return Response("too late")

    webhook.expect_request(HOOK_PATH).respond_with_handler(not_until_released)
    make_batch("rb_a")

    try:
        evaluation = evaluate_after(T0 + 61 * MIN)
        assert not answered.is_set()  # The timeout ended the attempt, not the receiver.
    finally:
        release.set()
    hook = delivery("webhook")
    assert (hook.status, hook.attempts, hook.error) == (PENDING, 1, "timed out after 0.5 s")
    assert hook.next_attempt_at == evaluation.now + timedelta(minutes=1)
    # The receiver finishes its one request before the next test uses it.
    wait_until(lambda: len(webhook.log) == 1)


def wait_until(condition, timeout: float = 30.0) -> None:
    """Poll until condition() holds; fail after a generous timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {timeout:g} s")
        time.sleep(0.01)


def test_an_unreachable_receiver_is_retried(settings):
    settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{free_port()}{HOOK_PATH}"
    make_batch("rb_a")
    evaluate_after(T0 + 61 * MIN)
    hook = delivery("webhook")
    assert hook.status == PENDING
    assert hook.error == "could not connect: Connection refused (ConnectionRefusedError)"


def test_an_unreachable_smtp_server_is_retried(settings):
    settings.ALERT_EMAILS = ["oncall@example.com"]
    settings.MAILERS = smtp_mailers(free_port())
    make_batch("rb_a")
    evaluate_after(T0 + 61 * MIN)
    mail = delivery("email")
    assert mail.status == PENDING
    assert mail.error == "SMTP: Connection refused (ConnectionRefusedError)"


def test_a_message_the_receiver_rejects_is_not_retried(webhook):
    webhook.expect_oneshot_request(HOOK_PATH).respond_with_data("invalid_payload", status=400)
    webhook.expect_request(HOOK_PATH).respond_with_data("ok")
    make_batch("rb_a")
    evaluation = evaluate_after(T0 + 61 * MIN)
    hook = delivery("webhook")
    assert (hook.status, hook.next_attempt_at, hook.error) == (
        FAILED,
        None,
        "HTTP 400: invalid_payload",
    )
    assert (
        evaluation.deliveries[0]
        .line()
        .endswith("gave up after 1 attempt(s): HTTP 400: invalid_payload")
    )

    # It does not hold up the channel: the next alert goes out.
    progressed("rb_a", T0 + 62 * MIN)
    evaluate_after(T0 + 63 * MIN)
    assert delivery("webhook").status == SENT


def test_a_channel_delivers_in_order_and_a_failure_holds_later_alerts(webhook):
    webhook.expect_oneshot_request(HOOK_PATH).respond_with_data("down", status=502)
    webhook.expect_request(HOOK_PATH).respond_with_data("ok")
    make_batch("rb_a")
    stuck_alert = evaluate_after(T0 + 61 * MIN).alert
    progressed("rb_a", T0 + 61 * MIN + timedelta(seconds=10))

    recovered = evaluate_after(T0 + 61 * MIN + timedelta(seconds=20))

    # The "recovered" must not arrive before the "stuck" it answers.
    assert recovered.deliveries == [] and len(webhook.log) == 1
    assert delivery("webhook", recovered.alert).status == PENDING
    outcomes = deliver_due(T0 + 63 * MIN)
    assert [(o.alert_id, o.sent) for o in outcomes] == [
        (stuck_alert.pk, True),
        (recovered.alert.pk, True),
    ]
    assert [body["events"] for body in posted(webhook)[1:]] == [["stuck"], ["recovered"]]


def test_a_delivery_is_given_up_a_day_after_its_alert(webhook, caplog):
    webhook.expect_request(HOOK_PATH).respond_with_data("busy", status=503)
    make_batch("rb_a")
    evaluation = evaluate_after(T0 + 61 * MIN)
    with caplog.at_level(logging.INFO, logger="batches.alerts"):
        [outcome] = deliver_due(evaluation.now + timedelta(days=1))
    hook = delivery("webhook")
    assert (hook.status, hook.next_attempt_at) == (FAILED, None)
    assert hook.error == "not delivered within 1 d; last error: HTTP 503: busy"
    assert not outcome.sent and outcome.retry_at is None
    assert "ERROR" in caplog.text and "gave up after 1 attempt(s)" in caplog.text


def test_a_channel_removed_from_settings_gives_up_its_deliveries(webhook, settings):
    webhook.expect_request(HOOK_PATH).respond_with_data("busy", status=503)
    make_batch("rb_a")
    now = evaluate_after(T0 + 61 * MIN).now
    settings.ALERT_WEBHOOK_URL = ""
    deliver_due(now + timedelta(minutes=2))
    hook = delivery("webhook")
    assert hook.status == FAILED
    assert hook.error == "the channel is no longer configured; last error: HTTP 503: busy"


def test_an_attempt_whose_worker_died_is_retried_after_its_lease(webhook):
    webhook.expect_request(HOOK_PATH).respond_with_data("ok")
    make_batch("rb_a")
    now = evaluate_after(T0 + 61 * MIN, deliver=False).now
    # A worker claims the delivery and dies before recording anything.
    assert delivery("webhook").claim(now, DELIVERY_LEASE)

    assert deliver_due(now + timedelta(minutes=1)) == []
    [outcome] = deliver_due(now + DELIVERY_LEASE)
    assert outcome.sent and outcome.attempts == 2 and len(webhook.log) == 1


def test_a_sender_that_raises_is_contained_and_retried(webhook, monkeypatch, caplog):
    def broken(alert):
        raise ValueError(f"cannot post to {alert.pk}")

    monkeypatch.setitem(alerts.SENDERS, AlertDelivery.Channel.WEBHOOK, broken)
    make_batch("rb_a")
    with caplog.at_level(logging.ERROR, logger="batches.alerts"):
        run_outcome = evaluate_after(T0 + 61 * MIN)
    assert run_outcome.alert is not None
    hook = delivery("webhook")
    assert (hook.status, hook.error) == (PENDING, "unexpected error: ValueError")
    assert "Traceback" in caplog.text and "cannot post to" in caplog.text


# Secrets -------------------------------------------------------------------------------


def test_secrets_never_reach_the_logs_or_stored_errors(webhook, settings, caplog):
    def reject(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=False, handled=False)

    inbox = Inbox()
    server = LocalSMTP(
        inbox, hostname="127.0.0.1", port=0, authenticator=reject, auth_require_tls=False
    )
    server.start()
    try:
        settings.MAILERS = smtp_mailers(server.port, username="batchwatch", password=SMTP_PASSWORD)
        settings.ALERT_EMAILS = ["oncall@example.com"]

        def echo_url(request: Request) -> Response:
            # A receiver that quotes the URL it was called on.
            return Response(f"no such hook: {request.url}", status=500)

        webhook.expect_request(HOOK_PATH).respond_with_handler(echo_url)
        make_batch("rb_a")
        with caplog.at_level(logging.DEBUG):
            now = evaluate_after(T0 + 61 * MIN).now
            # Then unreachable, and a sender raising with the URL in its message.
            settings.ALERT_WEBHOOK_URL = (
                f"http://127.0.0.1:{free_port()}{HOOK_PATH}?token={SECRET_TOKEN}"
            )
            deliver_due(now + timedelta(minutes=1))
            settings.ALERT_WEBHOOK_URL = webhook.url_for(HOOK_PATH)
    finally:
        server.stop()

    # Everything logged in this process except by the two fake servers (the
    # remote side, which of course sees its own URL and the password).
    logged = "\n".join(
        caplog.handler.format(record)
        for record in caplog.records
        if not record.name.startswith(("werkzeug", "mail.log"))
    )
    assert "webhook: failed (attempt 1)" in logged
    stored = [d.error for d in AlertDelivery.objects.all()] + [
        json.dumps(a.payload) for a in Alert.objects.all()
    ]
    for text in [logged, *stored]:
        assert SECRET_TOKEN not in text and SMTP_PASSWORD not in text and HOOK_PATH not in text
    errors = {d.channel: d.error for d in AlertDelivery.objects.all()}
    assert errors["email"].startswith("SMTP 535")
    assert errors["webhook"] == "could not connect: Connection refused (ConnectionRefusedError)"
    # The first webhook failure was stored scrubbed, and logged so.
    assert "HTTP 500: no such hook: [secret]" in logged


def test_scrub_hides_the_url_its_path_query_and_token_and_the_password(settings):
    settings.ALERT_WEBHOOK_URL = f"https://hooks.example.com{HOOK_PATH}"
    settings.MAILERS = smtp_mailers(25, password=SMTP_PASSWORD)
    text = scrub(
        f"POST https://hooks.example.com{HOOK_PATH} failed; "
        f"{HOOK_PATH}; {SECRET_TOKEN}; {SMTP_PASSWORD}"
    )
    assert text == "POST [secret] failed; [secret]; [secret]; [secret]"


# Concurrency -------------------------------------------------------------------------


def run_together(target, count: int = 2) -> list:
    """Run target in `count` threads, each with its own database connection."""
    results, errors = [], []

    def work():
        try:
            results.append(target())
        except BaseException as error:  # Reported below, in the test's thread.
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


@pytest.mark.django_db(transaction=True)
def test_two_evaluators_at_once_alert_each_transition_once(smtp, webhook, monkeypatch):
    webhook.expect_request(HOOK_PATH).respond_with_data("ok")
    ids = [f"rb_{n:02}" for n in range(30)]
    for batch_id in ids:
        make_batch(batch_id)
    run = synced(T0 + 61 * MIN)
    barrier = threading.Barrier(2, timeout=20)
    claim = stuck._claim

    def racing_claim(candidates, batch_ids, changes, make_event):
        if batch_ids:  # Both have read the same candidates; now both claim.
            barrier.wait()
        return claim(candidates, batch_ids, changes, make_event)

    monkeypatch.setattr(stuck, "_claim", racing_claim)

    results = run_together(lambda: evaluate_stuck(now=run.finished_at, sync_run=run))

    assert sorted(sum((r.stuck for r in results), [])) == ids
    assert BatchEvent.objects.filter(kind=BatchEvent.Kind.STUCK).count() == 30
    assert not BatchEvent.objects.filter(kind=BatchEvent.Kind.STUCK, alert__isnull=True).exists()
    alert_count = Alert.objects.count()
    assert 1 <= alert_count <= 2
    assert list(AlertDelivery.objects.order_by().values_list("status", "attempts").distinct()) == [
        (SENT, 1)
    ]
    assert AlertDelivery.objects.count() == 2 * alert_count
    alerted = sorted(item["id"] for body in posted(webhook) for item in body["batches"])
    assert alerted == ids and len(webhook.log) == alert_count
    assert len(smtp.messages) == alert_count


@pytest.mark.django_db(transaction=True)
def test_two_deliverers_at_once_send_each_delivery_once(smtp, webhook, monkeypatch):
    def slow_ok(request: Request) -> Response:
        time.sleep(0.3)
        return Response("ok")

    webhook.expect_request(HOOK_PATH).respond_with_handler(slow_ok)
    make_batch("rb_a")
    now = evaluate_after(T0 + 61 * MIN, deliver=False).now
    barrier = threading.Barrier(2, timeout=20)
    claim = AlertDelivery.claim

    def racing_claim(self, now, lease):
        barrier.wait()  # Both hold the same due delivery; now both claim it.
        return claim(self, now, lease)

    monkeypatch.setattr(AlertDelivery, "claim", racing_claim)

    results = run_together(lambda: deliver_due(now))

    assert len(webhook.log) == 1 and len(smtp.messages) == 1
    assert sorted(len(outcomes) for outcomes in results) == [0, 2] or sorted(
        len(outcomes) for outcomes in results
    ) == [1, 1]
    assert list(AlertDelivery.objects.order_by().values_list("status", "attempts").distinct()) == [
        (SENT, 1)
    ]


# The sync runs page, the task, the schedule ------------------------------------------------


def deliveries_html(run: SyncRun) -> str:
    """The sync runs page's fragment of a run's alert deliveries."""
    deliveries = SyncRun.objects.with_alert_deliveries().get(pk=run.pk).alert_deliveries.all()
    return render_to_string("dashboard/_alert_deliveries.html", {"deliveries": deliveries})


def test_a_page_of_sync_runs_gets_its_deliveries_in_one_query(
    webhook, smtp, django_assert_num_queries
):
    webhook.expect_oneshot_request(HOOK_PATH).respond_with_data(
        "<html>bad gateway</html>", status=502
    )
    webhook.expect_request(HOOK_PATH).respond_with_data("ok")
    make_batch("rb_a")
    first = evaluate_after(T0 + 61 * MIN).sync.basis
    progressed("rb_a", T0 + 70 * MIN)
    second = evaluate_after(T0 + 71 * MIN).sync.basis
    synced(T0 + 72 * MIN)  # A run after which nothing was alerted.

    with django_assert_num_queries(2):
        runs = list(SyncRun.objects.with_alert_deliveries()[:10])
        shown = {
            run.pk: [(d.alert.subject, d.channel, d.status) for d in run.alert_deliveries.all()]
            for run in runs
        }

    assert shown[first.pk] == [
        ("Stuck: Invoices (rb_a), no progress for 1 h 1 min", "email", SENT),
        ("Stuck: Invoices (rb_a), no progress for 1 h 1 min", "webhook", SENT),
    ]
    assert [channel for _, channel, _ in shown[second.pk]] == ["email", "webhook"]
    assert len(shown) == 3 and list(shown.values())[0] == []

    html = deliveries_html(first)
    assert "Alert #" in html and "Webhook" in html and "Email" in html
    assert "Sent" in html and "2 attempts" in html and "1 attempt<" in html
    # Email went at once; the webhook after its retry, at the next evaluation.
    assert (
        'sent <time datetime="2026-01-05T10:01:05+00:00" data-local>2026-01-05 10:01:05 UTC</time>'
        in html
    )
    assert "2026-01-05 10:11:05 UTC" in html
    assert render_to_string("dashboard/_alert_deliveries.html", {"deliveries": []}).strip() == ""


def test_the_fragment_shows_a_pending_retry_and_escapes_its_error(webhook):
    webhook.expect_request(HOOK_PATH).respond_with_data("<html>bad gateway</html>", status=502)
    make_batch("rb_a")
    run = evaluate_after(T0 + 61 * MIN).sync.basis
    html = deliveries_html(run)
    assert "Pending" in html and "next attempt" in html and "2026-01-05 10:02:05 UTC" in html
    assert "HTTP 502: &lt;html&gt;bad gateway&lt;/html&gt;" in html


def test_the_periodic_task_evaluates_and_delivers(webhook):
    from django.utils import timezone

    webhook.expect_request(HOOK_PATH).respond_with_data("ok")
    now = timezone.now()
    make_batch("rb_a", seen_at=now - timedelta(hours=2))
    synced(now - timedelta(minutes=1))

    alert_id = check_stuck()

    assert Alert.objects.get().pk == alert_id
    assert delivery("webhook").status == SENT
    assert check_stuck() is None


def test_beat_runs_the_periodic_task_every_minute(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["check-stuck"]
    assert entry["task"] == "batches.tasks.check_stuck" and entry["schedule"] == 60.0


@pytest.mark.parametrize(
    "seconds, words",
    [
        (-5, "0 s"),
        (0, "0 s"),
        (59, "59 s"),
        (60, "1 min"),
        (3599, "59 min"),
        (3600, "1 h"),
        (3 * 3600 + 12 * 60 + 30, "3 h 12 min"),
        (86400, "1 d"),
        (90000, "1 d 1 h"),
        (90000 + 59 * 60, "1 d 1 h"),
    ],
)
def test_durations_read_as_the_dashboard_says_them(seconds, words):
    # One wording for alerts and pages: the template filter is the same function.
    assert format_duration(seconds) == words
    assert format_duration(timedelta(seconds=seconds)) == words
    assert short_duration(timedelta(seconds=seconds)) == words


def test_a_name_with_line_breaks_cannot_break_the_subject(smtp):
    make_batch("rb_a", name="Line one\r\nBcc: attacker@example.com")
    evaluate_after(T0 + 61 * MIN)
    [message] = smtp.messages
    assert message["Subject"] == (
        "[Batchwatch] Stuck: Line one Bcc: attacker@example.com (rb_a), no progress for 1 h 1 min"
    )
    assert message["Bcc"] is None
    assert Batch.objects.get().stuck_since is not None
