"""Logging for platforms that read stdout: one line per event, no secret."""

import logging

from batches.secrets import scrub


class OneLineFormatter(logging.Formatter):
    """Formats every record on one line. A traceback's lines, or a message's,
    are joined with " | ", so a log router keeps each event whole and a
    search finds the error with its cause."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


class ScrubSecrets(logging.Filter):
    """Hides the app's secrets (batches.secrets) in a record's message,
    traceback and stack before any handler writes it: whatever code logs,
    and whatever text from outside it quotes, no secret reaches the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # A bad format string: the handler reports it as usual.
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


# The formatter's and the filter's configuration, shared by Django's LOGGING
# and gunicorn's.
LINE_FORMATTER = {
    "()": "dashboard.logs.OneLineFormatter",
    "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
}
SCRUB_FILTER = {"()": "dashboard.logs.ScrubSecrets"}
