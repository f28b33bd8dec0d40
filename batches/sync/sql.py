"""The sync's database-specific SQL: PostgreSQL's and SQLite's spellings of
the few statements where the ORM costs more than the database's own work.

The writes are spelt out rather than left to bulk_create(update_conflicts=
True): preparing every value of every field through the ORM cost more than
the database's own work and capped a first sync near 2,000 batches/s. Rows
are upserted with INSERT ... ON CONFLICT DO UPDATE, which PostgreSQL and
SQLite both speak, every value a parameter. A page of only new batches (a
first sync, mostly) goes through PostgreSQL's COPY instead, about twice as
fast again.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from datetime import datetime

from django.db import connection, models


def postgres() -> bool:
    return connection.vendor == "postgresql"


def _table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def touch_and_fingerprints(
    model: type[models.Model], ids: list[str], read_at: datetime
) -> dict[str, tuple[int | None, datetime | None, datetime | None]]:
    """Record that these batches were read at `read_at` (checked_at, never
    moved back) and return {id: (fingerprint, gone_at, checked_at)} for
    those already stored: all that an unchanged page costs, one statement.

    The checked_at returned is the row's after the update: later than
    read_at means a newer read of that batch was written already.

    On PostgreSQL the ids go as one array parameter; Django's IN with a
    parameter per id spent longer preparing a page's hundred than
    PostgreSQL spent answering.
    """
    table = _table(model)
    if postgres():
        _relax_session()
        sql = (
            f"UPDATE {table} SET checked_at = GREATEST(checked_at, %s) WHERE id = ANY(%s) "
            "RETURNING id, fingerprint, gone_at, checked_at"
        )
        params: list = [read_at, ids]
    else:
        stamp = connection.ops.adapt_datetimefield_value(read_at)
        marks = ", ".join(["%s"] * len(ids))
        sql = (
            f"UPDATE {table} SET checked_at = MAX(COALESCE(checked_at, %s), %s) "
            f"WHERE id IN ({marks}) RETURNING id, fingerprint, gone_at, checked_at"
        )
        params = [stamp, stamp, *ids]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    convert = _datetime_converter()
    return {row[0]: (row[1], convert(row[2]), convert(row[3])) for row in rows}


def _datetime_converter():
    """Raw SQLite answers naive datetimes (or text) in UTC; PostgreSQL aware ones."""
    if postgres():
        return lambda value: value
    from datetime import UTC

    from django.utils.dateparse import parse_datetime

    def convert(value):
        if isinstance(value, str):
            value = parse_datetime(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    return convert


_relaxed: weakref.WeakSet = weakref.WeakSet()  # psycopg connections already relaxed


def _relax_session() -> None:
    """checked_at moves on every page read, outside any transaction: let
    this connection's commits skip waiting for the WAL flush (a crash could
    lose the last few of these updates, which the next read makes again)."""
    connection.ensure_connection()
    raw = connection.connection
    if raw not in _relaxed:
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO OFF")
        _relaxed.add(raw)


def relax_commit() -> None:
    """Let PostgreSQL acknowledge this transaction's commit before its WAL
    reaches disk. A crash could lose the last few pages written, never
    corrupt them, and the next sync writes them again; waiting for the
    flush on every page would cost more than the rest of the page."""
    if postgres():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def copy_rows(model: type[models.Model], columns: Sequence[str], rows: list[tuple]) -> None:
    """PostgreSQL's COPY of new rows (raises IntegrityError if one exists)."""
    quote = connection.ops.quote_name
    sql = f"COPY {_table(model)} ({', '.join(map(quote, columns))}) FROM STDIN"
    # psycopg's own cursor does COPY; Django's wrapper turns its errors into
    # Django's (IntegrityError for a batch another writer inserted first).
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)


UPSERT_CHUNK = 500


def upsert(
    model: type[models.Model],
    columns: Sequence[str],
    conflict: Sequence[str],
    update: Sequence[str],
    rows: list[tuple],
    *,
    json_columns: Sequence[str] = (),
    newer_than: str | None = None,
    returning: str | None = None,
) -> list:
    """INSERT ... ON CONFLICT DO UPDATE for rows of already adapted values.

    newer_than: a column the update must not move back (checked_at): a row
    whose stored value is later than the new one is left alone. returning:
    a column whose values are returned for the rows inserted or updated.
    """
    quote = connection.ops.quote_name
    # JSON arrives as text; PostgreSQL's jsonb column wants it cast.
    cast = "%s::jsonb" if postgres() else "%s"
    placeholders = "(" + ", ".join(cast if c in json_columns else "%s" for c in columns) + ")"
    table = _table(model)
    head = f"INSERT INTO {table} ({', '.join(map(quote, columns))}) VALUES "
    tail = f" ON CONFLICT ({', '.join(map(quote, conflict))}) DO UPDATE SET " + ", ".join(
        f"{quote(c)} = EXCLUDED.{quote(c)}" for c in update
    )
    if newer_than:
        column = quote(newer_than)
        tail += f" WHERE {table}.{column} IS NULL OR {table}.{column} <= EXCLUDED.{column}"
    if returning:
        tail += f" RETURNING {quote(returning)}"
    written: list = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), UPSERT_CHUNK):
            chunk = rows[start : start + UPSERT_CHUNK]
            cursor.execute(
                head + ", ".join([placeholders] * len(chunk)) + tail,
                [value for row in chunk for value in row],
            )
            if returning:
                written.extend(row[0] for row in cursor.fetchall())
    return written
