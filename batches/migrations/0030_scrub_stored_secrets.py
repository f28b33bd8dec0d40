"""Secrets out of what is already stored.

Before batches.secrets, an error body that echoed the request put the Inkit
token into SyncRun.error, and from there into the pages, the admin and the
"syncing is stale" alert (Alert.payload, which retries send again). This
scrubs the rows written before, with the secrets the settings hold at
migration time (a rotated token is no longer secret, and no longer known).
Only rows with text are read, a chunk at a time; only changed ones are
written. Nothing to undo.
"""

from django.db import migrations

from batches.secrets import scrub

CHUNK = 500


def scrub_stored(apps, schema_editor):
    SyncRun = apps.get_model("batches", "SyncRun")
    AlertDelivery = apps.get_model("batches", "AlertDelivery")
    Alert = apps.get_model("batches", "Alert")

    for run in SyncRun.objects.exclude(error="", note="").only("error", "note").iterator(CHUNK):
        error, note = scrub(run.error), scrub(run.note)
        if (error, note) != (run.error, run.note):
            SyncRun.objects.filter(pk=run.pk).update(error=error, note=note)

    for delivery in AlertDelivery.objects.exclude(error="").only("error").iterator(CHUNK):
        error = scrub(delivery.error)
        if error != delivery.error:
            AlertDelivery.objects.filter(pk=delivery.pk).update(error=error)

    for alert in Alert.objects.only("subject", "payload").iterator(CHUNK):
        payload, subject = scrub_json(alert.payload), scrub(alert.subject)
        if (payload, subject) != (alert.payload, alert.subject):
            Alert.objects.filter(pk=alert.pk).update(payload=payload, subject=subject)


def scrub_json(value):
    """Every string in a JSON value scrubbed, its shape kept."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [scrub_json(item) for item in value]
    if isinstance(value, dict):
        return {scrub(key): scrub_json(item) for key, item in value.items()}
    return value


class Migration(migrations.Migration):
    dependencies = [("batches", "0009_destination_created_order")]

    operations = [migrations.RunPython(scrub_stored, migrations.RunPython.noop)]
