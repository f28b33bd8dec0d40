"""Settings for Batchwatch, read from the environment (twelve-factor).

Every setting is documented in the README with its default. A missing or
malformed required setting stops start-up with one line naming it.
"""

from __future__ import annotations

import os
import ssl
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.utils.csp import CSP

from dashboard.logs import LINE_FORMATTER, SCRUB_FILTER

BASE_DIR = Path(__file__).resolve().parent.parent
# Git-ignored folder for local state: the SQLite database, the embedded
# broker's message folders and the beat schedule.
VAR_DIR = Path(os.environ.get("BATCHWATCH_VAR_DIR", BASE_DIR / "var"))
# The test suite runs in parallel processes (pytest-xdist sets this to gw0,
# gw1...; the processes a test starts inherit it): each keeps its local
# state (the SQLite files, the embedded broker, beat's schedule) apart and
# its own queue on a shared broker. Unset everywhere else.
TEST_PROCESS = os.environ.get("PYTEST_XDIST_WORKER", "")
if TEST_PROCESS:
    VAR_DIR = VAR_DIR / TEST_PROCESS

VERSION = "1.0.0"


class SettingError(Exception):
    """A setting is missing or malformed; its message names the setting."""


def _fail(message: str) -> None:
    # One clear line, no traceback: this is an operator's mistake, not a bug.
    sys.stderr.write(f"Batchwatch configuration error: {message}\n")
    raise SystemExit(2)


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingError(f"{name} must be true or false, got {raw!r}")


def envint(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise SettingError(f"{name} must be at least {minimum}{upper}, got {value}")
    return value


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in envstr(name, default).split(",") if item.strip()]


def envurl(name: str, default: str = "", *, schemes: tuple[str, ...] = ("http", "https")) -> str:
    value = envstr(name, default)
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise SettingError(f"{name} must be a {' or '.join(schemes)} URL, got a value that is not")
    return value.rstrip("/")


def _database(url: str) -> dict:
    try:
        config = dj_database_url.parse(url, conn_max_age=600, conn_health_checks=True)
    except Exception:
        # The URL may hold a password: never echo it.
        raise SettingError("DATABASE_URL is not a database URL this app understands") from None
    engine = config.get("ENGINE", "")
    if engine == "django.db.backends.sqlite3":
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        config["CONN_MAX_AGE"] = 0
        config["OPTIONS"] = {
            # A worker writing beside the web process otherwise hits
            # "database is locked": IMMEDIATE takes the write lock up front, WAL
            # lets readers carry on while one process writes.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    elif engine == "django.db.backends.postgresql":
        host = config.get("HOST") or ""
        local = host in {"", "localhost", "127.0.0.1", "::1"} or host.startswith("/")
        if envbool("DATABASE_SSL_REQUIRE", not local):
            config.setdefault("OPTIONS", {})["sslmode"] = "require"
        # libpq waits for ever on an unreachable host; the health check and
        # a worker's start-up should fail instead.
        config.setdefault("OPTIONS", {}).setdefault("connect_timeout", 3)
    else:
        raise SettingError("DATABASE_URL must be a postgres:// or sqlite:// URL")
    return config


def _redis_ssl(url: str) -> dict | None:
    # Heroku Redis serves rediss:// with a self-signed certificate.
    if url.startswith("rediss://"):
        verify = envbool("REDIS_SSL_VERIFY", False)
        return {"ssl_cert_reqs": ssl.CERT_REQUIRED if verify else ssl.CERT_NONE}
    return None


try:
    DEBUG = envbool("DEBUG", False)

    # Platforms run collectstatic while building (Heroku's Python buildpack
    # does it by itself), where a Docker build or a first deploy may not have
    # the app's secrets yet; collecting files needs neither the key nor hosts.
    COLLECTING_STATIC = sys.argv[1:2] == ["collectstatic"]

    SECRET_KEY = envstr("SECRET_KEY")
    if not SECRET_KEY:
        if not DEBUG and not COLLECTING_STATIC:
            raise SettingError("SECRET_KEY is not set (it is required when DEBUG is off)")
        SECRET_KEY = "django-insecure-local-development-only"
    elif not DEBUG and (
        # The bar Django's own deploy check sets (security.W009).
        len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure")
    ):
        raise SettingError(
            "SECRET_KEY is too short or a default one: set a random value of 50 characters or more"
        )

    ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
    if not DEBUG and not ALLOWED_HOSTS and not COLLECTING_STATIC:
        raise SettingError("ALLOWED_HOSTS is not set (it is required when DEBUG is off)")
    CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")
    for _origin in CSRF_TRUSTED_ORIGINS:
        if urlsplit(_origin).scheme not in {"http", "https"}:
            raise SettingError(f"CSRF_TRUSTED_ORIGINS entries must be http:// or https:// origins, got {_origin!r}")

    DATABASE_URL = envstr("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'batchwatch.sqlite3'}"
    DATABASES = {"default": _database(DATABASE_URL)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        # A file, not memory, so that tests can share the test database with
        # threads and with a real Celery worker process.
        DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

    REDIS_URL = envurl("REDIS_URL", schemes=("redis", "rediss"))
    REDIS_SSL_VERIFY = envbool("REDIS_SSL_VERIFY", False)
    # Heroku and Dokku set DYNO. There web, worker and beat run on separate
    # machines, where the embedded filesystem broker would silently deliver
    # nothing: refuse to start rather than never sync.
    if not REDIS_URL and os.environ.get("DYNO") and not COLLECTING_STATIC:
        raise SettingError(
            "REDIS_URL is not set: on this platform web, worker and beat need a shared broker"
        )

    INKIT_API_TOKEN = envstr("INKIT_API_TOKEN")
    INKIT_API_BASE_URL = envurl("INKIT_API_BASE_URL", "https://api.inkit.com/v1")
    INKIT_PAGE_SIZE = envint("INKIT_PAGE_SIZE", 100, minimum=1, maximum=1000)
    # Short enough that a request in flight ends inside a platform's 30 s
    # shutdown grace period.
    INKIT_TIMEOUT_SECONDS = envint("INKIT_TIMEOUT_SECONDS", 20, minimum=1)
    INKIT_MAX_RETRIES = envint("INKIT_MAX_RETRIES", 5, minimum=0, maximum=20)
    SYNC_INTERVAL_SECONDS = envint("SYNC_INTERVAL_SECONDS", 60, minimum=5)
    SYNC_CONCURRENCY = envint("SYNC_CONCURRENCY", 4, minimum=1, maximum=32)
    # Threads writing pages on PostgreSQL, each with its own connection.
    SYNC_WRITERS = envint("SYNC_WRITERS", 2, minimum=1, maximum=8)
    # The longest one sync may take; it stops between pages past this.
    SYNC_TIME_LIMIT_SECONDS = envint("SYNC_TIME_LIMIT_SECONDS", 900, minimum=60)
    # How long a sync's lock outlives its last heartbeat (a run beats nine
    # times per this, from its own thread): the longest a killed worker can
    # keep other runs of its kind out, and show as syncing in the header.
    SYNC_LOCK_SECONDS = envint("SYNC_LOCK_SECONDS", 45, minimum=10)
    # How often beat starts a full sweep (quick syncs run every
    # SYNC_INTERVAL_SECONDS in between). 30 suits 100,000 batches under the
    # default budget: a sweep of 1,001 pages at 75 % of 120 a minute takes
    # about 11 minutes. README: how to pick it.
    SYNC_FULL_SWEEP_MINUTES = envint("SYNC_FULL_SWEEP_MINUTES", 30, minimum=1)
    # Every request to Inkit (retries and per-batch GETs included) waits for
    # a slot: never more than this in any 60 seconds, across every worker
    # process when REDIS_URL is set (per process without it). Inkit publishes
    # no limit; the one figure about (300 a minute) is unverified.
    INKIT_MAX_REQUESTS_PER_MINUTE = envint("INKIT_MAX_REQUESTS_PER_MINUTE", 120, minimum=10)
    # Task threads per worker process. Celery's default is the CPU count,
    # which on a platform's container is the host's, not the dyno's share.
    WORKER_CONCURRENCY = envint("WORKER_CONCURRENCY", 4, minimum=1, maximum=64)

    DASHBOARD_REFRESH_SECONDS = envint("DASHBOARD_REFRESH_SECONDS", 15, minimum=0)
    STUCK_AFTER_MINUTES = envint("STUCK_AFTER_MINUTES", 60, minimum=1)
    # In Progress for longer than this since created_at is overdue, however
    # it progresses (batches.models.overdue_threshold).
    OVERDUE_AFTER_HOURS = envint("OVERDUE_AFTER_HOURS", 24, minimum=1)
    # How long the hourly trend rollups are kept (batches/trends.py). At
    # least the 7 days a destination's failure rate is compared against.
    TRENDS_RETENTION_DAYS = envint("TRENDS_RETENTION_DAYS", 90, minimum=7)

    ALERT_EMAILS = envlist("ALERT_EMAILS")
    # Validated as a URL but kept exactly as given (a trailing slash may
    # matter to the receiver). A secret: never logged or shown.
    ALERT_WEBHOOK_URL = envurl("ALERT_WEBHOOK_URL") and envstr("ALERT_WEBHOOK_URL")
    ALERT_WEBHOOK_TIMEOUT_SECONDS = envint("ALERT_WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1, maximum=60)
    # No successful sync for this long: one "syncing is stale" alert, and no
    # stuck alarms until a sync succeeds (the data is too old to judge).
    SYNC_STALE_AFTER_MINUTES = envint("SYNC_STALE_AFTER_MINUTES", 15, minimum=1)
    # Where people open Batchwatch (https://batchwatch.example.com): alerts
    # link to it when set.
    PUBLIC_URL = envurl("PUBLIC_URL")
    METRICS_TOKEN = envstr("METRICS_TOKEN")

    # Outgoing mail (stuck alerts). Read from the classic EMAIL_* variables,
    # configured through Django 6.1's MAILERS.
    _email_options = {
        "host": envstr("EMAIL_HOST", "localhost"),
        "port": envint("EMAIL_PORT", 25, minimum=1, maximum=65535),
        "username": envstr("EMAIL_HOST_USER"),
        "password": envstr("EMAIL_HOST_PASSWORD"),
        "use_tls": envbool("EMAIL_USE_TLS", False),
        "use_ssl": envbool("EMAIL_USE_SSL", False),
        "timeout": envint("EMAIL_TIMEOUT", 10, minimum=1),
    }
    if _email_options["use_tls"] and _email_options["use_ssl"]:
        raise SettingError("EMAIL_USE_TLS and EMAIL_USE_SSL cannot both be on")
    MAILERS = {
        "default": {
            "BACKEND": envstr("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend"),
            "OPTIONS": _email_options,
        }
    }
    if MAILERS["default"]["BACKEND"] != "django.core.mail.backends.smtp.EmailBackend":
        MAILERS["default"]["OPTIONS"] = {}
    DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "batchwatch@localhost")
    SERVER_EMAIL = DEFAULT_FROM_EMAIL

    # Sign-in throttling (dashboard/signin.py, django-axes): this many failed
    # sign-ins for one username from one address lock that pair out for the
    # cool-off, counted from the last failure.
    LOGIN_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=100)
    LOGIN_COOLOFF_MINUTES = envint("LOGIN_COOLOFF_MINUTES", 15, minimum=1, maximum=7 * 24 * 60)
    # Proxies in front of the app that append the client's address to
    # X-Forwarded-For (Heroku's router is one, and sets DYNO). Only behind
    # them is the header trusted; elsewhere anyone could write it.
    TRUSTED_PROXY_COUNT = envint(
        "TRUSTED_PROXY_COUNT", 1 if os.environ.get("DYNO") else 0, maximum=5
    )
    # A session ends this many seconds after sign-in, however active (a
    # working day by default).
    SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", 10 * 60 * 60, minimum=60)

    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", not DEBUG)
    LOG_LEVEL = envstr("LOG_LEVEL", "INFO").upper()
except SettingError as error:
    _fail(str(error))


INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "axes",
    "batches",
    "dashboard",
]
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    INSTALLED_APPS.append("django.contrib.postgres")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the path, a cookie or the query string (WhiteNoise
    # in DEBUG stats files, the session is looked up): a NUL is a 400.
    "dashboard.middleware.refuse_unstorable_input",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After WhiteNoise, so that only what views make is marked private.
    "dashboard.middleware.private_no_store",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as axes asks: it turns a locked-out sign-in into our page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # {{ csp_nonce }}: {% htmx_script %} puts it on htmx's tag.
                "django.template.context_processors.csp",
            ],
        },
    },
]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes (dashboard/signin.py) first: it refuses a locked-out pair
# before the password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Attempts while locked are refused without counting: the lock lifts when
# the page said it would, not later for every retry.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "dashboard.signin.client_ip"
AXES_LOCKOUT_CALLABLE = "dashboard.signin.locked_out"
# Failures are kept until their cool-off ends; successful sign-ins are in the
# log, not in a table that grows for ever.
AXES_DISABLE_ACCESS_LOG = True
# Axes masks the username and address in its own log lines by default; they
# are what an operator needs (the password is always masked).
AXES_SENSITIVE_PARAMETERS = []
AXES_VERBOSE = False
# Sessions: fixed at sign-in (dashboard/signin.py), so never extended.
SESSION_SAVE_EVERY_REQUEST = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Only if present: git keeps no empty folder, so a fresh clone (what a
# platform builds) may lack it, and check --deploy would warn.
STATICFILES_DIRS = [path for path in [BASE_DIR / "static"] if path.is_dir()]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Security. The platform's router terminates TLS and says so in X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Cookies are HTTPS-only wherever HTTP is redirected to HTTPS.
SESSION_COOKIE_SECURE = SECURE_SSL_REDIRECT
CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT
SECURE_HSTS_SECONDS = 0 if DEBUG else 60 * 60 * 24 * 365
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy: scripts only from our own static files (htmx and
# dashboard.js, each tag carrying the request's nonce), no inline script or
# style at all, nothing fetched from another origin. htmx is configured for
# it in base.html (no eval, no injected indicator styles); charts are SVG
# drawn by the server. data: images are the stylesheet's own icons.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "font-src": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "object-src": [CSP.NONE],
}
SESSION_COOKIE_HTTPONLY = True

# Celery: configured here under the CELERY_ namespace (see dashboard/celery.py).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_USE_SSL = _redis_ssl(REDIS_URL)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Well past the sync's time limit, so a task acked late is not handed
        # to a second worker while the first is still on it.
        "visibility_timeout": max(3600, SYNC_TIME_LIMIT_SECONDS + 300),
        # A broker host that drops packets must not hang a web request.
        "socket_connect_timeout": 5,
    }
    # Sync now gives up on an unreachable broker in about a second.
    CELERY_TASK_PUBLISH_RETRY_POLICY = {
        "max_retries": 2,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 0.5,
    }
else:
    # Embedded default: kombu's filesystem transport needs no server and
    # delivers across separate web, worker and beat processes.
    BROKER_DIR = VAR_DIR / "broker"
    CELERY_BROKER_URL = "filesystem://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "messages"),
        "data_folder_out": str(BROKER_DIR / "messages"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Celery's own limits, a margin past the sync's: the Procfile's threads pool
# cannot enforce them (only prefork can kill a task), so the sync stops
# itself at SYNC_TIME_LIMIT_SECONDS; these catch anything else on prefork.
CELERY_TASK_SOFT_TIME_LIMIT = SYNC_TIME_LIMIT_SECONDS + 60
CELERY_TASK_TIME_LIMIT = SYNC_TIME_LIMIT_SECONDS + 120
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CONCURRENCY = WORKER_CONCURRENCY
CELERY_TASK_ACKS_LATE = False  # turned on per task, for the idempotent ones
# See TEST_PROCESS above: a Celery worker a test starts takes only its own
# test process's tasks from a broker they share.
if TEST_PROCESS:
    CELERY_TASK_DEFAULT_QUEUE = f"celery-{TEST_PROCESS}"
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
# Beat's record of when each entry last ran, in a writable place on any
# platform (dashboard/celery.py makes the folder). Losing it with the dyno's
# filesystem is harmless: the interval starts over.
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    # Quick syncs between full sweeps (batches/sync/runs.py).
    "sync-batches": {
        "task": "batches.tasks.sync_batches",
        "schedule": float(SYNC_INTERVAL_SECONDS),
        "kwargs": {"kind": "quick"},
        # A beat tick older than one interval is pointless: the next one comes.
        "options": {"expires": float(SYNC_INTERVAL_SECONDS)},
    },
    "full-sweep": {
        "task": "batches.tasks.sync_batches",
        "schedule": float(SYNC_FULL_SWEEP_MINUTES * 60),
        "kwargs": {"kind": "full"},
        "options": {"expires": float(SYNC_FULL_SWEEP_MINUTES * 60)},
    },
    # The safety net behind the post-sync evaluation: retries due alert
    # deliveries, and notices syncing going stale when syncs stop finishing.
    "check-stuck": {
        "task": "batches.tasks.check_stuck",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": LINE_FORMATTER,
    },
    "filters": {
        "secrets": SCRUB_FILTER,
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": sys.stdout,
            "formatter": "line",
            "filters": ["secrets"],
        },
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # urllib3 logs full request URLs at DEBUG; keep it quiet.
        "urllib3": {"level": "WARNING"},
        "django.db.backends": {"level": "INFO"},
        # Its failures and lockouts are warnings; its successes need no line.
        "axes": {"level": "WARNING"},
    },
}
