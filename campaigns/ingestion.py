"""Metric ingestion: validate a whole batch, then upsert it in one transaction.

A batch is all or nothing. Every row is checked first, column by column with pandas (one
query per lookup table, never one per row); any problem rejects the batch with the list of
(row, field, reason), and nothing is written. A valid batch is upserted on the fact key
(segment, creative, variant, bucket_start), so re-sending a bucket replaces it.

Rows are dicts with keys:
  segment (id) or segment_external_id, optional creative (id), optional variant (str),
  bucket_start (ISO-8601 with a UTC offset, or an aware datetime), and the counters of
  `COUNTER_FIELDS` (whole numbers) and `MONEY_FIELDS` (decimals, strings or floats).
  A counter that is absent (or null, or an empty CSV cell) counts 0.

Buckets are aligned in UTC epoch minutes: a bucket start must be a multiple of the
workspace's `metric_bucket_minutes` since 1970-01-01T00:00Z. As bucket lengths divide a day,
that is the same as aligning to UTC midnight; in time zones whose offset is not a multiple of
the bucket (e.g. +05:30 with 60-minute buckets) local days start mid-bucket.
A bucket may not start after now; it may still be filling (partial buckets are re-sent).

Data quality (kept deliberately small): a batch in which a campaign shows spend in a row with
no impressions flags the campaign (`Campaign.data_quality_flag`), and rules skip flagged data;
the next batch without that pattern for the campaign clears the flag.
"""

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache, partial

import numpy as np
import pandas as pd
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, DateTimeField, F, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from accounts.exceptions import ApplicationError
from accounts.models import Workspace
from accounts.roles import Perm
from accounts.services import require_perm
from audit.actors import Actor
from audit.services import audit_record

from .exceptions import BatchRejected, IdempotencyKeyReused
from .models import COUNTER_FIELDS, MONEY_FIELDS, Campaign, Creative, IngestionBatch, MetricFact, Segment
from .signals import metrics_ingested

logger = logging.getLogger(__name__)

MAX_BATCH_ROWS = 200_000
MAX_REPORTED_ERRORS = 1000
MAX_IDEMPOTENCY_KEY_LENGTH = 255
UPSERT_CHUNK_ROWS = 1000  # rows per bulk_create (SQLite bounds its parameters)
ARRAY_UPSERT_CHUNK_ROWS = 20_000  # rows per PostgreSQL statement: bounds its size, not its count
_LOOKUP_CHUNK = 5000  # ids per IN (...) query, well under SQLite's bound-parameter limit
_MAX_COUNT = 10**15  # far above any real bucket, far below the float precision limit (2**53)
_MAX_MONEY = 10**10  # MetricFact money columns hold 14 digits, 4 of them decimals
_MONEY_QUANTUM = Decimal("0.0001")
_MAX_VARIANT_LENGTH = MetricFact._meta.get_field("variant").max_length
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
_OFFSET_AT_END = r"(?:Z|[+-]\d{2}(?::?\d{2})?)$"

ID_COLUMNS = ("segment", "segment_external_id", "creative", "variant", "bucket_start")
ACCEPTED_COLUMNS = frozenset(ID_COLUMNS + COUNTER_FIELDS + MONEY_FIELDS)
FACT_KEY = ("segment", "creative_key", "variant", "bucket_start")
_UPDATED_ON_CONFLICT = [*COUNTER_FIELDS, *MONEY_FIELDS, "ingested_at"]
# The columns the PostgreSQL upsert sends as arrays (workspace and ingested_at are one value per batch).
_ARRAY_FIELDS = ("segment", "campaign", "creative", "creative_key", "variant", "bucket_start",
                 *COUNTER_FIELDS, *MONEY_FIELDS)
_SPEND_WITHOUT_IMPRESSIONS = "Spend without impressions"


@dataclass(frozen=True)
class IngestResult:
    rows_received: int
    rows_created: int
    rows_updated: int
    campaign_ids: list[int]
    replayed: bool = False


def metrics_ingest(
    *, actor: Actor, workspace: Workspace, rows: list[dict], idempotency_key: str | None = None
) -> IngestResult:
    """Validate and upsert metric rows (see the module docstring for their shape)."""
    return _ingest(
        actor=actor, workspace=workspace, source=IngestionBatch.Source.ROWS, key=idempotency_key,
        fingerprint=_fingerprint(b"rows", _canonical_json(rows)), load=partial(_frame_from_rows, rows),
    )


def metrics_ingest_csv(
    *, actor: Actor, workspace: Workspace, file, idempotency_key: str | None = None
) -> IngestResult:
    """Same as `metrics_ingest` for a CSV file (header row = row keys; UTF-8)."""
    content = file.read()
    if isinstance(content, str):
        content = content.encode()
    return _ingest(
        actor=actor, workspace=workspace, source=IngestionBatch.Source.CSV, key=idempotency_key,
        fingerprint=_fingerprint(b"csv", content), load=partial(_frame_from_csv, content),
    )


# --- The transaction ----------------------------------------------------------------------


def _ingest(*, actor, workspace, source, key, fingerprint, load) -> IngestResult:
    require_perm(actor, Perm.PUSH_METRICS, workspace.pk)
    key = _clean_key(key)
    try:
        return _ingest_atomically(
            actor=actor, workspace=workspace, source=source, key=key, fingerprint=fingerprint, load=load
        )
    except IntegrityError:
        # A concurrent request with the same key committed first (its row claimed the unique
        # key while we worked): answer as a replay of it, or as a conflict.
        stored = _stored_batch(workspace, key) if key else None
        if stored is None:
            raise
        return _replay(stored, fingerprint)


@transaction.atomic
def _ingest_atomically(*, actor, workspace, source, key, fingerprint, load) -> IngestResult:
    if key and (stored := _stored_batch(workspace, key)) is not None:
        return _replay(stored, fingerprint)
    now = timezone.now()
    facts = validate_batch(load(), workspace=workspace, now=now)
    rows_updated = _count_existing(facts)
    batch = IngestionBatch.objects.create(
        workspace=workspace, idempotency_key=key, fingerprint=fingerprint, source=source,
        actor_label=actor.label[:150], rows_received=len(facts), rows_created=len(facts) - rows_updated,
        rows_updated=rows_updated, campaign_ids=sorted(int(c) for c in facts["campaign"].unique()),
        bucket_min=_py(facts["bucket_start"].min()), bucket_max=_py(facts["bucket_start"].max()),
    )
    _upsert(facts, workspace_id=workspace.pk, now=now)
    _mark_fresh(facts, now=now)
    flags = _flag_data_quality(facts)
    audit_record(actor=actor, action="metrics.ingest", subject=batch, workspace_id=workspace.pk, after={
        "rows_received": batch.rows_received, "rows_created": batch.rows_created,
        "rows_updated": batch.rows_updated, "campaign_ids": batch.campaign_ids, "source": source,
        "bucket_min": batch.bucket_min, "bucket_max": batch.bucket_max, "idempotency_key": key,
        "data_quality_flags": flags,
    })
    transaction.on_commit(partial(
        _announce, workspace_id=workspace.pk, campaign_ids=batch.campaign_ids,
        segment_ids=sorted(int(s) for s in facts["segment"].unique()),
        bucket_min=batch.bucket_min, bucket_max=batch.bucket_max,
    ))
    return _result_of(batch, replayed=False)


def _clean_key(key: str | None) -> str:
    key = (key or "").strip()
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ApplicationError(f"An Idempotency-Key has at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters.")
    return key


def _stored_batch(workspace: Workspace, key: str) -> IngestionBatch | None:
    return IngestionBatch.objects.filter(workspace=workspace, idempotency_key=key).first()


def _replay(stored: IngestionBatch, fingerprint: str) -> IngestResult:
    if stored.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used for a different payload in this workspace.",
            extra={"idempotency_key": stored.idempotency_key, "batch": stored.pk},
        )
    return _result_of(stored, replayed=True)


def _result_of(batch: IngestionBatch, *, replayed: bool) -> IngestResult:
    return IngestResult(
        rows_received=batch.rows_received, rows_created=batch.rows_created, rows_updated=batch.rows_updated,
        campaign_ids=list(batch.campaign_ids), replayed=replayed,
    )


def _announce(**payload) -> None:
    # After commit: a failing receiver (say, a broker outage) must not turn an ingestion that
    # is already committed into an error for the sender; it is logged, and beat catches up.
    for receiver, outcome in metrics_ingested.send_robust(sender=MetricFact, **payload):
        if isinstance(outcome, Exception):
            logger.error("metrics_ingested receiver %r failed", receiver, exc_info=outcome)


# --- Reading payloads into one frame: object columns, None where a value is absent -------


def _canonical_json(rows) -> bytes:
    return json.dumps(rows, sort_keys=True, default=str, separators=(",", ":")).encode()


def _fingerprint(kind: bytes, content: bytes) -> str:
    return hashlib.sha256(kind + b"\0" + content).hexdigest()


def _frame_from_rows(rows: list[dict]) -> pd.DataFrame:
    if not isinstance(rows, list):
        raise BatchRejected("The rows must be a list of objects.", errors=[])
    not_objects = [i for i, row in enumerate(rows) if not isinstance(row, dict)]
    if not_objects:
        errors = [{"row": i, "field": None, "reason": "not an object"} for i in not_objects]
        raise BatchRejected("Some rows are not objects.", errors=errors[:MAX_REPORTED_ERRORS],
                            error_count=len(errors))
    columns = set().union(*rows) if rows else set()
    return pd.DataFrame(
        {name: pd.Series([row.get(name) for row in rows], dtype=object) for name in sorted(columns)},
        index=pd.RangeIndex(len(rows)),
    )


def _frame_from_csv(content: bytes) -> pd.DataFrame:
    try:
        # All columns as text: the validators below parse and judge every value themselves,
        # the same way for CSV as for JSON. Only an empty cell is "absent".
        frame = pd.read_csv(
            io.BytesIO(content), dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig",
            skipinitialspace=True,
        )
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise BatchRejected(
            "The file is not a readable CSV (UTF-8, comma-separated, header row first).",
            errors=[{"row": None, "field": "file", "reason": str(exc).strip()[:300]}],
        ) from exc
    frame.columns = [str(name).strip() for name in frame.columns]
    frame = frame.astype(object)
    return frame.where(frame.notna(), None).reset_index(drop=True)


# --- Validation ---------------------------------------------------------------------------


class _Problems:
    """Collects (row, field, reason) for whole columns at once."""

    def __init__(self):
        self._found: list[pd.DataFrame] = []

    def add(self, mask: pd.Series, field: str, reason) -> None:
        mask = mask.fillna(False).astype(bool)
        rows = np.flatnonzero(mask.to_numpy())
        if not rows.size:
            return
        reasons = reason[mask].to_numpy() if isinstance(reason, pd.Series) else reason
        self._found.append(pd.DataFrame({"row": rows, "field": field, "reason": reasons}))

    def raise_if_any(self) -> None:
        if not self._found:
            return
        found = pd.concat(self._found, ignore_index=True).sort_values("row", kind="stable")
        errors = [
            {"row": int(row), "field": field, "reason": reason}
            for row, field, reason in found.head(MAX_REPORTED_ERRORS).itertuples(index=False)
        ]
        rows = found["row"].nunique()
        raise BatchRejected(
            f"{len(found)} problem(s) in {rows} row(s); nothing was written.", errors=errors, error_count=len(found)
        )


def validate_batch(frame: pd.DataFrame, *, workspace: Workspace, now) -> pd.DataFrame:
    """Check every row; return the facts to write, or raise BatchRejected listing every problem.

    The result has one row per input row: segment, campaign, creative (id or None),
    creative_key, variant, bucket_start (UTC), the counters (int) and money (Decimal).
    """
    if frame.empty:
        raise BatchRejected("The batch has no rows.", errors=[])
    if len(frame) > MAX_BATCH_ROWS:
        raise BatchRejected(f"A batch has at most {MAX_BATCH_ROWS} rows; split it.", errors=[])
    problems = _Problems()
    for name in sorted(set(frame.columns) - ACCEPTED_COLUMNS):
        problems.add(frame[name].notna(), name, "unknown field")
    segment, campaign = _resolve_segments(frame, workspace, problems)
    creative = _resolve_creatives(frame, workspace, campaign, problems)
    facts = pd.DataFrame({
        "segment": segment,
        "campaign": campaign,
        "creative": creative,
        "creative_key": creative.fillna(0).astype("int64"),
        "variant": _parse_variants(frame, problems),
        "bucket_start": _parse_buckets(frame, workspace, pd.Timestamp(now), problems),
    })
    valid_counts = {}
    for name in COUNTER_FIELDS:
        facts[name], valid_counts[name] = _parse_counts(_column(frame, name), name, problems)
    for name in MONEY_FIELDS:
        facts[name] = _parse_money(_column(frame, name), name, problems)
    both = valid_counts["clicks"] & valid_counts["impressions"]
    problems.add(both & (facts["clicks"] > facts["impressions"]), "clicks", "more clicks than impressions")
    _check_duplicate_keys(facts, problems)
    problems.raise_if_any()
    return facts


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _parse_ids(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Positive whole numbers (as Int64, NA elsewhere), and the mask of values given but not ids."""
    number = pd.to_numeric(raw, errors="coerce")
    valid = np.isfinite(number) & (number > 0) & (number == np.floor(number)) & (number < 2**53)
    return number.where(valid).astype("Int64"), raw.notna() & ~valid


def _lookup(queryset, field: str, values, columns: list[str]) -> pd.DataFrame:
    """Rows of `queryset` whose `field` is in `values`, in chunks (one query per chunk, not per row)."""
    values = list(values)
    found = []
    for start in range(0, len(values), _LOOKUP_CHUNK):
        found.extend(queryset.filter(**{f"{field}__in": values[start:start + _LOOKUP_CHUNK]}).values_list(*columns))
    return pd.DataFrame(found, columns=columns)


def _resolve_segments(frame, workspace, problems) -> tuple[pd.Series, pd.Series]:
    """The segment and campaign ids of each row (Int64, NA where unresolved).

    A row names its segment by id or by the ad platform's id (`segment_external_id`): exactly one.
    """
    by_id, by_external = _column(frame, "segment"), _column(frame, "segment_external_id")
    external = by_external.where(by_external.notna(), "").astype(str).str.strip()
    has_id, has_external = by_id.notna(), external != ""
    problems.add(~has_id & ~has_external, "segment", "required (give segment or segment_external_id)")
    problems.add(has_id & has_external, "segment", "give segment or segment_external_id, not both")
    in_workspace = Segment.objects.filter(campaign__workspace=workspace)
    from_id = _segments_by_id(by_id, in_workspace, problems)
    from_external = _segments_by_external_id(external.where(has_external & ~has_id), in_workspace, problems)
    use_id = has_id & ~has_external
    segment = from_id["segment"].where(use_id, from_external["segment"])
    campaign = from_id["campaign"].where(use_id, from_external["campaign"])
    return segment.astype("Int64"), campaign.astype("Int64")


def _segments_by_id(raw: pd.Series, in_workspace, problems) -> pd.DataFrame:
    ids, bad_ids = _parse_ids(raw)
    problems.add(bad_ids, "segment", "not a valid id")
    known = _lookup(in_workspace, "pk", ids.dropna().unique(), ["pk", "campaign_id"]).set_index("pk")
    campaign = ids.map(known["campaign_id"])
    problems.add(raw.notna() & ~bad_ids & campaign.isna(), "segment", "no such segment in this workspace")
    return pd.DataFrame({"segment": ids.where(campaign.notna()), "campaign": campaign})


def _segments_by_external_id(external: pd.Series, in_workspace, problems) -> pd.DataFrame:
    """`external` holds the external id of the rows that use one, NA elsewhere."""
    matches = _lookup(in_workspace, "external_id", external.dropna().unique(), ["external_id", "pk", "campaign_id"])
    ambiguous = external.isin(matches.loc[matches["external_id"].duplicated(), "external_id"])
    unique = matches.drop_duplicates("external_id", keep=False).set_index("external_id")
    segment = external.map(unique["pk"])
    problems.add(ambiguous, "segment_external_id", "matches several segments in this workspace; send the segment id")
    problems.add(external.notna() & ~ambiguous & segment.isna(), "segment_external_id",
                 "no segment with this external id in this workspace")
    return pd.DataFrame({"segment": segment, "campaign": external.map(unique["campaign_id"])})


def _resolve_creatives(frame, workspace, campaign: pd.Series, problems) -> pd.Series:
    """The creative id of each row (Int64, NA when none was given)."""
    raw = _column(frame, "creative")
    given = raw.notna()
    ids, bad_ids = _parse_ids(raw)
    problems.add(bad_ids, "creative", "not a valid id")
    in_workspace = Creative.objects.filter(campaign__workspace=workspace)
    known = _lookup(in_workspace, "pk", ids.dropna().unique(), ["pk", "campaign_id"]).set_index("pk")
    creative_campaign = ids.map(known["campaign_id"]).astype("Int64")
    problems.add(given & ~bad_ids & creative_campaign.isna(), "creative", "no such creative in this workspace")
    problems.add(creative_campaign.notna() & campaign.notna() & (creative_campaign != campaign),
                 "creative", "belongs to another campaign than the segment")
    return ids


def _parse_variants(frame, problems) -> pd.Series:
    raw = _column(frame, "variant")
    variant = raw.where(raw.notna(), "").astype(str).str.strip().astype(object)
    problems.add(variant.str.len() > _MAX_VARIANT_LENGTH, "variant", f"longer than {_MAX_VARIANT_LENGTH} characters")
    return variant


def _parse_buckets(frame, workspace, now: pd.Timestamp, problems) -> pd.Series:
    raw = _column(frame, "bucket_start")
    given = raw.notna()
    # str() of an aware datetime keeps its offset, so strings and datetimes are judged alike.
    text = raw.where(given).astype(str)
    parsed = pd.to_datetime(text.where(given), utc=True, format="ISO8601", errors="coerce")
    has_offset = text.str.contains(_OFFSET_AT_END, regex=True).fillna(False).astype(bool)
    problems.add(~given, "bucket_start", "required")
    problems.add(given & parsed.isna(), "bucket_start", "not an ISO-8601 date-time")
    problems.add(parsed.notna() & ~has_offset, "bucket_start",
                 "has no UTC offset (e.g. 2026-03-01T14:00:00+01:00 or ...Z)")
    bucket = pd.Timedelta(minutes=workspace.metric_bucket_minutes)
    misaligned = parsed.notna() & ((parsed - _EPOCH) % bucket != pd.Timedelta(0))
    problems.add(misaligned, "bucket_start",
                 f"not the start of a {workspace.metric_bucket_minutes}-minute bucket (aligned in UTC)")
    problems.add(parsed > now, "bucket_start", "in the future")
    return parsed


def _parse_numbers(raw: pd.Series, field: str, maximum: int, problems) -> tuple[pd.Series, pd.Series]:
    """Finite, non-negative numbers below `maximum`: (values, valid mask). Absent means 0."""
    given = ~pd.Series(np.equal(raw.to_numpy(dtype=object), None), index=raw.index)
    number = pd.to_numeric(raw.where(given, 0), errors="coerce").astype("float64")
    finite = pd.Series(np.isfinite(number), index=raw.index)
    problems.add(~finite, field, "not a finite number")
    problems.add(finite & (number < 0), field, "negative")
    problems.add(finite & (number >= maximum), field, f"too large (must be below {maximum:.0e})")
    return number, finite & (number >= 0) & (number < maximum)


def _parse_counts(raw: pd.Series, field: str, problems) -> tuple[pd.Series, pd.Series]:
    number, valid = _parse_numbers(raw, field, _MAX_COUNT, problems)
    fractional = valid & (number != np.floor(number))
    problems.add(fractional, field, "not a whole number")
    valid &= ~fractional
    return number.where(valid, 0).astype("int64"), valid


def _parse_money(raw: pd.Series, field: str, problems) -> pd.Series:
    _, valid = _parse_numbers(raw, field, _MAX_MONEY, problems)
    # Decimal from the value's text, not from the float: "0.1" stays exactly 0.1.
    amounts = raw.where(valid & raw.notna(), 0)
    return pd.Series(
        [Decimal(str(v).strip()).quantize(_MONEY_QUANTUM, ROUND_HALF_EVEN) for v in amounts],
        index=raw.index, dtype=object,
    )


def _check_duplicate_keys(facts: pd.DataFrame, problems) -> None:
    keyed = facts.loc[facts["segment"].notna() & facts["bucket_start"].notna(), list(FACT_KEY)]
    if keyed.empty:
        return
    first_row = keyed.reset_index().groupby(list(FACT_KEY), sort=False)["index"].transform("min")
    first_row.index = keyed.index
    repeated = first_row != keyed.index.to_series()
    reason = "same segment, creative, variant and bucket_start as row " + first_row.astype(str)
    problems.add(repeated.reindex(facts.index, fill_value=False), "bucket_start",
                 reason.reindex(facts.index))


# --- Writing ------------------------------------------------------------------------------


def _py(timestamp: pd.Timestamp):
    return timestamp.to_pydatetime()


def _comparable_keys(keys: pd.DataFrame) -> pd.DataFrame:
    # Plain ints and strings on both sides: datetimes of different resolutions or nullable
    # integers would not compare equal in a merge.
    return keys.assign(
        segment=keys["segment"].astype("int64"),
        creative_key=keys["creative_key"].astype("int64"),
        variant=keys["variant"].astype(str),
        bucket_start=(pd.to_datetime(keys["bucket_start"], utc=True) - _EPOCH) // pd.Timedelta(microseconds=1),
    )


def _count_existing(facts: pd.DataFrame) -> int:
    """How many of the batch's keys are already stored (they will be updated, not created).

    Exact unless another batch writes the same keys concurrently; the upsert stays correct then.
    """
    in_range = MetricFact.objects.filter(
        bucket_start__gte=_py(facts["bucket_start"].min()), bucket_start__lte=_py(facts["bucket_start"].max())
    )
    stored = _lookup(in_range, "segment_id", facts["segment"].unique().tolist(),
                     ["segment_id", "creative_key", "variant", "bucket_start"])
    if stored.empty:
        return 0
    stored = _comparable_keys(stored.rename(columns={"segment_id": "segment"}))
    return len(_comparable_keys(facts[list(FACT_KEY)]).merge(stored, on=list(FACT_KEY), how="inner"))


def _upsert(facts: pd.DataFrame, *, workspace_id: int, now) -> None:
    # Rows in key order: two batches touching the same facts then lock them in the same
    # order, so on PostgreSQL one waits for the other instead of deadlocking.
    facts = facts.sort_values(list(FACT_KEY), kind="stable")
    if connection.vendor == "postgresql":
        _upsert_from_arrays(facts, workspace_id=workspace_id, now=now)
    else:
        _upsert_with_orm(facts, workspace_id=workspace_id, now=now)


def _upsert_with_orm(facts: pd.DataFrame, *, workspace_id: int, now) -> None:
    buckets = [_py(t) for t in facts["bucket_start"]]
    fields = facts.drop(columns="bucket_start").rename(
        columns={"segment": "segment_id", "campaign": "campaign_id", "creative": "creative_id"}
    )
    fields["creative_id"] = fields["creative_id"].astype(object).where(fields["creative_id"].notna(), None)
    objects = [
        MetricFact(workspace_id=workspace_id, bucket_start=bucket, ingested_at=now, **row)
        for row, bucket in zip(fields.to_dict("records"), buckets, strict=True)
    ]
    for start in range(0, len(objects), UPSERT_CHUNK_ROWS):
        MetricFact.objects.bulk_create(
            objects[start:start + UPSERT_CHUNK_ROWS], update_conflicts=True,
            unique_fields=list(FACT_KEY), update_fields=_UPDATED_ON_CONFLICT,
        )


def _upsert_from_arrays(facts: pd.DataFrame, *, workspace_id: int, now) -> None:
    """PostgreSQL: one INSERT ... SELECT FROM unnest(<one array per column>) ON CONFLICT per chunk.

    `bulk_create` prepares every value of every row through its model field, which costs
    several times the database's own work; the validated columns already hold the right
    types, so they go to the database as whole arrays. WITH ORDINALITY keeps the key order.
    """
    statement = _array_upsert_statement()
    for start in range(0, len(facts), ARRAY_UPSERT_CHUNK_ROWS):
        arrays = _column_arrays(facts.iloc[start:start + ARRAY_UPSERT_CHUNK_ROWS])
        with connection.cursor() as cursor:
            cursor.execute(statement, [workspace_id, now, *(arrays[name] for name in _ARRAY_FIELDS)])


def _column_arrays(facts: pd.DataFrame) -> dict:
    """Each of `_ARRAY_FIELDS` as one array parameter (None for NULL)."""
    creative = facts["creative"].astype(object)
    return {
        "segment": _numbers_literal(facts["segment"].astype("int64")),
        "campaign": _numbers_literal(facts["campaign"].astype("int64")),
        "creative": creative.where(creative.notna(), None).tolist(),
        "variant": facts["variant"].tolist(),
        "bucket_start": list(facts["bucket_start"].dt.to_pydatetime()),
        **{name: _numbers_literal(facts[name]) for name in ("creative_key", *COUNTER_FIELDS, *MONEY_FIELDS)},
    }


def _numbers_literal(numbers: pd.Series) -> str:
    """A PostgreSQL array literal of integers or Decimals, which need no quoting: psycopg would
    adapt a list element by element, and that is most of the statement's cost in Python."""
    return "{" + ",".join(map(str, numbers.tolist())) + "}"


@cache
def _array_upsert_statement() -> str:
    """The SQL of `_upsert_from_arrays` (parameters: workspace id, ingested_at, then one array per field)."""

    def column(name):
        return connection.ops.quote_name(MetricFact._meta.get_field(name).column)

    arrays = ", ".join(
        f"%s::{MetricFact._meta.get_field(name).cast_db_type(connection)}[]" for name in _ARRAY_FIELDS
    )
    given = ", ".join(column(name) for name in _ARRAY_FIELDS)
    return (
        f"INSERT INTO {connection.ops.quote_name(MetricFact._meta.db_table)} "
        f"({column('workspace')}, {column('ingested_at')}, {given}) "
        f"SELECT %s, %s, {given} FROM unnest({arrays}) WITH ORDINALITY AS incoming ({given}, position) "
        f"ORDER BY position "
        f"ON CONFLICT ({', '.join(column(name) for name in FACT_KEY)}) DO UPDATE SET "
        + ", ".join(f"{column(name)} = EXCLUDED.{column(name)}" for name in _UPDATED_ON_CONFLICT)
    )


def _per_campaign(values: pd.Series, output_field) -> Case:
    return Case(*(When(pk=int(pk), then=Value(value)) for pk, value in values.items()), output_field=output_field)


def _mark_fresh(facts: pd.DataFrame, *, now) -> None:
    """Stamp arrival time, and raise (never lower) the newest bucket seen, in one UPDATE."""
    latest = facts.groupby("campaign")["bucket_start"].max().map(_py)
    batch_latest = _per_campaign(latest, DateTimeField())
    Campaign.objects.filter(pk__in=latest.index.tolist()).update(
        metrics_received_at=now,
        metrics_latest_bucket=Greatest(Coalesce(F("metrics_latest_bucket"), batch_latest), batch_latest),
    )


def _flag_data_quality(facts: pd.DataFrame) -> dict[int, str]:
    """Set or clear each touched campaign's flag; returns the flags set, for the audit event."""
    suspicious = facts[(facts["spend"] > 0) & (facts["impressions"] == 0)]
    first_bucket = suspicious.groupby("campaign")["bucket_start"].min()
    rows = suspicious.groupby("campaign").size()
    flags = pd.Series("", index=pd.Index(facts["campaign"].unique(), name="campaign"), dtype=object)
    for campaign, bucket in first_bucket.items():
        flags[campaign] = (
            f"{_SPEND_WITHOUT_IMPRESSIONS} in {rows[campaign]} row(s) of the latest batch, "
            f"first in bucket {bucket:%Y-%m-%d %H:%M} UTC."
        )
    Campaign.objects.filter(pk__in=[int(pk) for pk in flags.index]).update(
        data_quality_flag=_per_campaign(flags, Campaign._meta.get_field("data_quality_flag"))
    )
    return {int(pk): flag for pk, flag in flags.items() if flag}
