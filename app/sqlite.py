"""SQLite the one way the project uses it: the key store, the usage ledger, paused agent runs, memory.

- :func:`connect`: the file is created private (0600, before SQLite opens
  it: :mod:`toolrelay.app.private_files`), then opened in autocommit mode
  with WAL, ``synchronous=NORMAL`` and a busy timeout. Autocommit
  (``isolation_level=None``) means nothing stays open by accident: an open
  read transaction would freeze a connection's view of the file (the key
  store's ``data_version`` watch depends on seeing other commits).
- :func:`transaction`: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any
  exception; immediate, so a writer waits for the lock at the start (within
  the busy timeout) instead of failing to upgrade a read half-way.
- :func:`migrate`: ``PRAGMA user_version`` counts the steps of an ordered
  list that have run; the missing ones run in one transaction. A database
  newer than the code is refused rather than misread. Steps written before
  there were versions detect what already exists (``IF NOT EXISTS``), so a
  file from an older release opens unchanged.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager

from toolrelay.app.private_files import private_file

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "Migration",
    "connect",
    "migrate",
    "run_script",
    "script_step",
    "transaction",
    "user_version",
]

#: Seconds a statement waits for another connection's lock before failing.
DEFAULT_BUSY_TIMEOUT = 10.0

#: One schema step: gets the connection inside the migration's transaction.
Migration = Callable[[sqlite3.Connection], None]


def connect(
    path: str | os.PathLike[str],
    *,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    pragmas: Sequence[str] = (),
    cached_statements: int = 128,
) -> sqlite3.Connection:
    """Open ``path`` (created 0600 if missing) in autocommit mode with the project's pragmas.

    ``pragmas`` are extra ``PRAGMA`` statements run after the common ones
    (``"foreign_keys=ON"``, ``"cache_size=-32000"``, ...). The connection may
    be used from any thread, one at a time (``check_same_thread=False``).
    """
    private_file(path)  # 0600 before SQLite creates it (issue 10 item 16)
    conn = sqlite3.connect(
        os.fspath(path),
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=cached_statements,
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        for pragma in pragmas:
            conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Generator[sqlite3.Connection, None, None]:
    """``BEGIN IMMEDIATE`` on an autocommit connection; commit on success, roll back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run the statements of ``script`` one by one, inside the caller's transaction.

    ``Connection.executescript`` would commit first, so it cannot be part of
    a migration. Trigger bodies hold ``;`` inside ``BEGIN ... END``:
    ``sqlite3.complete_statement`` decides where a statement ends.
    """
    buf: list[str] = []
    for line in script.strip().splitlines():
        buf.append(line)
        statement = "\n".join(buf).strip()
        if statement.endswith(";") and sqlite3.complete_statement(statement):
            conn.execute(statement)
            buf = []
    rest = "\n".join(buf).strip()
    if rest and not rest.startswith("--"):
        conn.execute(rest)


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, steps: Sequence[Migration], *, name: str = "database") -> int:
    """Run the steps ``conn``'s file has not had yet; returns the version found.

    Step ``i`` (0-based) brings the file from version ``i`` to ``i + 1``.
    All missing steps and the new ``user_version`` commit together, so a
    crash half-way leaves the old version, and concurrent openers (several
    workers starting at once) serialize on the write lock and find the work
    done. Raises ``RuntimeError`` for a file newer than ``steps``.
    """
    target = len(steps)
    if user_version(conn) == target:
        return target  # the usual case: no write lock taken
    with transaction(conn):
        found = user_version(conn)
        if found > target:
            raise RuntimeError(f"{name}: schema version {found} is newer than this code ({target})")
        for step in steps[found:]:
            step(conn)
        if found != target:
            conn.execute(f"PRAGMA user_version={target}")
    return found


def script_step(script: str) -> Migration:
    """A migration step that runs ``script`` (see :func:`run_script`)."""

    def step(conn: sqlite3.Connection) -> None:
        run_script(conn, script)

    return step
