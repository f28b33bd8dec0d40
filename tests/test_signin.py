"""Sign-in throttling (django-axes, dashboard/signin.py) and the session's
fixed end. No test sleeps: the cool-off passing is the failures' recorded
time moved back, and the session's end is the clock moved forward."""

from __future__ import annotations

import io
import logging
from contextlib import contextmanager
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from .html import text
from .processes import base_env, run_to_completion

pytestmark = pytest.mark.django_db

LOCKED = "Too many failed sign-ins for this username from your address"


@pytest.fixture(autouse=True)
def limits(settings):
    settings.LOGIN_FAILURE_LIMIT = settings.AXES_FAILURE_LIMIT = 5
    settings.LOGIN_COOLOFF_MINUTES = 15
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    settings.TRUSTED_PROXY_COUNT = 0


def sign_in(client: Client, password: str, *, username="ops", path="/login/", **extra):
    return client.post(path, {"username": username, "password": password}, **extra)


def fail(client: Client, times: int, **kwargs) -> list:
    return [sign_in(client, f"wrong-{n}", **kwargs) for n in range(times)]


def signed_in(client: Client) -> bool:
    return client.get("/").status_code == 200


@contextmanager
def stdout_log():
    handler = logging.getHandlerByName("stdout")
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        yield stream
    finally:
        handler.setStream(previous)


def test_failures_up_to_the_limit_lock_the_pair_and_the_page_says_so(client, ops_user):
    responses = fail(client, 5)
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 429]
    assert "Please enter a correct username and password" in text(responses[0])
    page = text(responses[-1])
    assert f"{LOCKED}: it is locked for 15 more minutes." in page
    assert "ask an administrator to unlock it" in page
    assert 'name="password"' in responses[-1].content.decode()  # The sign-in page, not bare text.

    refused = sign_in(client, "ops-password-1")
    assert refused.status_code == 429 and LOCKED in text(refused)
    assert not signed_in(client)


def test_a_locked_pair_hurts_no_one_else(client, ops_user, staff_user):
    fail(client, 5)
    # Another user from the same address.
    assert sign_in(client, "lead-password-1", username="lead").status_code == 302
    # The same user from another address.
    elsewhere = Client(REMOTE_ADDR="203.0.113.9")
    assert sign_in(elsewhere, "ops-password-1").status_code == 302
    assert signed_in(elsewhere)


def test_the_lock_lifts_when_its_cool_off_has_passed(client, ops_user):
    fail(client, 5)
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=14))
    refused = sign_in(client, "ops-password-1")
    assert "locked for 1 more minute." in text(refused)
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=15, seconds=1))
    assert sign_in(client, "ops-password-1").status_code == 302
    assert signed_in(client)
    # Success starts the count afresh.
    assert AccessAttempt.objects.count() == 0


def test_a_retry_while_locked_does_not_extend_the_lock(client, ops_user):
    fail(client, 5)
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=10))
    fail(client, 3)
    assert "locked for 5 more minutes." in text(sign_in(client, "wrong"))


@pytest.mark.parametrize(
    "unlock",
    [
        lambda: call_command("axes_reset_ip_username", "127.0.0.1", "ops", verbosity=0),
        lambda: call_command("axes_reset_username", "ops", verbosity=0),
    ],
    ids=["axes_reset_ip_username", "axes_reset_username"],
)
def test_a_management_command_unlocks(client, ops_user, unlock):
    fail(client, 5)
    unlock()
    assert sign_in(client, "ops-password-1").status_code == 302


def test_an_administrator_unlocks_in_the_admin(client, ops_user, admin_client):
    fail(client, 5)
    listing = admin_client.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and "ops" in text(listing)
    [attempt] = AccessAttempt.objects.all()
    response = admin_client.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert sign_in(client, "ops-password-1").status_code == 302


def test_the_admin_sign_in_is_throttled_the_same_way(client, staff_user):
    responses = fail(client, 5, username="lead", path="/admin/login/")
    assert responses[-1].status_code == 429 and LOCKED in text(responses[-1])
    assert (
        sign_in(client, "lead-password-1", username="lead", path="/admin/login/").status_code == 429
    )
    # One count for both pages: the lock holds on the other one too.
    assert sign_in(client, "lead-password-1", username="lead").status_code == 429


def test_a_lockout_is_logged_with_who_and_how_to_unlock_but_no_password(client, ops_user):
    with stdout_log() as output:
        fail(client, 5)
        sign_in(client, "ops-password-1")
    logged = output.getvalue()
    assert (
        "WARNING dashboard.signin sign-in locked: username 'ops' from 127.0.0.1 after 5 "
        "failures, for 15 min (unlock: manage.py axes_reset_ip_username 127.0.0.1 'ops')"
    ) in logged
    assert "sign-in refused while locked: username 'ops' from 127.0.0.1 on /login/" in logged
    assert "wrong-" not in logged and "ops-password-1" not in logged


# The client's address --------------------------------------------------------------


def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(client, ops_user):
    # A guesser writing a new X-Forwarded-For each time is still one address.
    responses = [sign_in(client, "wrong", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}") for n in range(5)]
    assert responses[-1].status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}


def test_behind_the_router_the_address_it_saw_is_used(client, ops_user, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    # Heroku's router appends the address it saw; what comes before it is
    # the client's to write, and it cannot dodge the lock by rewriting it.
    for n in range(5):
        response = sign_in(client, "wrong", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}, 198.51.100.7")
    assert response.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.7"}
    # Another person behind the same router is another address.
    other = sign_in(Client(), "ops-password-1", HTTP_X_FORWARDED_FOR="198.51.100.8")
    assert other.status_code == 302


def test_a_forwarded_address_that_is_not_one_falls_back_to_the_connection(
    client, ops_user, settings
):
    settings.TRUSTED_PROXY_COUNT = 1
    fail(client, 1, HTTP_X_FORWARDED_FOR="not-an-address")
    fail(client, 1)  # No header at all.
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}


# The session's end -----------------------------------------------------------------


def test_a_session_ends_its_age_after_sign_in_however_busy(client, ops_user, settings, monkeypatch):
    settings.SESSION_COOKIE_AGE = 10 * 60 * 60
    # Even saving the session on every request must not push its end back.
    settings.SESSION_SAVE_EVERY_REQUEST = True
    signed_at = timezone.now()
    assert sign_in(client, "ops-password-1").status_code == 302
    [session] = Session.objects.all()
    assert abs(session.expire_date - (signed_at + timedelta(hours=10))) < timedelta(seconds=5)

    real_now = timezone.now
    for hours in (1, 5, 9.9):
        monkeypatch.setattr(timezone, "now", lambda h=hours: real_now() + timedelta(hours=h))
        # The live refresh and the status poll, as the page sends them.
        assert (
            client.get("/", HTTP_HX_REQUEST="true", HTTP_HX_TRIGGER="live-refresh").status_code
            == 200
        )
        assert client.get("/sync/status/").status_code == 200
    assert Session.objects.get().expire_date == session.expire_date

    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(hours=10, seconds=1))
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_settings_map_onto_axes_and_the_session(tmp_path):
    env = base_env(
        DEBUG="true",
        LOGIN_FAILURE_LIMIT="3",
        LOGIN_COOLOFF_MINUTES="30",
        SESSION_COOKIE_AGE="3600",
        DYNO="web.1",
        REDIS_URL="redis://127.0.0.1:6379/0",
        BATCHWATCH_VAR_DIR=str(tmp_path),
    )
    shown = (
        "from django.conf import settings as s; "
        "print(s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME, s.SESSION_COOKIE_AGE, s.TRUSTED_PROXY_COUNT)"
    )
    process = run_to_completion("shell", f'python manage.py shell -c "{shown}"', env, timeout=60)
    assert process.lines[-1] == "3 0:30:00 3600 1", process.output
