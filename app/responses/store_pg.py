"""Stored responses in PostgreSQL (``[database] url``): every host serves every key's responses.

The same rows, rules and interface as the SQLite store (:class:`~app.responses.store.ResponseStore`):
one row per (scope, response id), every statement filtered on the scope;
group-committed saves (one transaction per batch); each scope's count and
bytes kept in ``response_totals`` by triggers, so the caps cost one row read
per save; the item index ``response_items`` for ``item_reference``; a
retention sweep at most once a minute per process.

The three JSON documents are ``BYTEA`` holding orjson's bytes, not ``JSONB``:
nothing is ever queried inside them (the item index is written by the save
itself), so JSONB would only cost a server-side parse and re-encoding per save;
JSONB also refuses ``\\u0000`` in strings (a model can produce one) and reorders
keys, while BYTEA keeps exactly what SQLite keeps, so the byte caps mean the
same on both backends and ``toolrelay db copy`` moves rows unchanged.

Background rows carry their owner as (host, pid). A process only judges pids
of its own host (``os.kill(pid, 0)``); another host's rows are failed only
when that host stopped heartbeating: each open store upserts
``response_hosts(host, seen_at)`` every :data:`HEARTBEAT_SECONDS` from a daemon
thread, and a host unseen for :data:`STALE_AFTER_SECONDS` is taken for dead.
The host name is ``socket.gethostname()`` unless given: hosts sharing a
database need distinct names.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from toolrelay.app.postgres import migrate
from toolrelay.app.responses.store import ResponseRow, ResponseStorage, StoredResponse, encode_rows, item_ids, items_with_ids

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["HEARTBEAT_SECONDS", "STALE_AFTER_SECONDS", "PostgresResponseStore"]

log = logging.getLogger("toolrelay.responses")

HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 60.0
_EVICT_PAGE = 256
_SWEEP_EVERY = 60.0

_SCHEMA = """
CREATE TABLE responses (
    scope TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    response BYTEA NOT NULL,
    input_items BYTEA NOT NULL,
    context BYTEA NOT NULL,
    size BIGINT NOT NULL,
    owner_host TEXT,
    owner_pid INTEGER,
    PRIMARY KEY (scope, id)
);
CREATE INDEX responses_created ON responses (created_at);
CREATE INDEX responses_scope_created ON responses (scope, created_at, id);
CREATE INDEX responses_running ON responses (owner_host) WHERE owner_host IS NOT NULL;

CREATE TABLE response_totals (
    scope TEXT PRIMARY KEY,
    count BIGINT NOT NULL,
    bytes BIGINT NOT NULL
);
CREATE TABLE response_items (
    scope TEXT NOT NULL,
    item_id TEXT NOT NULL,
    response_id TEXT NOT NULL,
    PRIMARY KEY (scope, item_id)
);
CREATE INDEX response_items_by_response ON response_items (scope, response_id);
CREATE TABLE response_hosts (
    host TEXT PRIMARY KEY,
    seen_at TIMESTAMPTZ NOT NULL
);

CREATE FUNCTION responses_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO response_totals VALUES (NEW.scope, 1, NEW.size)
            ON CONFLICT (scope) DO UPDATE SET count = response_totals.count + 1, bytes = response_totals.bytes + NEW.size;
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NEW.size <> OLD.size THEN
            UPDATE response_totals SET bytes = bytes - OLD.size + NEW.size WHERE scope = NEW.scope;
        END IF;
        RETURN NEW;
    ELSE
        UPDATE response_totals SET count = count - 1, bytes = bytes - OLD.size WHERE scope = OLD.scope;
        DELETE FROM response_items WHERE scope = OLD.scope AND response_id = OLD.id;
        RETURN OLD;
    END IF;
END
$$;
CREATE TRIGGER responses_counted AFTER INSERT OR DELETE OR UPDATE OF size ON responses
    FOR EACH ROW EXECUTE FUNCTION responses_counted();
"""

_UPSERT = """
INSERT INTO responses (scope, id, created_at, response, input_items, context, size, owner_host, owner_pid)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (scope, id) DO UPDATE SET
    created_at = excluded.created_at, response = excluded.response, input_items = excluded.input_items,
    context = excluded.context, size = excluded.size, owner_host = excluded.owner_host, owner_pid = excluded.owner_pid
"""
_INDEX_ITEM = "INSERT INTO response_items VALUES (%s, %s, %s) ON CONFLICT (scope, item_id) DO UPDATE SET response_id = excluded.response_id"
_HEARTBEAT = "INSERT INTO response_hosts VALUES (%s, now()) ON CONFLICT (host) DO UPDATE SET seen_at = now()"

MIGRATIONS = (_SCHEMA,)
SCHEMA_NAME = "responses"


class PostgresResponseStore(ResponseStorage):
    """Stored responses in PostgreSQL; the pool is the process's own (``services.database``), not closed here."""

    def __init__(
        self,
        pool: ConnectionPool[Any],
        *,
        retention_days: float,
        max_per_key: int = 10_000,
        max_bytes_per_key: int = 256 * 1024 * 1024,
        host: str | None = None,
        heartbeat: bool = True,
    ) -> None:
        """``heartbeat`` False: a store that runs nothing in the background (``toolrelay db copy``) and so
        claims no host."""
        super().__init__()
        self._pool = pool
        with pool.connection() as conn:
            migrate(conn, MIGRATIONS, name=SCHEMA_NAME)
            if heartbeat:
                conn.execute(_HEARTBEAT, (host or socket.gethostname(),))
        self.host = host or socket.gethostname()
        self._max_count = max_per_key
        self._max_bytes = max_bytes_per_key
        self._retention = retention_days * 86400.0
        self._swept = 0.0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        if heartbeat:
            self._beat = threading.Thread(target=self._heartbeat, name="toolrelay-responses-heartbeat", daemon=True)
            self._beat.start()

    def close(self) -> None:
        self._stop_writer()
        self._stop.set()
        if self._beat is not None:
            self._beat.join(5)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                with self._pool.connection() as conn:
                    conn.execute(_HEARTBEAT, (self.host,))
            except Exception:  # the database is away for a while; the next beat tries again
                log.debug("response store heartbeat failed", exc_info=True)

    # ------------------------------------------------------------------ blocking side

    def _save_all(self, rows: list[tuple[str, StoredResponse, int | None]]) -> list[Exception | None]:
        encoded, errors = encode_rows(rows)
        # Rows in (scope, id) order: two hosts' batches then lock the totals rows in the same order and cannot deadlock.
        order = sorted(((rows[i], values) for i, values in enumerate(encoded) if values is not None), key=lambda pair: (pair[0][0], pair[1][1]))
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            for (scope, stored, owner_pid), values in order:
                cur.execute(_UPSERT, (*values[:7], self.host if owner_pid is not None else None, owner_pid))
                cur.executemany(_INDEX_ITEM, [(scope, item_id, values[1]) for item_id in sorted(item_ids(stored))])
            for scope in sorted({scope for (scope, _, _), _ in order}):
                self._evict(cur, scope)
        self._sweep()
        return errors

    def _evict(self, cur: psycopg.Cursor[Any], scope: str) -> None:
        """Keep one key's stored responses within the count and byte caps, dropping its oldest."""
        totals = cur.execute("SELECT count, bytes FROM response_totals WHERE scope = %s", (scope,)).fetchone()
        count, total = totals if totals is not None else (0, 0)
        if count <= self._max_count and total <= self._max_bytes:
            return
        over_bytes = total - self._max_bytes
        doomed: list[str] = []
        # The oldest rows in pages along the (scope, created_at, id) index: reading the whole scope on every
        # save once a key is at its cap made each save O(its responses).
        after: tuple[Any, str] | None = None
        while count > self._max_count or over_bytes > 0:
            if after is None:
                page = cur.execute(
                    "SELECT created_at, id, size FROM responses WHERE scope = %s ORDER BY created_at, id LIMIT %s", (scope, _EVICT_PAGE)
                ).fetchall()
            else:
                page = cur.execute(
                    "SELECT created_at, id, size FROM responses WHERE scope = %s AND (created_at, id) > (%s, %s) ORDER BY created_at, id LIMIT %s",
                    (scope, *after, _EVICT_PAGE),
                ).fetchall()
            if not page:
                break
            for created_at, response_id, size in page:
                if count <= self._max_count and over_bytes <= 0:
                    break
                doomed.append(response_id)
                count -= 1
                over_bytes -= size
                after = (created_at, response_id)
        cur.execute("DELETE FROM responses WHERE scope = %s AND id = ANY(%s)", (scope, doomed))

    def _sweep(self) -> None:
        """Delete expired rows, one scope per statement: a statement then locks one totals row, so it
        cannot deadlock with a batch committing on another host."""
        now = time.time()
        if now - self._swept < _SWEEP_EVERY:
            return
        self._swept = now
        horizon = int(now - self._retention)
        with self._pool.connection() as conn:
            scopes = [row[0] for row in conn.execute("SELECT DISTINCT scope FROM responses WHERE created_at < %s", (horizon,))]
            for scope in scopes:
                conn.execute("DELETE FROM responses WHERE scope = %s AND created_at < %s", (scope, horizon))

    def _fail_abandoned(self, error: dict[str, Any]) -> int:
        with self._pool.connection() as conn:
            conn.execute(_HEARTBEAT, (self.host,))
            rows = conn.execute(
                "SELECT r.scope, r.id, r.owner_host, r.owner_pid, h.seen_at IS NULL OR h.seen_at < now() - make_interval(secs => %s) "
                "FROM responses r LEFT JOIN response_hosts h ON h.host = r.owner_host WHERE r.owner_host IS NOT NULL",
                (STALE_AFTER_SECONDS,),
            ).fetchall()
            failed = 0
            for scope, response_id, host, pid, host_gone in rows:
                if host == self.host:
                    # Another worker's live run (``--workers N``) is not ours to fail; this process's pid can
                    # only be on a row left by an earlier process that had the same pid.
                    if pid != os.getpid() and _alive(pid):
                        continue
                elif not host_gone:
                    continue  # a live host's run: only that host can tell whether its process is gone
                with conn.transaction():
                    row = conn.execute(
                        "SELECT response FROM responses WHERE scope = %s AND id = %s AND owner_host = %s AND owner_pid = %s FOR UPDATE",
                        (scope, response_id, host, pid),
                    ).fetchone()
                    if row is None:  # settled meanwhile
                        continue
                    response = orjson.loads(row[0])
                    response.update(status="failed", error=error, completed_at=None)
                    conn.execute(
                        "UPDATE responses SET response = %s, owner_host = NULL, owner_pid = NULL WHERE scope = %s AND id = %s",
                        (orjson.dumps(response), scope, response_id),
                    )
                failed += 1
            return failed

    def _get(self, scope: str, response_id: str) -> StoredResponse | None:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT response, input_items, context, created_at FROM responses WHERE scope = %s AND id = %s", (scope, response_id)).fetchone()
        # An expired row not swept yet is gone all the same.
        if row is None or row[3] < time.time() - self._retention:
            return None
        return StoredResponse(orjson.loads(row[0]), orjson.loads(row[1]), orjson.loads(row[2]))

    def _find_items(self, scope: str, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        wanted = list(dict.fromkeys(item_ids))
        if not wanted:
            return {}
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT r.response, r.input_items, r.created_at, array_agg(i.item_id) FROM response_items i "
                "JOIN responses r ON r.scope = i.scope AND r.id = i.response_id "
                "WHERE i.scope = %s AND i.item_id = ANY(%s) GROUP BY r.scope, r.id",
                (scope, wanted),
            ).fetchall()
        horizon = time.time() - self._retention
        found: dict[str, dict[str, Any]] = {}
        for response_blob, input_blob, created_at, ids in rows:
            if created_at >= horizon:
                found.update(items_with_ids(response_blob, input_blob, set(ids)))
        return found

    def _delete(self, scope: str, response_id: str) -> bool:
        with self._pool.connection() as conn:
            cursor = conn.execute("DELETE FROM responses WHERE scope = %s AND id = %s", (scope, response_id))
            return cursor.rowcount > 0

    # ------------------------------------------------------------------ toolrelay db copy

    def import_rows(self, rows: Iterable[ResponseRow], *, owner_host: str) -> int:
        """Write rows exported from another store as they are (no eviction: a copy keeps everything); how many.

        A row still marked running keeps its pid under ``owner_host``, a name no live host heartbeats, so
        the first host to start fails it as the SQLite store would have.
        """
        written = 0
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            for scope, response_id, created_at, response, input_items, context, owner_pid in rows:
                blobs = tuple(b.encode() if isinstance(b, str) else bytes(b) for b in (response, input_items, context))
                cur.execute(
                    _UPSERT,
                    (scope, response_id, created_at, *blobs, sum(len(b) for b in blobs), owner_host if owner_pid is not None else None, owner_pid),
                )
                stored = StoredResponse(orjson.loads(blobs[0]), orjson.loads(blobs[1]), [])
                cur.executemany(_INDEX_ITEM, [(scope, item_id, response_id) for item_id in sorted(item_ids(stored))])
                written += 1
        return written

    def count_rows(self) -> int:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT count(*) FROM responses").fetchone()
        return int(row[0]) if row else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
