"""Bulk INSERTs whose values travel in binary, bound on the server (PostgreSQL).

Django's psycopg backend binds parameters on the client: every value is rendered into the SQL
text, JSON and bytes quoted and escaped. For the tens of thousands of rows an evaluation cycle
writes (audit events, changes, evaluations and their megabytes of numbers) that rendering
costs more than the database's own work. Here each column travels as one binary array and one
`INSERT ... SELECT FROM unnest(...)` writes all the rows; their ids are drawn from the table's
sequence first, so nothing is read back. Elsewhere (SQLite) it is Django's `bulk_create`.

The rows are saved as `bulk_create` saves them: foreign keys take the ids of related objects
saved meanwhile, `pre_save` fills `auto_now_add` fields, no signals are sent, and each row gets
its id and is marked as stored.
"""

from collections.abc import Sequence

import psycopg
from django.db import connections, models, router


def bulk_insert(rows: Sequence[models.Model]) -> None:
    """Insert `rows` (all of one model, none stored yet) and set their ids."""
    if not rows:
        return
    model = type(rows[0])
    alias = router.db_for_write(model)
    connection = connections[alias]
    if connection.vendor != "postgresql":
        model._base_manager.using(alias).bulk_create(rows)
        return
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    for row in rows:
        # A foreign key set as an object saved since (a change's approval) takes its id now.
        row._prepare_related_fields_for_save(operation_name="bulk_insert")
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                       [meta.db_table, meta.pk.column, len(rows)])
        for row, (pk,) in zip(rows, cursor.fetchall(), strict=True):
            row.pk = pk
        arrays = [[row.pk for row in rows]] + [
            [field.get_db_prep_save(field.pre_save(row, add=True), connection) for row in rows] for field in fields
        ]
        columns = [meta.pk.column] + [field.column for field in fields]
        typed = ", ".join(f"%b::{field.db_type(connection)}[]" for field in [meta.pk, *fields])
        names = ", ".join(connection.ops.quote_name(column) for column in columns)
        # A plain psycopg cursor on Django's connection: same session and transaction, server-side binding.
        psycopg.Cursor(cursor.connection).execute(
            f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({names}) "
            f"SELECT * FROM unnest({typed})", arrays)
    for row in rows:
        row._state.adding, row._state.db = False, alias
