"""Reproducible performance benchmarks of the rules platform (`python -m benchmarks`, `make bench`).

Three figures, each timed against a plain baseline measured in the same run:

(a) `evaluation` — one evaluation cycle of many rules over many segments' hourly facts,
    against one plain SQL aggregate over the same facts and time range;
(b) `ingestion`  — rows/s through `metrics_ingest`, against a raw bulk insert of the same rows;
(c) `latency`    — metrics in to change applied, through a real Celery worker on Redis.

`benchmarks.database` picks and creates the dedicated benchmark database before Django starts;
everything else runs inside a configured Django (the smoke tests call it on the test database).
"""
