"""The one scrubber (batches/secrets.py), and every way text from outside
reaches a person: a fake Inkit that echoes the request, token and all, a
webhook receiver that quotes its own URL and an SMTP server that quotes the
password it was given, all real servers on local ports."""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from contextlib import contextmanager
from datetime import timedelta
from urllib.parse import quote

import pytest
from aiosmtpd.smtp import AuthResult
from django.utils import timezone
from werkzeug import Request, Response

from batches.alerts import deliver_due
from batches.inkit import InkitClient, InkitDataError, InkitRequestError
from batches.models import Alert, AlertDelivery, SyncRun
from batches.secrets import scrub
from batches.stuck import evaluate_stuck
from batches.sync import sync_all

from .html import text
from .test_alerts import Inbox, LocalSMTP, smtp_mailers

TOKEN = "inkit-7oken/Needs+Escaping&Never=Shown"
HOOK_SECRET = "hookT0kenS3cretNeverShown"
HOOK_PATH = f"/services/T0ACME/B0HOOK/{HOOK_SECRET}"
SMTP_PASSWORD = "smtp-Passw0rd-never-shown"


@contextmanager
def stdout_log():
    """What the app's stdout handler writes (its filter included), captured."""
    handler = logging.getHandlerByName("stdout")
    stream = io.StringIO()
    previous = handler.setStream(stream)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logging.getLogger().setLevel(level)
        handler.setStream(previous)


# The scrubber --------------------------------------------------------------------


@pytest.mark.parametrize(
    "quoted",
    [
        TOKEN,
        quote(TOKEN, safe=""),
        quote(TOKEN, safe="").lower(),
        quote(TOKEN),
        json.dumps(TOKEN)[1:-1],
        html.escape(TOKEN),
        base64.b64encode(TOKEN.encode()).decode(),
        TOKEN.upper(),
    ],
    ids=["plain", "percent", "percent-lower", "percent-path", "json", "html", "base64", "case"],
)
def test_scrub_hides_a_secret_in_each_form_text_quotes_it_in(quoted):
    assert (
        scrub(f"Inkit said: bad request ({quoted}).", [TOKEN])
        == "Inkit said: bad request ([secret])."
    )


def test_scrub_hides_an_echoed_token_header_and_a_url_password_whatever_it_knows():
    echoed = 'headers: {"X-Inkit-API-Token": "other-token-1", "Accept": "*/*"}; x-inkit-api-token: other-2'
    assert scrub(echoed, []) == (
        'headers: {"X-Inkit-API-Token": "[secret]", "Accept": "*/*"}; x-inkit-api-token: [secret]'
    )
    assert scrub("connect to redis://default:pa55@db.example:6379/0 failed", []) == (
        "connect to redis://default:[secret]@db.example:6379/0 failed"
    )


def test_scrub_leaves_other_text_and_ignores_values_too_short_to_be_secrets():
    assert scrub("Inkit answered 503", [TOKEN, "abc", ""]) == "Inkit answered 503"
    assert scrub("a b c abc", ["abc"]) == "a b c abc"
    assert scrub("", [TOKEN]) == ""


def test_scrub_hides_a_url_whole_before_its_parts():
    url = f"https://hooks.example.com{HOOK_PATH}?key=QueryS3cret"
    from batches.secrets import url_secrets

    secrets = url_secrets(url)
    assert scrub(f"POST {url} failed", secrets) == "POST [secret] failed"
    assert scrub(f"{HOOK_PATH} {HOOK_SECRET} QueryS3cret", secrets) == "[secret] [secret] [secret]"
    assert scrub("/services/ T0ACME", secrets) == "/services/ T0ACME"


@pytest.mark.parametrize(
    ("setting", "value", "secret"),
    [
        ("INKIT_API_TOKEN", TOKEN, TOKEN),
        ("METRICS_TOKEN", "metrics-T0ken-123", "metrics-T0ken-123"),
        (
            "SECRET_KEY",
            "k" * 20 + "-signing-key-" + "z" * 20,
            "k" * 20 + "-signing-key-" + "z" * 20,
        ),
        ("ALERT_WEBHOOK_URL", f"https://hooks.example.com{HOOK_PATH}", HOOK_SECRET),
        ("ALERT_WEBHOOK_URL", "https://user:hookPassw0rd@hooks.example.com/in", "hookPassw0rd"),
        ("DATABASE_URL", "postgres://app:dbPassw0rd@db.example:5432/bw", "dbPassw0rd"),
        ("REDIS_URL", "rediss://:redisPassw0rd@cache.example:6380", "redisPassw0rd"),
    ],
)
def test_scrub_without_secrets_knows_the_apps_own(settings, setting, value, secret):
    setattr(settings, setting, value)
    assert secret not in scrub(f"echo: {value} / {secret} / {quote(secret, safe='')}")
    assert "[secret]" in scrub(secret)


def test_scrub_without_secrets_knows_the_smtp_password_and_its_auth_plain_form(settings):
    settings.MAILERS = smtp_mailers(25, username="batchwatch", password=SMTP_PASSWORD)
    plain = base64.b64encode(f"\0batchwatch\0{SMTP_PASSWORD}".encode()).decode()
    assert scrub(f"535 bad credentials {SMTP_PASSWORD} (AUTH PLAIN {plain})") == (
        "535 bad credentials [secret] (AUTH PLAIN [secret])"
    )


def test_the_log_never_carries_a_secret_in_a_message_or_a_traceback(settings):
    settings.INKIT_API_TOKEN = TOKEN
    log = logging.getLogger("batches.test")
    with stdout_log() as output:
        log.warning("token %s in an argument", TOKEN)
        log.warning(f"token {quote(TOKEN, safe='')} in the message")
        try:
            raise RuntimeError(f"boom with {TOKEN}")
        except RuntimeError:
            log.exception("it failed")
    logged = output.getvalue()
    assert "token [secret] in an argument" in logged
    assert "token [secret] in the message" in logged
    assert "RuntimeError: boom with [secret]" in logged
    assert TOKEN not in logged and quote(TOKEN, safe="") not in logged
    assert len(logged.strip().splitlines()) == 3  # Still one line per event.


@pytest.mark.parametrize("padding", [0, 170, 190, 199])
def test_the_inkit_client_hides_its_own_token_even_where_its_message_is_cut(httpserver, padding):
    # A token the settings do not know: the client scrubs by itself, before
    # it cuts the body to 200 characters (a cut token would leak its start).
    token = "client-only-T0ken-abcdefghijklmnop"
    httpserver.expect_request("/v1/batch").respond_with_data(
        "x" * padding + f" echo: {token} " + "y" * 300, status=400
    )
    client = InkitClient(httpserver.url_for("/v1"), token, max_retries=0)
    with pytest.raises(InkitRequestError) as raised:
        client.list_batches()
    scrubbed = ("x" * padding + " echo: [secret] " + "y" * 300).strip()
    assert str(raised.value) == f"page 1: Inkit answered 400: {scrubbed[:200]}"
    assert token[:6] not in str(raised.value)


def test_the_inkit_client_hides_its_token_in_what_it_could_not_read(httpserver):
    token = "client-only-T0ken-abcdefghijklmnop"
    page = {
        "items": [
            {"id": "rb_1", "name": None, "status": "Done", "total": token, "created_at": "x"}
        ],
        "metadata": {"pagination": {"current_page": 1, "page_size": 1, "page_count": token}},
    }
    httpserver.expect_request("/v1/batch").respond_with_json(page)
    client = InkitClient(httpserver.url_for("/v1"), token, max_retries=0)
    with pytest.raises(InkitDataError) as raised:
        client.list_batches()
    assert token not in str(raised.value) and "[secret]" in str(raised.value)
    page["metadata"]["pagination"]["page_count"] = 1
    httpserver.clear()
    httpserver.expect_request("/v1/batch").respond_with_json(page)
    [reason] = client.list_batches().rejected
    assert token not in reason and "[secret]" in reason


# Every path, end to end ----------------------------------------------------------------


def echo_request(status: int, *, json_body: bool):
    """A fake Inkit that refuses the request quoting what it was sent."""

    def respond(request: Request) -> Response:
        headers = dict(request.headers)
        if json_body:
            body = {
                "detail": [
                    {
                        "loc": ["query", "page_size"],
                        "msg": f"X-Inkit-API-Token: {request.headers['X-Inkit-API-Token']} is "
                        f"not allowed to page; request was {json.dumps(headers)}",
                    }
                ]
            }
            return Response(json.dumps(body), status=status, content_type="application/json")
        return Response(
            f"Not found: GET {request.url} with token {request.headers['X-Inkit-API-Token']}",
            status=status,
        )

    return respond


def smtp_echoing_password(inbox: Inbox) -> LocalSMTP:
    """An SMTP server that takes the login and refuses the first message
    quoting the password it was given; later ones it accepts."""
    given: list[str] = []

    def authenticate(server, session, envelope, mechanism, auth_data):
        given.append(auth_data.password.decode())
        return AuthResult(success=True)

    class Refusing(Inbox):
        async def handle_DATA(self, server, session, envelope):
            if len(given) == 1:
                return f"451 4.7.1 try later, login {given[0]}"
            return await inbox.handle_DATA(server, session, envelope)

    return LocalSMTP(
        Refusing(), hostname="127.0.0.1", port=0, authenticator=authenticate, auth_require_tls=False
    )


@pytest.mark.django_db
@pytest.mark.usefixtures("alert_settings")
@pytest.mark.parametrize(("status", "json_body"), [(422, True), (404, False), (400, True)])
def test_a_token_inkit_echoes_reaches_no_record_page_log_or_alert(
    httpserver, settings, ops_client, admin_client, status, json_body
):
    inkit = httpserver  # Inkit and the webhook receiver share one local server.
    inkit.expect_request("/v1/batch").respond_with_handler(
        echo_request(status, json_body=json_body)
    )
    settings.INKIT_API_BASE_URL = inkit.url_for("/v1")
    settings.INKIT_API_TOKEN = TOKEN
    settings.INKIT_MAX_RETRIES = 0
    settings.ALERT_WEBHOOK_URL = inkit.url_for(HOOK_PATH)
    settings.ALERT_EMAILS = ["oncall@example.com"]
    posts: list[bytes] = []

    def receive(request: Request) -> Response:
        posts.append(request.get_data())
        if len(posts) == 1:  # The first attempt is refused, quoting the URL.
            return Response(f"no such hook: {request.url}", status=500)
        return Response("ok")

    inkit.expect_request(HOOK_PATH, method="POST").respond_with_handler(receive)
    inbox = Inbox()
    smtp = smtp_echoing_password(inbox)
    smtp.start()
    try:
        settings.MAILERS = smtp_mailers(smtp.port, username="batchwatch", password=SMTP_PASSWORD)
        with stdout_log() as output:
            run = sync_all(trigger=SyncRun.Trigger.COMMAND)
            # No sync succeeds for longer than SYNC_STALE_AFTER_MINUTES: the
            # stale alert goes out, refused once by both receivers, then sent.
            later = timezone.now() + timedelta(minutes=16)
            evaluate_stuck(now=later)
            refused = {d.channel: d.error for d in AlertDelivery.objects.all()}
            deliver_due(later + timedelta(minutes=2))
    finally:
        smtp.stop()

    run.refresh_from_db()
    assert run.outcome == SyncRun.Outcome.FAILED
    assert f"({status})" in run.error or f" {status}" in run.error
    assert "[secret]" in run.error
    assert set(refused) == {"email", "webhook"}
    assert (
        refused["webhook"].startswith("HTTP 500: no such hook:")
        and "[secret]" in refused["webhook"]
    )
    assert refused["email"].startswith("SMTP 451") and "[secret]" in refused["email"]
    assert AlertDelivery.objects.filter(status=AlertDelivery.Status.SENT).count() == 2
    [email] = inbox.messages
    [alert] = Alert.objects.all()
    webhook_text = json.loads(posts[-1])["text"]
    assert "Last error:" in webhook_text and "[secret]" in webhook_text

    seen = {
        "SyncRun.error and note": run.error + run.note,
        "the log": output.getvalue(),
        "/": text(ops_client.get("/")),
        "/sync-runs/": text(ops_client.get("/sync-runs/")),
        "the sync status fragment": text(ops_client.get("/sync/status/")),
        "the admin's list": text(admin_client.get("/admin/batches/syncrun/")),
        "the admin's page": text(admin_client.get(f"/admin/batches/syncrun/{run.pk}/change/")),
        "the alert": json.dumps(alert.payload) + alert.subject,
        "the webhook posts": b"".join(posts).decode(),
        "the email": email.as_string(),
        "the delivery errors": json.dumps(refused),
    }
    for secret in (TOKEN, quote(TOKEN, safe=""), HOOK_SECRET, SMTP_PASSWORD):
        for where, shown in seen.items():
            assert secret not in shown, f"{secret} in {where}"
    # The error is shown, scrubbed, where the issue found the token.
    for where in ("/", "/sync-runs/", "the sync status fragment", "the admin's list", "the email"):
        assert "[secret]" in seen[where].replace("=5Bsecret=5D", "[secret]"), where


@pytest.mark.django_db
def test_the_migration_scrubs_what_was_stored_before(settings):
    # Rows written before the scrubber existed (bypassing save(), as old
    # code did not scrub) come out clean, the alert's payload keeping its shape.
    import importlib

    from django.apps import apps

    migration = importlib.import_module("batches.migrations.0030_scrub_stored_secrets")
    settings.INKIT_API_TOKEN = TOKEN
    run = SyncRun.objects.create(outcome=SyncRun.Outcome.FAILED)
    SyncRun.objects.filter(pk=run.pk).update(error=f"422: token {TOKEN}", note=f"n {TOKEN}")
    alert = Alert.objects.create(
        created_at=timezone.now(),
        subject=f"Syncing stale {TOKEN}",
        payload={"sync": {"last_error": f"422: {json.dumps(TOKEN)}"}, "batches": [TOKEN, 1]},
    )
    delivery = AlertDelivery.objects.create(alert=alert, channel="email")
    AlertDelivery.objects.filter(pk=delivery.pk).update(error=f"SMTP {TOKEN}")
    untouched = SyncRun.objects.create(outcome=SyncRun.Outcome.SUCCEEDED, note="all fine")

    migration.scrub_stored(apps, None)

    run.refresh_from_db()
    alert.refresh_from_db()
    delivery.refresh_from_db()
    assert (run.error, run.note) == ("422: token [secret]", "n [secret]")
    assert alert.subject == "Syncing stale [secret]"
    assert alert.payload == {"sync": {"last_error": '422: "[secret]"'}, "batches": ["[secret]", 1]}
    assert delivery.error == "SMTP [secret]"
    untouched.refresh_from_db()
    assert untouched.note == "all fine"
