"""``toolrelay db copy --from sqlite:///<data_dir or file> --to postgresql://...``: a one-host installation moved to PostgreSQL.

Every SQLite file of the data directory (or the one file named) is read and
its rows written to the shared database, each part in one transaction:

========================  ==============  ==================================================
file                      table           how
========================  ==============  ==================================================
``keys.db``               ``api_keys``    row by row, the same columns (hashes, limits, revocations)
``usage.db``              ``usage``       every ledger row, in order, ``host`` set to ``--host``
``agent.db``              continuations   the unexpired paused runs with their call ids
``responses.db``          responses       every stored row as written; the item index rebuilt,
                                          totals kept by the triggers
``memory.db``             ``memories``    every memory in insertion order, ids, scopes, times and
                                          metadata kept; search vectors built in ``[memory] language``
                                          (read from ``--config``), usage rows summed
========================  ==============  ==================================================

Files are recognised by the tables they hold, not by name (``[memory] path``
may point anywhere). Run it with the server stopped: rows written after a
part was read are not copied. The copy refuses a destination whose tables
already hold rows (so running it twice cannot double the ledger); each part
is checked before anything is written. The schemas are created (migrated) as
the servers would.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, LiteralString, TextIO
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

__all__ = ["CopyError", "CopyOptions", "CopyReport", "copy_installation", "sqlite_source"]

# The destination table of each part, checked empty before anything is written.
_TABLES = {"keys": "api_keys", "ledger": "usage", "continuations": "continuations", "responses": "responses", "memory": "memories"}


class CopyError(RuntimeError):
    """The copy cannot be done as asked (nothing was written when raised before the first part)."""


@dataclass(frozen=True, slots=True)
class CopyOptions:
    """What a part needs beyond its file and the pool."""

    #: The ledger's ``host`` column for the copied rows.
    host: str
    #: ``[memory] language``: the stemmer the memories' search vectors are built with.
    memory_language: str = "english"


@dataclass(slots=True)
class CopyReport:
    """Rows read from SQLite and found in PostgreSQL afterwards, per part."""

    copied: dict[str, tuple[int, int]] = field(default_factory=lambda: {})

    def lines(self) -> list[str]:
        return [f"{part:<14} {read:>9} read {found:>9} in the database" for part, (read, found) in self.copied.items()]


def sqlite_source(location: str) -> list[Path]:
    """The SQLite files of ``sqlite:///<path>`` (or a plain path): a data directory's ``*.db`` files, or the one file."""
    # sqlite:///var/lib/toolrelay is /var/lib/toolrelay; SQLAlchemy's four slashes for an absolute path work too.
    path = Path("/" + unquote(urlsplit(location).path).lstrip("/")) if location.startswith("sqlite:") else Path(location)
    if path.is_dir():
        return sorted(p for p in path.glob("*.db") if p.is_file())
    if path.is_file():
        return [path]
    raise CopyError(f"{path} is neither a data directory nor a SQLite file")


def _tables(path: Path) -> set[str]:
    with _read_only(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _read_only(path: Path) -> closing[sqlite3.Connection]:
    """The file opened read-only (the copy never changes its source)."""
    return closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True))


def _count(pool: ConnectionPool[Any], table: str) -> int:
    with pool.connection() as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if not exists or not exists[0]:
            return 0
        # The table name comes from _TABLES, never from input.
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[arg-type]  # noqa: S608
    return int(row[0]) if row else 0


# ---------------------------------------------------------------------- parts


def _copy_keys(path: Path, pool: ConnectionPool[Any], _options: CopyOptions) -> tuple[int, int]:
    from toolrelay.app.auth.keystore import _COLUMNS
    from toolrelay.app.auth.pg_keystore import MIGRATIONS
    from toolrelay.app.postgres import migrate

    with _read_only(path) as src:
        columns = {row[1] for row in src.execute("PRAGMA table_info(api_keys)")}
        wanted = [c.strip() for c in _COLUMNS.split(",")]
        # A keys.db from before mcp_servers: NULL, which is "every server", what those keys had.
        select = ", ".join(c if c in columns else "NULL" for c in wanted)
        rows = src.execute(f"SELECT {select} FROM api_keys ORDER BY created_at, id").fetchall()  # noqa: S608 - known column names
    insert = f"INSERT INTO api_keys ({_COLUMNS}) VALUES ({', '.join(['%s'] * len(wanted))})"  # noqa: S608
    with pool.connection() as conn:
        migrate(conn, MIGRATIONS, name="keys")
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(_sql(insert), [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows])
    return len(rows), _count(pool, "api_keys")


def _copy_ledger(path: Path, pool: ConnectionPool[Any], options: CopyOptions) -> tuple[int, int]:
    from toolrelay.app.auth.ledger import ROW_FIELDS  # the ledger's own column list: a new column is copied too
    from toolrelay.app.auth.pg_ledger import MIGRATIONS
    from toolrelay.app.postgres import migrate

    fields = ", ".join(ROW_FIELDS)
    read = 0
    with pool.connection() as conn:
        migrate(conn, MIGRATIONS, name="ledger")
        with conn.transaction(), conn.cursor() as cur, cur.copy(_sql(f"COPY usage ({fields}, host) FROM STDIN")) as copy, _read_only(path) as src:
            present = {row[1] for row in src.execute("PRAGMA table_info(usage)")}
            # A usage.db from before a column (cache_hit came with the response cache) gives that column's default, 0.
            select = ", ".join(f if f in present else "0" for f in ROW_FIELDS)
            for row in src.execute(f"SELECT {select} FROM usage ORDER BY id"):  # noqa: S608 - known column names
                # PostgreSQL text cannot hold NUL (SQLite can), as the ledger writer itself handles it.
                copy.write_row((*(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in row), options.host))
                read += 1
    return read, _count(pool, "usage")


def _copy_continuations(path: Path, pool: ConnectionPool[Any], _options: CopyOptions) -> tuple[int, int]:
    from toolrelay.agent.continuations import ContinuationStore
    from toolrelay.agent.continuations_pg import PostgresContinuationStore

    source = ContinuationStore(path)
    try:
        rows = list(source.export_rows())
    finally:
        source.close()
    target = PostgresContinuationStore(pool)
    target.import_rows(rows)
    return len(rows), target.count_rows()


def _copy_responses(path: Path, pool: ConnectionPool[Any], options: CopyOptions) -> tuple[int, int]:
    from toolrelay.app.responses.store import ResponseStore
    from toolrelay.app.responses.store_pg import PostgresResponseStore

    # The retention is the server's business: a copy moves every row it finds (no sweep runs here).
    source = ResponseStore(path, retention_days=36500)
    target = PostgresResponseStore(pool, retention_days=36500, heartbeat=False)
    read = 0
    try:
        for batch in source.export_rows():
            read += target.import_rows(batch, owner_host=f"copied-from:{options.host}")
    finally:
        source.close()
        target.close()
    return read, target.count_rows()


def _copy_memory(path: Path, pool: ConnectionPool[Any], options: CopyOptions) -> tuple[int, int]:
    from toolrelay.memory.pg_store import PgMemoryStore
    from toolrelay.memory.schema import export_rows

    # The caps are the server's business: a copy moves every memory it finds (import_rows checks none).
    target = PgMemoryStore(pool, language=options.memory_language)
    try:
        with _read_only(path) as src:
            read = target.import_rows(export_rows(src))
        return read, target.count_rows()
    finally:
        target.close()


# Part name -> (the table that identifies its SQLite file, the copier).
_PARTS: dict[str, tuple[str, Callable[[Path, Any, CopyOptions], tuple[int, int]]]] = {
    "keys": ("api_keys", _copy_keys),
    "ledger": ("usage", _copy_ledger),
    "continuations": ("paused_calls", _copy_continuations),
    "responses": ("responses", _copy_responses),
    "memory": ("memories_fts", _copy_memory),
}


def _sql(text: str) -> LiteralString:
    """A statement assembled from this module's constants (psycopg types ask for a literal)."""
    return text  # type: ignore[return-value]


def _plan(files: list[Path]) -> Iterator[tuple[str, Path]]:
    for path in files:
        tables = _tables(path)
        for part, (table, _) in _PARTS.items():
            if table in tables:
                yield part, path


def copy_installation(
    source: str, pool: ConnectionPool[Any], *, host: str | None = None, memory_language: str = "english", out: TextIO | None = None
) -> CopyReport:
    """Copy every part found in ``source`` into the database of ``pool``; a report of rows read and found."""
    plan = list(_plan(sqlite_source(source)))
    if not plan:
        raise CopyError(f"no toolrelay tables found in {source}")
    busy = [f"{_TABLES[part]} ({n} rows)" for part, _ in plan if (n := _count(pool, _TABLES[part]))]
    if busy:
        raise CopyError("the destination already holds " + ", ".join(busy) + "; copy into an empty database")
    report = CopyReport()
    options = CopyOptions(host=host or socket.gethostname(), memory_language=memory_language)
    for part, path in plan:
        read, found = _PARTS[part][1](path, pool, options)
        report.copied[part] = (read, found)
        if out is not None:
            out.write(f"{part:<14} {read:>9} rows from {path.name}\n")
    return report


# ---------------------------------------------------------------------- command line


def add_copy_command(db_sub: Any) -> None:
    """``toolrelay db copy`` under the ``db`` command's subparsers."""
    copy = db_sub.add_parser("copy", help="copy a one-host installation's SQLite files into an empty PostgreSQL database")
    copy.add_argument("--from", dest="source", required=True, help="sqlite:///<data_dir or file>")
    copy.add_argument("--to", dest="target", required=True, help="postgresql://user:password@host:5432/dbname")
    copy.add_argument("--host", default=None, help="the ledger's host column for the copied rows (default: this machine's name)")
    copy.add_argument("--config", help="TOML config file whose [memory] language the memories are indexed in (default: $TOOLRELAY_CONFIG)")
    copy.set_defaults(func=cmd_db_copy)


def cmd_db_copy(args: Any, out: TextIO | None = None) -> int:
    """Exit 0 when every row read is in the database, 1 when counts differ, 2 when the copy was refused."""
    import sys

    from toolrelay.app.config import ConfigError, load_settings
    from toolrelay.app.postgres import DatabaseUnavailable, is_postgres_url, open_pool, redact_url

    stream = out or sys.stdout
    if not is_postgres_url(args.target):
        print(f"toolrelay: --to must be a postgresql:// URL, not {args.target!r}", file=sys.stderr)
        return 2
    try:
        language = load_settings(getattr(args, "config", None)).memory.language
    except ConfigError as exc:
        print(f"toolrelay: {exc}", file=sys.stderr)
        return 2
    try:
        pool = open_pool(args.target, max_size=2, name="toolrelay-db-copy")
    except DatabaseUnavailable as exc:
        print(f"toolrelay: {exc}", file=sys.stderr)
        return 2
    try:
        report = copy_installation(args.source, pool, host=args.host, memory_language=language, out=stream)
    except CopyError as exc:
        print(f"toolrelay: {exc}", file=sys.stderr)
        return 2
    finally:
        pool.close()
    stream.write(f"copied into {redact_url(args.target)}:\n")
    for line in report.lines():
        stream.write(line + "\n")
    return 0 if all(read <= found for read, found in report.copied.values()) else 1
