"""Trigram indexes for the list page's substring search (BatchQuerySet.search).

PostgreSQL only: Django's icontains becomes UPPER(col) LIKE UPPER('%q%'), which
a GIN trigram index on UPPER(col) serves. SQLite gets nothing here.
"""

from django.db import migrations

INDEXES = {
    "batch_name_trgm_idx": 'UPPER("name")',
    "batch_id_trgm_idx": 'UPPER("id")',
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, expression in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON batches_batch USING gin (({expression}) gin_trgm_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("batches", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
