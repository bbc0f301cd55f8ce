"""Paused agent runs in PostgreSQL (``[database] url``): a run paused on one host resumes on any other.

The same records and rules as the SQLite store (:mod:`agent.continuations`):
a run's hidden messages keyed by its run key, one row per (scope, call id)
the client received pointing at it, lookups by (scope, call id) only, rows
expiring after the run's TTL (an expired row is never returned; expired rows
are deleted at most once a minute per process, on saves). The JSON is BYTEA
holding orjson's bytes, as in SQLite: it is only ever read whole.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from toolrelay.agent.continuations import Continuation, ContinuationRow
from toolrelay.app.postgres import migrate

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["PostgresContinuationStore"]

_SCHEMA = """
CREATE TABLE continuations (
    run_key TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    messages BYTEA NOT NULL,
    meta BYTEA NOT NULL
);
CREATE INDEX continuations_expiry ON continuations (expires_at);
CREATE TABLE paused_calls (
    scope TEXT NOT NULL,
    call_id TEXT NOT NULL,
    run_key TEXT NOT NULL REFERENCES continuations (run_key) ON DELETE CASCADE,
    PRIMARY KEY (scope, call_id)
);
CREATE INDEX paused_calls_run ON paused_calls (run_key);
"""
MIGRATIONS = (_SCHEMA,)
SCHEMA_NAME = "continuations"

_SAVE_RUN = """
INSERT INTO continuations (run_key, scope, expires_at, messages, meta) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (run_key) DO UPDATE SET scope = excluded.scope, expires_at = excluded.expires_at, messages = excluded.messages, meta = excluded.meta
"""
_SAVE_CALL = "INSERT INTO paused_calls (scope, call_id, run_key) VALUES (%s, %s, %s) ON CONFLICT (scope, call_id) DO UPDATE SET run_key = excluded.run_key"
_PURGE_EVERY = 60.0


class PostgresContinuationStore:
    """Continuations in PostgreSQL; the pool is the process's own (``services.database``), not closed here."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self._pool = pool
        with pool.connection() as conn:
            migrate(conn, MIGRATIONS, name=SCHEMA_NAME)
        self._purge_lock = threading.Lock()
        self._last_purge = 0.0

    def close(self) -> None:
        """Nothing of its own to close (the pool is shared); here so every backend closes alike."""

    async def save(self, run_key: str, scope: str, call_ids: list[str], messages: list[dict[str, Any]], meta: dict[str, Any], ttl: float) -> None:
        await anyio.to_thread.run_sync(self._save, run_key, scope, call_ids, messages, meta, ttl)

    async def find(self, scope: str, call_ids: list[str]) -> Continuation | None:
        return await anyio.to_thread.run_sync(self._find, scope, call_ids)

    def _save(self, run_key: str, scope: str, call_ids: list[str], messages: list[dict[str, Any]], meta: dict[str, Any], ttl: float) -> None:
        now = time.time()
        with self._pool.connection() as conn:
            with conn.transaction(), conn.cursor() as cur:
                self._write(cur, (run_key, scope, now + ttl, orjson.dumps(messages), orjson.dumps(meta), call_ids))
            with self._purge_lock:
                purge, self._last_purge = now - self._last_purge > _PURGE_EVERY, max(self._last_purge, now)
            if purge:
                conn.execute("DELETE FROM continuations WHERE expires_at < %s", (now,))

    @staticmethod
    def _write(cur: psycopg.Cursor[Any], row: ContinuationRow) -> None:
        run_key, scope, expires_at, messages, meta, call_ids = row
        cur.execute(_SAVE_RUN, (run_key, scope, expires_at, messages, meta))
        cur.executemany(_SAVE_CALL, [(scope, call_id, run_key) for call_id in sorted(set(call_ids))])

    def _find(self, scope: str, call_ids: list[str]) -> Continuation | None:
        if not call_ids:
            return None
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT c.run_key, c.messages, c.meta FROM paused_calls k JOIN continuations c ON c.run_key = k.run_key "
                "WHERE k.scope = %s AND k.call_id = ANY(%s) AND c.scope = %s AND c.expires_at >= %s LIMIT 1",
                (scope, list(call_ids), scope, time.time()),
            ).fetchone()
        if row is None:
            return None
        return Continuation(row[0], orjson.loads(row[1]), orjson.loads(row[2]))

    # ------------------------------------------------------------------ toolrelay db copy

    def import_rows(self, rows: Iterable[ContinuationRow]) -> int:
        """Write paused runs exported from another store, expiry unchanged; how many."""
        written = 0
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            for row in rows:
                self._write(cur, row)
                written += 1
        return written

    def count_rows(self) -> int:
        with self._pool.connection() as conn:
            found = conn.execute("SELECT count(*) FROM continuations WHERE expires_at >= %s", (time.time(),)).fetchone()
        return int(found[0]) if found else 0
