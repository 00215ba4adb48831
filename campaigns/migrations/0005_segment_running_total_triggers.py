"""On PostgreSQL, triggers on the facts table keep `SegmentRunningTotal` exact in the writing transaction.

One AFTER trigger per event (transition tables allow one event per trigger; an INSERT ... ON
CONFLICT DO UPDATE fires the INSERT one with the inserted rows and the UPDATE one with the
updated rows), all set-based, per statement:
  1. the touched (segment, bucket) pairs, with the sums of the statement's new rows;
  2. a bucket's old contribution is its running row minus the segment's running row before it
     (0 without a row), its new totals are read again from the facts; a bucket without a running
     row had no facts before the statement, so its totals are those of the new rows (this keeps
     a bulk COPY, whose facts table may be without indexes meanwhile, from reading the facts);
  3. the changes summed per segment from its first touched bucket on: a missing row is inserted
     with the row before it plus the changes so far, and every existing row from a touched bucket
     up to the next one takes the changes summed so far (one index range per touched bucket, so a
     back-dated write costs the rows after it, and an appended hour costs only its own rows).
The statement is large and runs once per writing statement: JIT compilation would cost seconds
for nothing. Its joins are index probes (a few touched buckets against a large table); the
planner, which cannot know how few rows a transition table holds, is kept from hashing the
whole running table.
A BEFORE trigger first takes a self-conflicting lock on the running totals: writers of facts
run one after the other (each statement reads running rows, then updates rows it did not
read), and taking it before any fact row is written keeps them from deadlocking on facts.
The columns are frozen here, as a migration must be: a new counter or ratio metric needs a
migration that replaces these functions.
SQLite has no triggers of this kind: the rules engine sums the facts there instead.
"""

from django.db import migrations

FACTS, RUNNING = "campaigns_metricfact", "campaigns_segmentrunningtotal"
COUNTERS = ("impressions", "clicks", "conversions", "micro_conversions", "sessions", "engaged_seconds", "bounces",
            "video_starts", "video_completions", "revenue", "spend")
# Ratio metrics judged on per-bucket values: (metric, numerator, denominator).
RATIOS = (("cpa", "spend", "conversions"), ("cpc", "spend", "clicks"), ("cpm", "spend", "impressions"),
          ("roas", "revenue", "spend"), ("avg_dwell", "engaged_seconds", "sessions"))


def _contributions(x: str) -> dict[str, str]:
    """Column -> what one bucket with totals `x` adds to it (0 where `x` is NULL: no facts)."""
    columns = {c: f"COALESCE({x}.{c}, 0)" for c in COUNTERS}
    for name, num, den in RATIOS:
        has, ratio = f"{x}.{den} > 0", f"{x}.{num} / {x}.{den}"
        columns |= {f"{name}_buckets": f"CASE WHEN {has} THEN 1 ELSE 0 END",
                    f"{name}_sum": f"CASE WHEN {has} THEN {ratio} ELSE 0 END",
                    f"{name}_squares": f"CASE WHEN {has} THEN ({ratio}) * ({ratio}) ELSE 0 END"}
    return columns | {"spend_squares": f"COALESCE({x}.spend * {x}.spend, 0)"}


VALUES = list(_contributions("x"))


def _each(template: str, sep: str = ", ") -> str:
    return sep.join(template.format(v=v) for v in VALUES)


def _rows(transition: str, *, new: bool) -> str:
    sums = ", ".join(f"{c}::float8 AS {c}" if new else f"0::float8 AS {c}" for c in COUNTERS)
    return f"SELECT workspace_id, segment_id, bucket_start, {str(new).lower()} AS is_new, {sums} FROM {transition}"


def _maintain(rows: str) -> str:
    """The statement that brings the running totals up to date with the changed `rows`."""
    pair = "{a}.segment_id = {b}.segment_id AND {a}.bucket_start = {b}.bucket_start"
    contributed, inserted = _contributions("x"), _contributions("s")
    return f"""
WITH touched AS (
    SELECT workspace_id, segment_id, bucket_start, bool_or(is_new) AS is_new,
           {', '.join(f'SUM({c}) AS {c}' for c in COUNTERS)}
    FROM ({rows}) AS changed GROUP BY workspace_id, segment_id, bucket_start
), steps AS (
    -- Each touched bucket with, as they were before the statement, its running row and the one before it.
    SELECT t.*, cur.id, {_each('cur.{v} AS cur_{v}')}, {_each('prev.{v} AS prev_{v}')}
    FROM touched t
    LEFT JOIN {RUNNING} cur ON {pair.format(a='cur', b='t')}
    LEFT JOIN LATERAL (
        SELECT * FROM {RUNNING} p WHERE p.segment_id = t.segment_id AND p.bucket_start < t.bucket_start
        ORDER BY p.bucket_start DESC LIMIT 1) prev ON true
), totals AS (
    SELECT f.segment_id, f.bucket_start, {', '.join(f'SUM(f.{c})::float8 AS {c}' for c in COUNTERS)}
    FROM steps s JOIN {FACTS} f ON {pair.format(a='f', b='s')} WHERE s.id IS NOT NULL
    GROUP BY f.segment_id, f.bucket_start
), deltas AS (
    -- New contribution minus old (the running row minus the one before it, or nothing without a row).
    SELECT s.workspace_id, s.segment_id, s.bucket_start, s.id, s.is_new, {_each('s.prev_{v}')},
           {', '.join(f'CASE WHEN s.id IS NULL THEN {inserted[v]} '
                      f'ELSE {contributed[v]} - (s.cur_{v} - COALESCE(s.prev_{v}, 0)) END AS d_{v}' for v in VALUES)}
    FROM steps s LEFT JOIN totals x ON {pair.format(a='x', b='s')}
), cumulated AS (
    SELECT d.*, {_each('SUM(d.d_{v}) OVER w AS cum_{v}')}, LEAD(d.bucket_start) OVER w AS until
    FROM deltas d WINDOW w AS (PARTITION BY d.segment_id ORDER BY d.bucket_start)
), inserted AS (
    -- In bucket order: the engine reads all segments at a few buckets, from fewer pages so.
    INSERT INTO {RUNNING} (workspace_id, segment_id, bucket_start, {', '.join(VALUES)})
    SELECT workspace_id, segment_id, bucket_start, {_each('COALESCE(prev_{v}, 0) + cum_{v}')}
    FROM cumulated WHERE id IS NULL AND is_new ORDER BY bucket_start, segment_id
)
-- Every row from a touched bucket up to the next one takes the changes summed so far.
UPDATE {RUNNING} r SET {_each('{v} = r.{v} + c.cum_{v}')}
FROM cumulated c
WHERE r.segment_id = c.segment_id AND r.bucket_start >= c.bucket_start
      AND (c.until IS NULL OR r.bucket_start < c.until) AND ({_each('c.cum_{v} <> 0', ' OR ')})"""


def _function(name: str, rows: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $$
BEGIN
    {_maintain(rows)};
    RETURN NULL;
END;
$$ LANGUAGE plpgsql SET work_mem = '256MB' SET jit = off SET enable_hashjoin = off SET enable_mergejoin = off;
"""


_EVENTS = {  # event -> (REFERENCING clause, changed rows)
    "insert": ("NEW TABLE AS new_facts", _rows("new_facts", new=True)),
    "update": ("OLD TABLE AS old_facts NEW TABLE AS new_facts",
               f"{_rows('new_facts', new=True)} UNION ALL {_rows('old_facts', new=False)}"),
    "delete": ("OLD TABLE AS old_facts", _rows("old_facts", new=False)),
}

_BACKFILL = f"""
INSERT INTO {RUNNING} (workspace_id, segment_id, bucket_start, {', '.join(VALUES)})
SELECT workspace_id, segment_id, bucket_start,
       {', '.join(f'SUM({e}) OVER w' for e in _contributions('x').values())}
FROM (SELECT workspace_id, segment_id, bucket_start, {', '.join(f'SUM({c})::float8 AS {c}' for c in COUNTERS)}
      FROM {FACTS} GROUP BY workspace_id, segment_id, bucket_start) x
WINDOW w AS (PARTITION BY segment_id ORDER BY bucket_start)
"""

_CREATE = "\n".join([
    f"""
CREATE OR REPLACE FUNCTION metricfact_running_totals_lock() RETURNS trigger AS $$
BEGIN
    LOCK TABLE {RUNNING} IN SHARE ROW EXCLUSIVE MODE;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER metricfact_running_totals_lock BEFORE INSERT OR UPDATE OR DELETE ON {FACTS}
    FOR EACH STATEMENT EXECUTE FUNCTION metricfact_running_totals_lock();
""",
    *(_function(f"metricfact_running_totals_after_{event}", rows) + f"""
CREATE TRIGGER metricfact_running_totals_after_{event} AFTER {event.upper()} ON {FACTS}
    REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION metricfact_running_totals_after_{event}();
""" for event, (referencing, rows) in _EVENTS.items()),
    _BACKFILL,
])

_DROP = "\n".join(
    f"DROP TRIGGER IF EXISTS metricfact_running_totals_{suffix} ON {FACTS};\n"
    f"DROP FUNCTION IF EXISTS metricfact_running_totals_{suffix}();"
    for suffix in ("lock", "after_insert", "after_update", "after_delete")
) + f"\nDELETE FROM {RUNNING};"


def _on_postgresql(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0004_segmentrunningtotal")]

    operations = [migrations.RunPython(_on_postgresql(_CREATE), _on_postgresql(_DROP))]
