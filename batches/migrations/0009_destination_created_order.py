"""A destination's batches in created order, from B-tree indexes on
BatchDestination, in place of the GIN indexes of migration 0006.

BatchQuerySet.with_destination() filters through a join on BatchDestination,
on PostgreSQL and SQLite alike, and sorted_by("created_at") then orders by
the joined row's batch_created_at (backfilled by 0008). dest_created_idx
(destination=...), dest_status_created_idx (with destination_status=...)
and dest_failed_created_idx (with failed=1) give those rows in that order,
so the list stops after its page instead of reading every match to sort it.
The GIN indexes on raw -> 'destinations' found the matches but not in
order; nothing asks them any more, and every new batch was written into them.

Parallel scans of BatchDestination are turned off (PostgreSQL only). The
list's capped count of a destination view reads at most 501 rows through
these indexes, each checked against its batch; PostgreSQL costs those
checks high enough to plan the count with parallel workers, which on two
cores took about 7 ms to start for 2 to 4 ms of work. The whole-table
reads run longer at a million batches: the summary after a sync that wrote
something by about 1 s (2.5 s instead of 1.5 s), the CSV export's list of
destination names by about 0.1 s (0.3 s).
"""

from django.db import migrations, models

GIN_INDEXES = {
    "batch_destinations_gin": "((raw -> 'destinations'))",
    "batch_destination_status_gin": "((raw -> 'destinations') jsonb_path_ops)",
}


def drop_gin(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in GIN_INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


def create_gin(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, expression in GIN_INDEXES.items():
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON batches_batch USING gin {expression}")


def serial_scans(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE batches_batchdestination SET (parallel_workers = 0)")


def parallel_scans(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE batches_batchdestination RESET (parallel_workers)")


class Migration(migrations.Migration):
    dependencies = [("batches", "0008_destination_batch_created_at")]

    operations = [
        migrations.AlterField(
            model_name="batchdestination",
            name="batch_created_at",
            field=models.DateTimeField(),
        ),
        migrations.AddIndex(
            model_name="batchdestination",
            index=models.Index(fields=["name", "-batch_created_at", "batch"], name="dest_created_idx"),
        ),
        migrations.AddIndex(
            model_name="batchdestination",
            index=models.Index(
                fields=["name", "status", "-batch_created_at", "batch"], name="dest_status_created_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="batchdestination",
            index=models.Index(
                condition=models.Q(("failed__gt", 0)),
                fields=["name", "-batch_created_at", "batch"],
                name="dest_failed_created_idx",
            ),
        ),
        migrations.RunPython(drop_gin, create_gin),
        migrations.RunPython(serial_scans, parallel_scans),
    ]
