"""Search ids by prefix through a B-tree, not by substring through trigrams.

The trigram index on UPPER(id) (migration 0002) cost the sync more than any
other index: a random id has as many distinct trigrams as characters, so
every new batch added about twenty GIN entries, and a first sync of 100,000
batches ran about 15 % slower for it. Ops paste an id or its beginning, so
BatchQuerySet.search() matches ids by case-insensitive prefix,
UPPER(id) LIKE 'RB\\_4F0P%', which this index answers in a few milliseconds
at a million batches. Names keep their trigram index: they are searched
for words in the middle.

Django's automatic varchar_pattern_ops index on the primary key serves only
case-sensitive LIKE, which nothing runs, and is dropped too. PostgreSQL only.
"""

from django.db import migrations


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS batch_id_trgm_idx")
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'batches_batch' "
            "AND indexdef LIKE '%%varchar_pattern_ops%%'"
        )
        for (name,) in cursor.fetchall():
            schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')
    schema_editor.execute(
        "CREATE INDEX IF NOT EXISTS batch_id_prefix_idx "
        "ON batches_batch (UPPER(id::text) text_pattern_ops)"
    )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS batch_id_prefix_idx")
    schema_editor.execute(
        'CREATE INDEX IF NOT EXISTS batch_id_trgm_idx ON batches_batch USING gin ((UPPER("id")) gin_trgm_ops)'
    )


class Migration(migrations.Migration):
    dependencies = [("batches", "0006_dashboard_destination_indexes")]

    operations = [migrations.RunPython(forwards, backwards)]
