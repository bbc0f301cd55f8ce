"""Stored responses: SQLite in the data directory (``responses.db``), scoped to the key that made them.

One row per (scope, response id): the response JSON, the request's own input
items (what ``GET /v1/responses/{id}/input_items`` lists) and the whole
conversation the model saw (previous responses' input and output included),
which a later ``previous_response_id`` continues from. Every statement is
filtered on the scope, so another key's id is simply not found.

Rows older than the retention period are swept at most once a minute, on
writes. Blocking SQLite calls run in worker threads (``anyio.to_thread``),
one connection guarded by a lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson

from toolrelay.app.sqlite import connect, migrate, script_step

__all__ = ["ResponseStore", "StoredResponse", "response_scope"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    scope TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    response BLOB NOT NULL,
    input_items BLOB NOT NULL,
    context BLOB NOT NULL,
    PRIMARY KEY (scope, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at);
"""

# Step 2: each row's size, so a key's stored responses are bounded in bytes as
# well as in time; oldest first is what eviction deletes.
_SIZES = """
ALTER TABLE responses ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE responses SET size = length(response) + length(input_items) + length(context);
CREATE INDEX IF NOT EXISTS responses_scope_created ON responses (scope, created_at);
"""

_SWEEP_EVERY = 60.0


def response_scope(key_id: str | None) -> str:
    """The scope of a caller's responses: its key id, or the one local scope when auth is off."""
    return f"k:{key_id}" if key_id else "local"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    # Every item the model had seen before this response's output.
    context: list[dict[str, Any]]


class ResponseStore:
    def __init__(self, path: Path, *, retention_days: float, max_per_key: int = 10_000, max_bytes_per_key: int = 256 * 1024 * 1024) -> None:
        self._conn = connect(path)
        migrate(self._conn, [script_step(_SCHEMA), script_step(_SIZES)], name=str(path))
        self._max_count = max_per_key
        self._max_bytes = max_bytes_per_key
        self._lock = threading.Lock()
        self._retention = retention_days * 86400.0
        self._swept = 0.0

    async def save(self, scope: str, stored: StoredResponse) -> None:
        await anyio.to_thread.run_sync(self._save, scope, stored)

    async def get(self, scope: str, response_id: str) -> StoredResponse | None:
        return await anyio.to_thread.run_sync(self._get, scope, response_id)

    async def delete(self, scope: str, response_id: str) -> bool:
        return await anyio.to_thread.run_sync(self._delete, scope, response_id)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ blocking side

    def _save(self, scope: str, stored: StoredResponse) -> None:
        response = stored.response
        blobs = (orjson.dumps(response), orjson.dumps(stored.input_items), orjson.dumps(stored.context))
        row = (scope, response["id"], int(response["created_at"]), *blobs, sum(len(b) for b in blobs))
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            self._evict(scope)
            self._sweep()

    def _evict(self, scope: str) -> None:
        """Keep one key's stored responses within the count and byte caps, dropping its oldest."""
        count, total = self._conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM responses WHERE scope = ?", (scope,)).fetchone()
        if count <= self._max_count and total <= self._max_bytes:
            return
        over_bytes = total - self._max_bytes
        doomed: list[tuple[str]] = []
        for response_id, size in self._conn.execute("SELECT id, size FROM responses WHERE scope = ? ORDER BY created_at, id", (scope,)):
            if count <= self._max_count and over_bytes <= 0:
                break
            doomed.append((response_id,))
            count -= 1
            over_bytes -= size
        self._conn.executemany("DELETE FROM responses WHERE scope = ? AND id = ?", [(scope, d[0]) for d in doomed])

    def _sweep(self) -> None:
        now = time.time()
        if now - self._swept < _SWEEP_EVERY:
            return
        self._swept = now
        self._conn.execute("DELETE FROM responses WHERE created_at < ?", (int(now - self._retention),))

    def _get(self, scope: str, response_id: str) -> StoredResponse | None:
        with self._lock:
            row: tuple[bytes, bytes, bytes, int] | None = self._conn.execute(
                "SELECT response, input_items, context, created_at FROM responses WHERE scope = ? AND id = ?", (scope, response_id)
            ).fetchone()
        # An expired row not swept yet is gone all the same.
        if row is None or row[3] < time.time() - self._retention:
            return None
        return StoredResponse(orjson.loads(row[0]), orjson.loads(row[1]), orjson.loads(row[2]))

    def _delete(self, scope: str, response_id: str) -> bool:
        with self._lock:
            cursor: sqlite3.Cursor = self._conn.execute("DELETE FROM responses WHERE scope = ? AND id = ?", (scope, response_id))
            return cursor.rowcount > 0
