"""Indexes for the dashboard's list: a partial created_at index for counts
over created_after/before, and GIN indexes for its destination filters
(PostgreSQL only).

BatchQuerySet.with_destination() and in_destination_status() ask the raw
item's destinations object on PostgreSQL:
  (raw -> 'destinations') ? 'salesforce'                          -> batch_destinations_gin
  (raw -> 'destinations') @> '{"salesforce": {"status": "..."}}'  -> batch_destination_status_gin
jsonb_path_ops answers the containment exactly (one entry per path and
value) but cannot answer ?, hence two small indexes (about 35 MB at a
million batches). SQLite filters through BatchDestination instead.
"""

from django.db import migrations, models

INDEXES = {
    "batch_destinations_gin": "((raw -> 'destinations'))",
    "batch_destination_status_gin": "((raw -> 'destinations') jsonb_path_ops)",
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, expression in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON batches_batch USING gin {expression}")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("batches", "0005_batch_fingerprint")]

    operations = [
        migrations.AddIndex(
            model_name="batch",
            index=models.Index(
                condition=models.Q(("gone_at__isnull", True)),
                fields=["created_at"],
                name="batch_present_created_idx",
            ),
        ),
        migrations.RunPython(create, drop),
    ]
