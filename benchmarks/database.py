"""The benchmark's own database, chosen before Django starts: never the developer's.

The server comes from `DATABASE_URL` (SQLite in `var/` when it is unset). The benchmark uses the
database that URL names only when the name contains "bench"; otherwise it uses a sibling,
`<name>_bench`, on the same server. That database is dropped and created afresh at every run —
reloading millions of facts is cheaper than deleting them, and a run never depends on the last.
"""

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
import psycopg
from psycopg import sql

MARKER = "bench"
_MAINTENANCE_DATABASE = "postgres"


def benchmark_database_url(configured: str | None, *, var_dir: Path) -> str:
    """The URL of the database the benchmark may drop: `configured`'s, or its `_bench` sibling."""
    if not configured:
        return f"sqlite:///{var_dir / 'bench.sqlite3'}"
    if is_sqlite(configured):
        path = Path(dj_database_url.parse(configured)["NAME"])
        if MARKER not in path.name.lower():
            path = path.with_name(f"{path.stem}_{MARKER}{path.suffix}")
        return f"sqlite:///{path}"
    parts = urlsplit(configured)
    name = parts.path.lstrip("/")
    if MARKER in name.lower():
        return configured
    return urlunsplit(parts._replace(path=f"/{name}_{MARKER}"))


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def recreate_database(url: str) -> None:
    """Drop the benchmark database if it exists and create it empty (the caller migrates it)."""
    settings = dj_database_url.parse(url)
    if MARKER not in Path(settings["NAME"]).name.lower():
        raise ValueError(f"Refusing to recreate {settings['NAME']!r}: not a benchmark database.")
    if is_sqlite(url):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{settings['NAME']}{suffix}").unlink(missing_ok=True)
        Path(settings["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        return
    name = sql.Identifier(settings["NAME"])
    with psycopg.connect(_maintenance_conninfo(settings), autocommit=True) as connection:
        # FORCE: a worker left behind by an interrupted run must not keep the database alive.
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(name))


def _maintenance_conninfo(settings: dict) -> str:
    options = {
        "dbname": _MAINTENANCE_DATABASE, "host": settings.get("HOST"), "port": settings.get("PORT"),
        "user": settings.get("USER"), "password": settings.get("PASSWORD"),
    }
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in options.items() if v})
