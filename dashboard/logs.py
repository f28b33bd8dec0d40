"""Logging for platforms that read stdout: one line per event."""

import logging


class OneLineFormatter(logging.Formatter):
    """Formats every record on one line. A traceback's lines, or a message's,
    are joined with " | ", so a log router keeps each event whole and a
    search finds the error with its cause."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


# The formatter's configuration, shared by Django's LOGGING and gunicorn's.
LINE_FORMATTER = {
    "()": "dashboard.logs.OneLineFormatter",
    "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
}
