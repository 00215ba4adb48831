"""Bulk inserts as one binary COPY (PostgreSQL).

Django's psycopg backend binds parameters on the client: every value is rendered into the SQL
text, JSON and bytes quoted and escaped. For the tens of thousands of rows an evaluation cycle
writes (audit events, changes, evaluations and their megabytes of numbers) that rendering
costs more than the database's own work. Here the rows travel in one `COPY ... FROM STDIN
(FORMAT BINARY)`, formatted by psycopg's C code, every value as its column's type; their ids
are drawn from the table's sequence first, so nothing is read back. Elsewhere (SQLite) it is
Django's `bulk_create`.

The rows are saved as `bulk_create` saves them: foreign keys take the ids of related objects
saved meanwhile, `pre_save` fills `auto_now_add` fields, no signals are sent, and each row gets
its id and is marked as stored. Values are bound as the ORM binds them (`get_db_prep_save`),
with two shortcuts that store the same thing at a fraction of the cost per value (a cycle binds
~200,000): a value the ORM would hand back unchanged is not handed to it, and JSON is encoded
by one encoder per column (or by the caller, `json_texts`).
"""

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any

import psycopg
from django.db import connections, models, router
from psycopg.types.json import set_json_dumps

_INTEGER_FIELDS = (
    models.AutoField, models.BigAutoField, models.SmallAutoField, models.IntegerField, models.BigIntegerField,
    models.SmallIntegerField, models.PositiveIntegerField, models.PositiveBigIntegerField,
    models.PositiveSmallIntegerField,
)
# For these field classes (exactly: a subclass may convert more), which values `get_db_prep_save`
# returns unchanged on PostgreSQL (integers in an int subclass, sent alike as the column's type).
# Its conversions act on the others: numbers given as strings, naive datetimes made aware, lazy strings.
_UNCHANGED: dict[type[models.Field], Callable[[Any], bool]] = {
    **dict.fromkeys(_INTEGER_FIELDS, lambda value: type(value) is int),
    models.CharField: lambda value: type(value) is str,
    models.TextField: lambda value: type(value) is str,
    models.BooleanField: lambda value: type(value) is bool,
    models.DateTimeField: lambda value: type(value) is datetime and value.tzinfo is not None,
}


def bulk_insert(rows: Sequence[models.Model], *, json_texts: Mapping[str, Sequence[str | None]] | None = None) -> None:
    """Insert `rows` (all of one model, none stored yet) and set their ids.

    `json_texts`: JSON fields the caller has already encoded, by name, one text per row (None for
    NULL): on PostgreSQL they are sent as they are, so they must be the JSON of the rows' values.
    """
    if not rows:
        return
    model = type(rows[0])
    alias = router.db_for_write(model)
    connection = connections[alias]
    if connection.vendor != "postgresql":
        model._base_manager.using(alias).bulk_create(rows)
        return
    for row in rows:
        # A foreign key set as an object saved since (a change's approval) takes its id now.
        row._prepare_related_fields_for_save(operation_name="bulk_insert")
    with connection.cursor() as cursor:
        _draw_ids(cursor, rows)
        _copy(cursor, rows, json_texts or {})
    for row in rows:
        row._state.adding, row._state.db = False, alias


def _draw_ids(cursor, rows: Sequence[models.Model]) -> None:
    meta = rows[0]._meta
    cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                   [meta.db_table, meta.pk.column, len(rows)])
    for row, (pk,) in zip(rows, cursor.fetchall(), strict=True):
        row.pk = pk


def _copy(cursor, rows: Sequence[models.Model], json_texts: Mapping[str, Sequence[str | None]]) -> None:
    """One binary COPY of the rows, each value sent as its column's type, read from the table (a
    binary COPY names no types: a value of another type would be misread)."""
    meta, connection = rows[0]._meta, cursor.db
    fields = meta.concrete_fields
    table = connection.ops.quote_name(meta.db_table)
    names = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    cursor.execute(f"SELECT {names} FROM {table} LIMIT 0")
    types = [column.type_code for column in cursor.description]
    columns = [json_texts[f.name] if f.name in json_texts else _column(f, rows, connection) for f in fields]
    # A plain psycopg cursor on Django's connection: same session and transaction.
    copying = psycopg.Cursor(cursor.connection)
    set_json_dumps(_already_encoded, copying)
    with copying.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in zip(*columns, strict=True):
            copy.write_row(row)


def _column(field: models.Field, rows: Sequence[models.Model], connection) -> list:
    """The values of one column, as the ORM would bind them."""
    if type(field).pre_save is models.Field.pre_save:
        # The base pre_save only reads the attribute: read for all rows in one C loop, not a call per row.
        values = list(map(attrgetter(field.attname), rows))
    else:
        values = [field.pre_save(row, add=True) for row in rows]
    if type(field) is models.JSONField:
        return _json_texts(field, values, connection)
    unchanged = _UNCHANGED.get(type(field.target_field if field.is_relation else field))
    prepare = field.get_db_prep_save
    if unchanged is None:
        return [prepare(value, connection) for value in values]
    # These fields all bind None as NULL, foreign keys included.
    return [value if value is None or unchanged(value) else prepare(value, connection) for value in values]


def _json_texts(field: models.JSONField, values: list, connection) -> list[str | None]:
    """What the ORM sends for a JSON column, `json.dumps(value, cls=field.encoder)`, by one encoder."""
    encoder = (field.encoder or json.JSONEncoder)()
    texts = []
    for value in values:
        if type(value) is dict or type(value) is list:
            texts.append(encoder.encode(value))
            continue
        # None (SQL NULL), Value(None, JSONField()) (JSON null), lazy strings...: the field decides, and
        # wraps what it would send in a psycopg Jsonb.
        prepared = field.get_db_prep_save(value, connection)
        texts.append(None if prepared is None else encoder.encode(prepared.obj))
    return texts


def _already_encoded(text: str) -> str:
    # JSON fields' values are texts already (`_json_texts`, or the caller's): psycopg sends them as they are.
    # (Another field's psycopg Jsonb brings its own encoding, which psycopg uses instead.)
    return text
