"""The one scrubber: secrets out of any text that came from outside.

Inkit's error bodies, a webhook receiver's answer, an SMTP server's reply,
an exception's message: any of them may quote what we sent, the token or
the URL included. Such text passes through scrub() before it is stored
(SyncRun, AlertDelivery), logged (the stdout handler's filter,
dashboard/logs.py), rendered or alerted.

Two faces, one rule:
- scrub(text, secrets) hides the given secrets and needs no Django: the
  Inkit client (batches/inkit.py) passes its own token;
- scrub(text) hides the app's own, read from settings: INKIT_API_TOKEN,
  ALERT_WEBHOOK_URL and its parts, the SMTP password, METRICS_TOKEN,
  SECRET_KEY and the passwords in DATABASE_URL and REDIS_URL.

Each secret is also found percent-encoded, JSON-escaped, HTML-escaped and
in base64, in any letter case; and, whatever the settings, a password in
a URL (scheme://user:password@) and the value of an echoed
X-Inkit-API-Token header.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

MARK = "[secret]"
# Shorter values are not secrets anyone relies on, and hiding them would
# garble every line they happen to occur in.
MIN_LENGTH = 4
# A URL path segment this long may be a token (Slack's hooks end in one);
# shorter ones ("services") are words.
MIN_SEGMENT_LENGTH = 8

_URL_PASSWORD = re.compile(r"(?<=://)([^/@\s:]*):[^/@\s]+@")
_TOKEN_HEADER = re.compile(
    r"""(x-inkit-api-token["']?\s*[:=]\s*["']?)(?!\[secret\])[^\s"',;}\]]+""", re.IGNORECASE
)


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    """The text with every secret replaced by [secret]. Without `secrets`,
    the app's own from settings."""
    if not text:
        return text
    pattern = _pattern(tuple(secrets)) if secrets is not None else _settings_pattern()
    if pattern is not None:
        text = pattern.sub(MARK, text)
    text = _TOKEN_HEADER.sub(rf"\1{MARK}", text)
    return _URL_PASSWORD.sub(rf"\1:{MARK}@", text)


def url_secrets(url: str) -> list[str]:
    """What of a URL is secret: all of it, its password, its query and query
    values, its path and the path's last segment when token-long."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [url, url.rstrip("/"), parts.password or "", parts.query]
    found += [value for _, value in parse_qsl(parts.query)]
    path = parts.path.rstrip("/")
    if len(path) > 1:
        found.append(path)
        last = path.rsplit("/", 1)[-1]
        if len(last) >= MIN_SEGMENT_LENGTH:
            found.append(last)
    return found


def variants(secret: str) -> set[str]:
    """The forms a secret takes in text that quotes it."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret),
    }
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        padded = encode(secret.encode()).decode()
        forms |= {padded, padded.rstrip("=")}
    return {form for form in forms if len(form) >= MIN_LENGTH}


@lru_cache(maxsize=16)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    forms: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= MIN_LENGTH:
            forms |= variants(secret)
    if not forms:
        return None
    # Longest first, so that a URL goes whole before its parts.
    ordered = sorted(forms, key=lambda form: (-len(form), form))
    return re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE)


def _settings_pattern() -> re.Pattern[str] | None:
    from django.conf import settings

    if not settings.configured:
        return None  # Before Django is set up (gunicorn's first lines): none known.
    options = getattr(settings, "MAILERS", {}).get("default", {}).get("OPTIONS", {})
    # Read on every call (tests and operators change settings), compiled
    # once per distinct set of values.
    return _settings_pattern_for(
        settings.INKIT_API_TOKEN,
        getattr(settings, "METRICS_TOKEN", ""),
        settings.SECRET_KEY,
        options.get("username") or "",
        options.get("password") or getattr(settings, "EMAIL_HOST_PASSWORD", "") or "",
        getattr(settings, "ALERT_WEBHOOK_URL", "") or "",
        getattr(settings, "DATABASE_URL", "") or "",
        getattr(settings, "REDIS_URL", "") or "",
    )


@lru_cache(maxsize=16)
def _settings_pattern_for(
    inkit_token: str,
    metrics_token: str,
    secret_key: str,
    smtp_username: str,
    smtp_password: str,
    webhook_url: str,
    database_url: str,
    redis_url: str,
) -> re.Pattern[str] | None:
    found = [inkit_token, metrics_token, secret_key, smtp_password, *url_secrets(webhook_url)]
    if smtp_password:
        # What SMTP AUTH PLAIN sends, should a server quote it back.
        found.append(f"\0{smtp_username}\0{smtp_password}")
    for url in (database_url, redis_url):
        password = _url_password(url)
        if password:
            found += [url, password]
    return _pattern(tuple(secret for secret in found if secret))


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password if "://" in url else None
    except ValueError:
        return None
