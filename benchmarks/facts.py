"""Raw bulk inserts of simulated metric facts: PostgreSQL COPY, or `bulk_create` elsewhere.

This is how the benchmark loads millions of facts quickly, and the "raw bulk insert" that the
ingestion service is measured against: no validation, no upsert, no audit — just the rows.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal

import numpy as np
import pandas as pd
from django.db import connection

from campaigns.models import COUNTER_FIELDS, MONEY_FIELDS, MetricFact

BULK_CREATE_BATCH_ROWS = 5_000
_COPY_CHUNK_ROWS = 100_000


def insert_facts(frame: pd.DataFrame, *, workspace_id: int, ingested_at: datetime) -> int:
    """Insert the simulator's rows (`campaigns.simulator.OUTPUT_COLUMNS`) as new facts; returns the count."""
    if frame.empty:
        return 0
    if connection.vendor == "postgresql":
        _copy(frame, workspace_id=workspace_id, ingested_at=ingested_at)
    else:
        _bulk_create(frame, workspace_id=workspace_id, ingested_at=ingested_at)
    return len(frame)


@contextmanager
def indexes_built_after() -> Iterator[None]:
    """On PostgreSQL, drop the facts table's secondary indexes and unique constraints for a bulk
    load and build them once at the end, as pg_restore does: a sort per index instead of millions
    of scattered B-tree inserts (the load rate halves as the indexes outgrow memory otherwise)."""
    if connection.vendor != "postgresql":
        yield
        return
    table = MetricFact._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                       "WHERE conrelid = %s::regclass AND contype = 'u'", [table])
        constraints = cursor.fetchall()
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
                       "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)", [table, table])
        indexes = cursor.fetchall()
        for name, _ in constraints:
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            # Inside a transaction (tests), deferred foreign-key checks still pending on the
            # rows would forbid CREATE INDEX: run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for _, definition in indexes:
                cursor.execute(definition)
            for name, definition in constraints:
                cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')


def _copy(frame: pd.DataFrame, *, workspace_id: int, ingested_at: datetime) -> None:
    table = pd.DataFrame({
        "workspace_id": workspace_id,
        "campaign_id": frame["campaign"].to_numpy(),
        "segment_id": frame["segment"].to_numpy(),
        "creative_key": 0,
        "variant": "",
        "bucket_start": frame["bucket_start"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_numpy(),
        **{name: frame[name].to_numpy() for name in (*COUNTER_FIELDS, *MONEY_FIELDS)},
        "ingested_at": ingested_at.isoformat(),
    })
    columns = ", ".join(MetricFact._meta.get_field(_field_name(c)).column for c in table.columns)
    # CSV reads an empty unquoted field as NULL: FORCE_NOT_NULL keeps the empty variant a string.
    statement = (f"COPY {MetricFact._meta.db_table} ({columns}) FROM STDIN "
                 f"WITH (FORMAT csv, FORCE_NOT_NULL (variant))")
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        for start in range(0, len(table), _COPY_CHUNK_ROWS):
            chunk = table.iloc[start:start + _COPY_CHUNK_ROWS]
            copy.write(chunk.to_csv(header=False, index=False, float_format="%.2f"))


def _field_name(column: str) -> str:
    return column.removesuffix("_id") if column in ("workspace_id", "campaign_id", "segment_id") else column


def _bulk_create(frame: pd.DataFrame, *, workspace_id: int, ingested_at: datetime) -> None:
    counters = {name: frame[name].to_numpy(dtype=np.int64).tolist() for name in COUNTER_FIELDS}
    money = {name: [Decimal(f"{v:.2f}") for v in frame[name].to_numpy()] for name in MONEY_FIELDS}
    segments = frame["segment"].to_numpy(dtype=np.int64).tolist()
    campaigns = frame["campaign"].to_numpy(dtype=np.int64).tolist()
    buckets = [ts.to_pydatetime() for ts in frame["bucket_start"]]
    objects = (
        MetricFact(workspace_id=workspace_id, campaign_id=campaigns[i], segment_id=segments[i],
                   bucket_start=buckets[i], ingested_at=ingested_at,
                   **{name: values[i] for name, values in (counters | money).items()})
        for i in range(len(segments))
    )
    MetricFact.objects.bulk_create(objects, batch_size=BULK_CREATE_BATCH_ROWS)

