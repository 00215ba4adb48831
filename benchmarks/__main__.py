"""`python -m benchmarks [--scale quick|full] [...]` (or `make bench BENCH_ARGS="..."`).

Creates (drops and re-creates) the dedicated benchmark database — see `benchmarks.database`;
PostgreSQL when `DATABASE_URL` names a PostgreSQL server — migrates it, runs the benchmarks,
prints the table of figures and writes them to `benchmarks/last_results.json`. The latency
benchmark needs Redis (`--redis-url`); without it, it is reported as skipped.
"""

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import redis

from .database import benchmark_database_url, recreate_database
from .scale import PRESETS

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/10"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(PRESETS), default="quick",
                        help="preset: quick (default, a minute or two) or full (the issue's figures)")
    parser.add_argument("--segments", type=int, help="override the preset's number of segments")
    parser.add_argument("--days", type=int, help="days of hourly facts")
    parser.add_argument("--rules", type=int, help="number of active rules")
    parser.add_argument("--ingest-rows", type=int, help="rows pushed through the ingestion service")
    parser.add_argument("--ingest-batch-rows", type=int, help="rows per ingestion call")
    parser.add_argument("--samples", type=int, dest="latency_samples", help="latency samples (0 skips them)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
                        help=f"broker of the latency benchmark (default $BENCH_REDIS_URL or {DEFAULT_REDIS_URL})")
    parser.add_argument("--worker", choices=("process", "thread"), default="process",
                        help="a `celery worker` subprocess (default) or a worker thread in this process")
    parser.add_argument("--profile", action="store_true", help="profile the evaluation cycle (cProfile)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    return parser.parse_args(argv)


def scale_from(args: argparse.Namespace):
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(PRESETS[args.scale])
                 if getattr(args, f.name, None) is not None}
    return dataclasses.replace(PRESETS[args.scale], **overrides)


def redis_problem(url: str) -> str:
    """Empty when Redis answers at `url`, else why not."""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as error:
        return f"Redis not reachable at {url}: {error}"
    return ""


def configure_django(database_url: str, broker_url: str) -> None:
    """Point the project's settings at the benchmark database and broker, then start Django."""
    os.environ["DATABASE_URL"] = database_url
    # Never the developer's broker either: the ingestion benchmark enqueues evaluations.
    os.environ["CELERY_BROKER_URL"] = broker_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "rulesplatform.settings"
    # Fired alerts log a warning each: thousands of lines in a cycle of a thousand rules.
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = scale_from(args)
    var_dir = Path(os.environ.get("RULESPLATFORM_VAR_DIR", PROJECT_DIR / "var"))
    database_url = benchmark_database_url(os.environ.get("DATABASE_URL"), var_dir=var_dir)
    no_redis = redis_problem(args.redis_url)
    print(f"Benchmark database: {database_url} (dropped and created afresh)", file=sys.stderr)
    recreate_database(database_url)
    configure_django(database_url, "memory://" if no_redis else args.redis_url)

    from .latency import worker_process, worker_thread
    from .progress import Progress
    from .report import LAST_RESULTS, table, write_json
    from .runner import run_benchmarks

    worker = None
    if not no_redis:
        worker = worker_process if args.worker == "process" else (lambda: worker_thread(args.redis_url))
    results = run_benchmarks(scale, worker=worker, latency_skipped=no_redis, profile=args.profile,
                             progress=Progress(enabled=not args.quiet))
    print(table(results))
    if results["evaluation"].get("profile"):
        print("\nWhere the evaluation cycle spends its time (cProfile, cumulative):\n")
        print(results["evaluation"]["profile"])
    write_json(results)
    print(f"\nWritten to {LAST_RESULTS.relative_to(PROJECT_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
