"""The Celery app, configured from Django settings under the CELERY_ namespace."""

import os
from pathlib import Path

from celery import Celery
from celery.signals import beat_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("dashboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _make_broker_folders() -> None:
    # The embedded filesystem broker needs its folders to exist before the
    # first message; Redis needs nothing.
    from django.conf import settings

    if app.conf.broker_url.startswith("filesystem://"):
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS[key]).mkdir(parents=True, exist_ok=True)


@app.on_after_configure.connect
def _on_configure(sender: Celery, **kwargs: object) -> None:
    _make_broker_folders()
    # Beat writes its schedule file there, and a fresh dyno has no var/.
    Path(sender.conf.beat_schedule_filename).parent.mkdir(parents=True, exist_ok=True)


@beat_init.connect
def _sync_as_beat_starts(sender: object, **kwargs: object) -> None:
    """Beat's first tick comes one interval after it starts: send the first
    sync at once, so a fresh deploy (or `scripts/run`) shows batches straight
    away. A sync already running makes this one a harmless skip."""
    app.send_task("batches.tasks.sync_batches")
