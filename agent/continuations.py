"""What the agent did before it handed client tool calls back.

When a run pauses on client tool calls, the built-in steps it took (assistant
messages with built-in calls and their results) exist only on the server: the
client never saw them and will not send them back. They are stored here,
keyed by the ids of the tool calls the client received, so the next request,
which carries those ids in its ``role: "tool"`` messages, can resume with the
full history. Records expire; a client that resends its own full history
never needs them.

Lookups are by (scope, call id), never by id alone (issue 10 item 14): two
scopes presenting the same id (upstreams such as llama.cpp and Ollama reuse
"call_0") can neither overwrite nor read each other's runs. The ids are ours
anyway, minted at random (:func:`app.ids.new_tool_call_id`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import orjson

from toolrelay.app.sqlite import connect, migrate, script_step, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS continuations (
    run_key TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    expires_at REAL NOT NULL,
    messages BLOB NOT NULL,
    meta BLOB NOT NULL
);
-- Keyed by call id alone before issue 10 item 14; its rows expire within
-- the hour anyway, so the old table is dropped rather than migrated.
DROP TABLE IF EXISTS continuation_calls;
CREATE TABLE IF NOT EXISTS paused_calls (
    scope TEXT NOT NULL,
    call_id TEXT NOT NULL,
    run_key TEXT NOT NULL REFERENCES continuations(run_key) ON DELETE CASCADE,
    PRIMARY KEY (scope, call_id)
);
CREATE INDEX IF NOT EXISTS continuations_expiry ON continuations(expires_at);
"""
# ``PRAGMA user_version`` steps; the first is the schema from before versions
# (``IF NOT EXISTS``), so an agent.db of an older release opens as it is.
MIGRATIONS = (script_step(_SCHEMA),)


@dataclass(frozen=True, slots=True)
class Continuation:
    run_key: str
    messages: list[dict[str, Any]]
    meta: dict[str, Any]


class Continuations(Protocol):
    """What the agent loop needs of a continuation store, whichever backend holds it (SQLite, Redis, PostgreSQL)."""

    async def save(self, run_key: str, scope: str, call_ids: list[str], messages: list[dict[str, Any]], meta: dict[str, Any], ttl: float) -> None: ...

    async def find(self, scope: str, call_ids: list[str]) -> Continuation | None: ...


#: One paused run as ``toolrelay db copy`` moves it: run key, scope, expiry (epoch seconds), messages and
#: meta JSON (bytes, as written), and the call ids that resume it.
ContinuationRow = tuple[str, str, float, bytes, bytes, list[str]]


class ContinuationStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        # One connection, used by one worker thread at a time (the lock).
        self._db = connect(path, pragmas=("foreign_keys=ON",))
        try:
            migrate(self._db, MIGRATIONS, name=str(path))
        except BaseException:
            self._db.close()
            raise
        self._last_purge = 0.0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _save(self, run_key: str, scope: str, call_ids: list[str], messages: list[dict[str, Any]], meta: dict[str, Any], ttl: float) -> None:
        now = time.time()
        with self._lock, transaction(self._db) as db:
            db.execute(
                "INSERT OR REPLACE INTO continuations(run_key, scope, expires_at, messages, meta) VALUES (?, ?, ?, ?, ?)",
                (run_key, scope, now + ttl, orjson.dumps(messages), orjson.dumps(meta)),
            )
            db.executemany("INSERT OR REPLACE INTO paused_calls(scope, call_id, run_key) VALUES (?, ?, ?)", [(scope, c, run_key) for c in call_ids])
            if now - self._last_purge > 60:
                db.execute("DELETE FROM continuations WHERE expires_at < ?", (now,))
                self._last_purge = now

    def _find(self, scope: str, call_ids: list[str]) -> Continuation | None:
        if not call_ids:
            return None
        marks = ",".join("?" * len(call_ids))
        with self._lock:
            row = self._db.execute(
                f"SELECT c.run_key, c.messages, c.meta FROM paused_calls k JOIN continuations c ON c.run_key = k.run_key "
                f"WHERE k.scope = ? AND k.call_id IN ({marks}) AND c.scope = ? AND c.expires_at >= ? LIMIT 1",
                (scope, *call_ids, scope, time.time()),
            ).fetchone()
        if row is None:
            return None
        return Continuation(row[0], orjson.loads(row[1]), orjson.loads(row[2]))

    async def save(self, run_key: str, scope: str, call_ids: list[str], messages: list[dict[str, Any]], meta: dict[str, Any], ttl: float) -> None:
        await anyio.to_thread.run_sync(self._save, run_key, scope, call_ids, messages, meta, ttl)

    async def find(self, scope: str, call_ids: list[str]) -> Continuation | None:
        return await anyio.to_thread.run_sync(self._find, scope, call_ids)

    def export_rows(self) -> Iterator[ContinuationRow]:
        """Every unexpired paused run with its call ids (``toolrelay db copy``)."""
        with self._lock:
            runs = self._db.execute("SELECT run_key, scope, expires_at, messages, meta FROM continuations WHERE expires_at >= ?", (time.time(),)).fetchall()
            calls: dict[str, list[str]] = {}
            for run_key, call_id in self._db.execute("SELECT run_key, call_id FROM paused_calls ORDER BY call_id"):
                calls.setdefault(run_key, []).append(call_id)
        for run_key, scope, expires_at, messages, meta in runs:
            yield (run_key, scope, expires_at, bytes(messages), bytes(meta), calls.get(run_key, []))


class RedisContinuationStore:
    """The same records in Redis, for workers on several hosts (``[redis] url``).

    A record is one key holding the JSON of the paused run's messages, and one
    small key per (scope, returned call id) pointing at it, all expiring
    together, so whichever host the client's next request reaches can resume
    the run. The scope is hashed into the key name: it holds percent-encoded
    user text of any length.
    """

    def __init__(self, url: str, *, prefix: str = "toolrelay", socket_timeout: float = 1.0, connect_timeout: float = 2.0) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout)
        self._prefix = f"{prefix}:cont"

    async def save(self, run_key: str, scope: str, call_ids: list[str], messages: list[dict[str, Any]], meta: dict[str, Any], ttl: float) -> None:
        seconds = max(1, int(ttl))
        record = orjson.dumps({"scope": scope, "messages": messages, "meta": meta})
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(f"{self._prefix}:run:{run_key}", record, ex=seconds)
        for call_id in call_ids:
            pipe.set(self._call_key(scope, call_id), run_key, ex=seconds)
        await pipe.execute()

    def _call_key(self, scope: str, call_id: str) -> str:
        scope_hash = hashlib.sha256(scope.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{self._prefix}:call:{scope_hash}:{call_id}"

    async def find(self, scope: str, call_ids: list[str]) -> Continuation | None:
        if not call_ids:
            return None
        run_keys = await self._redis.mget([self._call_key(scope, c) for c in call_ids])
        for run_key in dict.fromkeys(k for k in run_keys if k):
            name = run_key.decode() if isinstance(run_key, bytes) else str(run_key)
            raw = await self._redis.get(f"{self._prefix}:run:{name}")
            if raw is None:
                continue
            record = orjson.loads(raw)
            if record.get("scope") != scope:
                continue
            return Continuation(name, record["messages"], record.get("meta") or {})
        return None

    async def aclose(self) -> None:
        await self._redis.aclose()
