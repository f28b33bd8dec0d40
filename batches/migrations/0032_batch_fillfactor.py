"""Room in batches_batch's pages for in-place updates (PostgreSQL only).

Every sync run moves checked_at on every batch it reads. With full pages
(the default fillfactor, 100) each such update writes a new row version on
another page and a new entry in every one of the table's indexes; with room
left on the page, and checked_at in no index, PostgreSQL updates the row in
place (a HOT update) and touches no index. Rows stored before this
migration get the room as they are rewritten (updates, VACUUM FULL).
"""

from django.db import migrations


def set_fillfactor(apps, schema_editor, value: int) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE batches_batch SET (fillfactor = {int(value)})")


class Migration(migrations.Migration):
    dependencies = [("batches", "0031_sync_v2")]

    operations = [
        migrations.RunPython(
            lambda apps, editor: set_fillfactor(apps, editor, 80),
            lambda apps, editor: set_fillfactor(apps, editor, 100),
        ),
    ]
