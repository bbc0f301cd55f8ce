"""PostgreSQL: the durable state several toolrelay hosts share (``[database] url``).

SQLite (:mod:`app.sqlite`) stays the one-host default; a ``postgresql://`` URL
moves keys, the ledger, memories, continuations and stored responses into one
PostgreSQL database. Redis stays the fast path for counters.

The driver is psycopg 3 with ``psycopg_pool``: the stores already run their
blocking work in worker threads (the SQLite stores do), and psycopg's
synchronous API with a thread-safe pool slots into that unchanged; it has
LISTEN/NOTIFY (keys changed on one host reach the others), server-side
parameter binding, and binary wheels on PyPI (no compiler on the host).
asyncpg is faster per query but async-only, which would have meant a second
code path for every store.

- :func:`open_pool`: one pool per process, opened at start-up; an unreachable
  server is :class:`DatabaseUnavailable` with the URL's password removed.
- :func:`migrate`: versioned steps per schema name, applied under a
  transaction-scoped advisory lock, so several hosts starting at once apply
  each step exactly once (the others wait for the lock, then find the work done).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, LiteralString, cast
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

__all__ = [
    "DatabaseUnavailable",
    "Migration",
    "is_postgres_url",
    "migrate",
    "open_pool",
    "redact_url",
    "schema_versions",
]

# A step: SQL run as one script (several statements), or a function given the connection.
Migration = str | Callable[[psycopg.Connection[Any]], None]

_SCHEMES = ("postgresql", "postgres")
_SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS toolrelay_schema (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached (or refused us); the message never holds a password."""


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and urlsplit(str(url)).scheme in _SCHEMES


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs, errors and ``/ready``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def open_pool(url: str, *, min_size: int = 1, max_size: int = 10, connect_timeout: float = 5.0, name: str = "toolrelay") -> ConnectionPool[Any]:
    """A connection pool on ``url``, open and checked; :class:`DatabaseUnavailable` when the server cannot be used.

    Connections are autocommit: a store that needs a transaction opens one
    (``with conn.transaction():``), and nothing stays open by accident.
    """
    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout)), "application_name": name},
        timeout=connect_timeout,
        open=False,
    )
    try:
        pool.open(wait=True, timeout=connect_timeout)
        with pool.connection(timeout=connect_timeout) as conn:
            conn.execute("SELECT 1")
    except (PoolTimeout, psycopg.Error) as exc:
        pool.close()
        reason = str(exc).replace(url, redact_url(url)).strip() or type(exc).__name__
        raise DatabaseUnavailable(f"cannot use the database at {redact_url(url)}: {reason}") from None
    return pool


def _lock_id(name: str) -> int:
    """A stable signed 64-bit advisory lock id for schema ``name``."""
    return int.from_bytes(hashlib.blake2b(f"toolrelay-schema:{name}".encode(), digest_size=8).digest(), "big", signed=True)


def migrate(conn: psycopg.Connection[Any], steps: Sequence[Migration], *, name: str) -> int:
    """Bring schema ``name`` up to ``len(steps)``; returns the version found before.

    Step ``i`` (0-based) takes the schema from version ``i`` to ``i + 1``. All
    missing steps and the new version commit together under the schema's
    advisory lock. Raises ``RuntimeError`` for a database newer than ``steps``.
    """
    target = len(steps)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(name),))
        conn.execute(_SCHEMA_TABLE)
        row = conn.execute("SELECT version FROM toolrelay_schema WHERE name = %s", (name,)).fetchone()
        found = int(row[0]) if row else 0
        if found > target:
            raise RuntimeError(f"the database's {name!r} schema is version {found}, newer than this toolrelay knows ({target}); upgrade toolrelay")
        for step in steps[found:]:
            if isinstance(step, str):
                # The project's own SQL (a literal in its module); psycopg sends a parameterless script as one query.
                conn.execute(cast("LiteralString", step))
            else:
                step(conn)
        if found < target:
            conn.execute(
                "INSERT INTO toolrelay_schema (name, version) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET version = excluded.version, applied_at = now()",
                (name, target),
            )
    return found


def schema_versions(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Every schema's applied version (``toolrelay db status``); empty for a fresh database."""
    exists = conn.execute("SELECT to_regclass('toolrelay_schema') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    return {str(name): int(version) for name, version in conn.execute("SELECT name, version FROM toolrelay_schema ORDER BY name")}
