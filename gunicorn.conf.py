"""Gunicorn settings for the Procfile's `web` process.

Everything a platform varies comes from its environment: PORT to listen on,
WEB_CONCURRENCY worker processes (Heroku sets it from the dyno's size).
"""

import os

from dashboard.logs import LINE_FORMATTER, SCRUB_FILTER

bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads, so that one slow request (a health check waiting out an
# unreachable broker, a page on a slow database) does not hold up the rest.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))

# Load Django in the master before forking: a configuration error (a missing
# SECRET_KEY...) then stops gunicorn once with its one line, instead of every
# worker failing to boot in turn; the workers also share the loaded code.
preload_app = True

# Heroku's router gives up on a request after 30 s; so does gunicorn.
timeout = 30
# Platforms send SIGTERM and SIGKILL 30 s later (Heroku, Render; on Fly set
# kill_timeout, see the README): in-flight requests get 20 s to finish, and
# gunicorn exits before the kill.
graceful_timeout = 20
# The router keeps connections to the app open between requests: keep idle
# ones longer than a router typically does, so it is the router that closes
# them and never sends a request down a connection we just closed.
keepalive = 75

# The platform's router is the only way in and sets X-Forwarded-Proto, from
# addresses that are not known in advance. (Django reads the same header
# through SECURE_PROXY_SSL_HEADER.)
forwarded_allow_ips = "*"

# One line per request on stdout. REMOTE_ADDR is the router, so the client is
# taken from X-Forwarded-For; the router's request id ties the line to its own
# log. No headers that carry credentials, no referrer.
accesslog = "-"
access_log_format = (
    'client=%({x-forwarded-for}i)s "%(r)s" status=%(s)s bytes=%(B)s '
    "duration_ms=%(M)s request_id=%({x-request-id}i)s"
)
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# Gunicorn's own messages go to stdout too, in the same one-line shape as the
# app's (dashboard/settings.py LOGGING).
logconfig_dict = {
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
            "stream": "ext://sys.stdout",
            "formatter": "line",
            "filters": ["secrets"],
        },
    },
    "root": {"level": "INFO", "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stdout"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
    },
}

# Gunicorn's control socket (gunicornc) has no use on a platform, and its
# default path is shared by every gunicorn of the same user.
control_socket_disable = True
# Workers heartbeat through a file; /dev/shm keeps that off a slow or
# read-only disk (Docker-based platforms).
worker_tmp_dir = (
    "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
)
