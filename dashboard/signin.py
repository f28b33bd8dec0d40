"""Signing in, hardened: password guessing is throttled, sessions end.

Throttling is django-axes' (settings.py maps LOGIN_FAILURE_LIMIT and
LOGIN_COOLOFF_MINUTES onto its AXES_* settings): after LOGIN_FAILURE_LIMIT
failed sign-ins for one username from one address, that pair is refused,
the right password included, for LOGIN_COOLOFF_MINUTES after the last
failure; /login/ and /admin/login/ alike, since both authenticate through
its backend. Other users, and the same user from elsewhere, sign in as
usual, so a guesser cannot lock a colleague out from afar. This module
gives axes the client's address, words the refusal on the sign-in page and
logs each lockout. Unlocking: `manage.py axes_reset_ip_username <ip>
<username>` (or axes_reset_username, axes_reset_ip, axes_reset for all),
or delete the row under "Access attempts" in the admin.

A session ends SESSION_COOKIE_AGE after sign-in, however busy it is: the
expiry is set once, as a moment, when the person signs in.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from datetime import timedelta

from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

log = logging.getLogger(__name__)

# Too Many Requests: what axes answers by default, and what it is.
LOCKED_OUT_STATUS = 429


def client_ip(request: HttpRequest) -> str | None:
    """The address a sign-in came from. Behind TRUSTED_PROXY_COUNT proxies
    that each append the address they saw to X-Forwarded-For (Heroku's
    router: 1), it is the entry that many from the end; the ones before it
    are whatever the client sent, so they are never read. Without proxies
    (or without the header) it is the connection's own address."""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        forwarded = [
            part.strip()
            for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if part.strip()
        ]
        if len(forwarded) >= proxies and _is_ip(forwarded[-proxies]):
            return forwarded[-proxies]
    remote = request.META.get("REMOTE_ADDR", "")
    return remote if _is_ip(remote) else None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials=None
) -> HttpResponse:
    """The sign-in page saying why this sign-in is refused and until when
    (axes calls it, for /login/ and /admin/login/ alike)."""
    username = _username(request, credentials)
    minutes = _minutes_left(username, getattr(request, "axes_ip_address", None))
    message = (
        f"Too many failed sign-ins for this username from your address: it is locked for "
        f"{minutes} more minute{'s' if minutes != 1 else ''}. Wait and try again, or ask an "
        "administrator to unlock it."
    )
    context = {
        "form": LockedOutForm(request, message, username),
        "next": request.POST.get("next") or request.GET.get("next", ""),
    }
    return render(request, "registration/login.html", context, status=LOCKED_OUT_STATUS)


class LockedOutForm(AuthenticationForm):
    """The sign-in form, not checked (that would count another failure),
    showing why signing in is refused where its errors go."""

    def __init__(self, request: HttpRequest, message: str, username: str):
        super().__init__(request, initial={"username": username})
        self.message = message

    def non_field_errors(self):
        return self.error_class([self.message], error_class="nonfield")


def _username(request: HttpRequest, credentials) -> str:
    if isinstance(credentials, dict) and credentials.get("username"):
        return str(credentials["username"])
    return request.POST.get("username", "")


def _minutes_left(username: str, ip_address: str | None) -> int:
    """Whole minutes until the lock on this username and address lifts."""
    cool_off = get_cool_off() or timedelta(0)
    last = (
        AccessAttempt.objects.filter(username=username, ip_address=ip_address)
        .order_by("-attempt_time")
        .values_list("attempt_time", flat=True)
        .first()
    )
    left = (last + cool_off - timezone.now()) if last else cool_off
    return max(1, math.ceil(left.total_seconds() / 60))


@receiver(user_locked_out)
def log_lockout(sender, request: HttpRequest, username: str, ip_address: str | None, **kwargs):
    """One line per lockout, and one per sign-in refused while locked; never
    the password (axes' own lines mask it too)."""
    failures = getattr(request, "axes_failures_since_start", None)
    who = f"username {username!r:.120} from {ip_address or 'an unknown address'}"
    unlock = f"manage.py axes_reset_ip_username {ip_address} {username!r:.120}"
    if failures is not None:
        log.warning(
            "sign-in locked: %s after %s failures, for %s min (unlock: %s)",
            who,
            failures,
            settings.LOGIN_COOLOFF_MINUTES,
            unlock,
        )
    else:
        log.info("sign-in refused while locked: %s on %s", who, request.path)


@receiver(user_logged_in)
def end_session_on_time(sender, request: HttpRequest | None, user, **kwargs):
    """Fix the session's end at sign-in plus SESSION_COOKIE_AGE, as a moment:
    later saves (a message, the live refresh) cannot push it back."""
    if request is not None and hasattr(request, "session"):
        request.session.set_expiry(timedelta(seconds=settings.SESSION_COOKIE_AGE))
