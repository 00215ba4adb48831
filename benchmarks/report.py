"""The figures as a table (with targets and PASS / MISS) and as JSON."""

import json
from pathlib import Path

from .scale import TARGETS

LAST_RESULTS = Path(__file__).resolve().parent / "last_results.json"


def verdicts(results: dict) -> dict[str, str]:
    """PASS, MISS or SKIPPED per figure."""
    return {name: _verdict(results.get(name), name) for name in TARGETS}


def table(results: dict) -> str:
    lines = [_context(results), ""]
    rows = [("figure", "measured", "baseline", "result", "target", "verdict")]
    rows += _evaluation_rows(results.get("evaluation"))
    rows += _ingestion_rows(results.get("ingestion"))
    rows += _latency_rows(results.get("latency"), results.get("latency_skipped"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines + ["", *_details(results)])


def write_json(results: dict, path: Path = LAST_RESULTS) -> None:
    path.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")


def _context(results: dict) -> str:
    scale, market = results["scale"], results["market"]
    return (f"Database: {results['database']} | {scale['segments']:,} segments, {scale['days']} days of hourly "
            f"facts ({market['facts']:,} loaded in {market['load_s']:.0f} s), {scale['rules']:,} rules | "
            f"{results['started_at']}")


def _verdict(results_part: dict | None, name: str) -> str:
    target = TARGETS[name]
    met = target.met_by(results_part.get(target.figure)) if results_part else None
    return "SKIPPED" if met is None else ("PASS" if met else "MISS")


def _target(name: str) -> str:
    target = TARGETS[name]
    return f"{target.comparison} {target.value:g} {target.unit}"


def _evaluation_rows(figures: dict | None) -> list[tuple]:
    if not figures:
        return []
    return [(
        f"(a) evaluation cycle, {figures['rules']:,} rules / {figures['scopes']:,} scopes",
        f"{figures['cycle_s']:.2f} s", f"{figures['baseline_s']:.2f} s (1 GROUP BY)",
        f"{figures['ratio']:.1f}×", _target("evaluation"), _verdict(figures, "evaluation"),
    )]


def _ingestion_rows(figures: dict | None) -> list[tuple]:
    if not figures:
        return []
    return [(
        f"(b) ingestion, {figures['rows']:,} rows in {figures['batches']} batches",
        f"{figures['service_rows_per_s']:,.0f} rows/s", f"{figures['raw_rows_per_s']:,.0f} rows/s "
        f"({figures['raw_method']})", f"{figures['ratio']:.2f}×", _target("ingestion"),
        _verdict(figures, "ingestion"),
    )]


def _latency_rows(figures: dict | None, skipped: str | None) -> list[tuple]:
    if not figures:
        return [("(c) metrics in -> change applied", "-", "-", "-", _target("latency"),
                 f"SKIPPED ({skipped})" if skipped else "SKIPPED")]
    return [(
        f"(c) metrics in -> change applied, {figures['samples']} samples",
        f"p50 {figures['p50_s']:.2f} s, max {figures['max_s']:.2f} s", "-", f"p95 {figures['p95_s']:.2f} s",
        _target("latency"), _verdict(figures, "latency"),
    )]


def _details(results: dict) -> list[str]:
    lines = []
    evaluation = results.get("evaluation")
    if evaluation:
        lines += [
            f"(a) per rule {evaluation['per_rule_ms']:.1f} ms; {evaluation['queries']:,} queries "
            f"({evaluation['query_s']:.2f} s in Django's queries); {evaluation['counter_reads']:,} reads of counters "
            f"({evaluation['counter_read_s']:.2f} s); span {evaluation['span_hours']} h, "
            f"{evaluation['facts_in_span']:,} facts; baseline runs "
            + ", ".join(f"{s:.2f}" for s in evaluation["baseline_runs_s"]) + " s",
            f"    before the cycle, {evaluation['rollup_days']} day(s) rolled up in "
            f"{evaluation['rollup_refresh_s']:.1f} s (not timed: the beat task refresh_metric_days does it); "
            "the cycle read "
            f"{evaluation['fact_rows_read']:,} fact rows and {evaluation['rollup_rows_read']:,} rollup rows",
            f"    outcomes {evaluation['outcomes']}; changes {evaluation['changes']}",
        ]
    ingestion = results.get("ingestion")
    if ingestion:
        lines.append(f"(b) raw {ingestion['raw_s']:.2f} s, service {ingestion['service_s']:.2f} s "
                     f"({ingestion['rows_created']:,} rows created)")
    latency = results.get("latency")
    if latency:
        lines.append(f"(c) ingestion call p50 {latency['ingest_p50_s']:.2f} s of each sample")
    return lines
