"""Reading `SegmentRunningTotal`: a segment's totals up to each of some boundaries (PostgreSQL).

The running totals are kept by triggers on the facts table (migration
0005_segment_running_total_triggers), so the sum of any range of buckets is the difference of
the totals at its two ends, whatever the range's length: a read of segments x boundaries rows
instead of every fact in the span.

The totals before a boundary are in the row of the bucket just before it; a segment without
facts in that bucket has no row there, and then holds the total of its latest row before the
boundary (read in a second query for just those pairs), or 0 before its first row.
"""

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from django.db import connections, router, transaction
from psycopg import ClientCursor

from .metrics import VIRTUAL_DENOMINATORS, DerivedMetric
from .models import SegmentRunningTotal

# Binary COPY: a 19-byte header, then per row a 16-bit field count and each field's 32-bit length
# before its value (no field is NULL here), and a 16-bit trailer.
_HEADER_BYTES, _TRAILER_BYTES = 19, 2


def moment_columns(metric: DerivedMetric) -> tuple[str | None, str | None, str]:
    """The running-total columns of a ratio metric's per-bucket moments: count, sum, sum of squares.

    Against a virtual denominator (the pro-rated budget), every bucket counts and only the
    squares of the numerator are stored: None for the others."""
    if metric.denominator in VIRTUAL_DENOMINATORS:
        return None, None, f"{metric.numerator}_squares"
    return f"{metric.name}_buckets", f"{metric.name}_sum", f"{metric.name}_squares"


def running_totals_before(*, workspace_id: int, segment_ids: np.ndarray, boundaries: list[datetime],
                          bucket_minutes: int, columns: list[str]) -> np.ndarray:
    """The `columns` of each segment summed over every bucket before each boundary:
    an array (boundaries, segments, columns)."""
    using = router.db_for_read(SegmentRunningTotal)
    totals = np.zeros((len(boundaries), len(segment_ids), len(columns)))
    found = np.zeros((len(boundaries), len(segment_ids)), dtype=bool)
    if not (len(segment_ids) and boundaries and columns):
        return totals
    step = timedelta(minutes=bucket_minutes)
    epochs = pd.Index([int((b - step).timestamp()) for b in boundaries])
    # By workspace and bucket only: the (workspace, bucket) index then reads whole runs of rows, as
    # triggers write them in bucket order; rows of other segments are dropped here.
    rows = _copy_rows(using, "SELECT {} FROM {} r WHERE workspace_id = %s AND bucket_start = ANY(%s)", columns,
                      [workspace_id, [b - step for b in boundaries]])
    _place(totals, found, rows, epochs, segment_ids)
    at, row = np.nonzero(~found)
    if len(at):
        # Lateral: for each pair, one backward step in the (segment, bucket_start) unique index.
        rows = _copy_rows(using, "SELECT {} FROM unnest(%s::bigint[], %s::timestamptz[]) AS p (segment_id, "
                          "bucket_start) CROSS JOIN LATERAL (SELECT * FROM {} r WHERE r.segment_id = p.segment_id "
                          "AND r.bucket_start <= p.bucket_start ORDER BY r.bucket_start DESC LIMIT 1) r", columns,
                          [segment_ids[row].tolist(), [boundaries[i] - step for i in at]], anchor="p")
        _place(totals, found, rows, epochs, segment_ids)
    return totals


def _copy_rows(using: str, template: str, columns: list[str], params: list, *, anchor: str = "r") -> np.ndarray:
    """Run the query through a binary COPY into a structured array: segment, epoch, columns."""
    select = ", ".join([f"{anchor}.segment_id::int8", f"extract(epoch FROM {anchor}.bucket_start)::int8",
                        *(f"r.{c}::float8" for c in columns)])
    sql = template.format(select, SegmentRunningTotal._meta.db_table)
    fields = [("count", ">i2"), ("l_segment", ">i4"), ("segment", ">i8"), ("l_epoch", ">i4"), ("epoch", ">i8")]
    fields += [item for k in range(len(columns)) for item in ((f"l{k}", ">i4"), (f"c{k}", ">f8"))]
    data, connection = bytearray(), connections[using]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute("SET LOCAL jit = off")  # compiling costs more than it saves on a query this short
        # COPY takes no bound parameters: they are merged into its text, as a client-side cursor does.
        statement = ClientCursor(connection.connection).mogrify(f"COPY ({sql}) TO STDOUT (FORMAT binary)", params)
        with cursor.copy(statement) as copy:
            for chunk in copy:
                data += chunk
    return np.frombuffer(memoryview(data)[_HEADER_BYTES:len(data) - _TRAILER_BYTES], dtype=np.dtype(fields))


def _place(totals: np.ndarray, found: np.ndarray, rows: np.ndarray, epochs: pd.Index, segment_ids: np.ndarray):
    at = epochs.get_indexer(rows["epoch"].astype(np.int64))
    row = pd.Index(segment_ids).get_indexer(rows["segment"].astype(np.int64))
    keep = (at >= 0) & (row >= 0)
    values = np.stack([rows[f"c{k}"] for k in range(totals.shape[2])], axis=1).astype(float)
    totals[at[keep], row[keep]] = values[keep]
    found[at[keep], row[keep]] = True
