"""BatchDestination.batch_created_at: a copy of its batch's created_at, for
the indexes of migration 0009. Added nullable and backfilled here; made NOT
NULL and indexed in 0009, once this transaction has committed, so that the
indexes are built without the row versions this backfill left behind.

dest_name_status_idx goes first, so the backfill does not update it row by
row; 0009's dest_status_created_idx takes its place.
"""

from django.db import migrations, models


def backfill(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "UPDATE batches_batchdestination d SET batch_created_at = b.created_at "
            "FROM batches_batch b WHERE d.batch_id = b.id"
        )
    else:  # SQLite: a correlated subquery.
        schema_editor.execute(
            "UPDATE batches_batchdestination SET batch_created_at = ("
            "SELECT created_at FROM batches_batch WHERE batches_batch.id = batches_batchdestination.batch_id)"
        )


class Migration(migrations.Migration):
    dependencies = [("batches", "0007_id_prefix_search")]

    operations = [
        migrations.RemoveIndex(model_name="batchdestination", name="dest_name_status_idx"),
        migrations.AddField(
            model_name="batchdestination",
            name="batch_created_at",
            field=models.DateTimeField(null=True),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
