"""How big a benchmark run is, and what each figure must reach."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    segments: int
    days: int  # of hourly facts behind the evaluation
    rules: int
    ingest_rows: int  # rows pushed through the ingestion service for (b)
    ingest_batch_rows: int  # rows per `metrics_ingest` call (one API request)
    latency_samples: int  # metrics-in -> change-applied measurements for (c)
    segments_per_campaign: int = 100

    @property
    def campaigns(self) -> int:
        # At least one campaign per channel, so that every rule scope has segments.
        return max(5, -(-self.segments // self.segments_per_campaign))

    @property
    def facts(self) -> int:
        return self.segments * self.days * 24


PRESETS = {
    # The figures of the issue: 1,000 rules, 10,000 segments, 14 days of hourly facts (3.36 M).
    "full": Scale(segments=10_000, days=14, rules=1_000, ingest_rows=50_000, ingest_batch_rows=10_000,
                  latency_samples=20),
    # A minute or two on a laptop, SQLite included.
    "quick": Scale(segments=1_000, days=14, rules=100, ingest_rows=10_000, ingest_batch_rows=5_000,
                   latency_samples=10),
}


@dataclass(frozen=True)
class Target:
    figure: str  # key of the figure in the benchmark's results
    comparison: str  # "<=" or ">="
    value: float
    unit: str

    def met_by(self, measured: float | None) -> bool | None:
        if measured is None:
            return None
        return measured <= self.value if self.comparison == "<=" else measured >= self.value


TARGETS = {
    "evaluation": Target("ratio", "<=", 3.0, "× the plain SQL aggregate"),
    "ingestion": Target("ratio", ">=", 0.3, "× a raw bulk insert"),
    "latency": Target("p95_s", "<=", 5.0, "s (p95)"),
}
