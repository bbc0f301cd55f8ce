"""Stored responses: SQLite in the data directory (``responses.db``), scoped to the key that made them.

One row per (scope, response id): the response JSON, the request's own input
items (what ``GET /v1/responses/{id}/input_items`` lists) and the whole
conversation the model saw (previous responses' input and output included),
which a later ``previous_response_id`` continues from. Every statement is
filtered on the scope, so another key's id is simply not found.

A ``background: true`` response is saved while it runs (``queued``,
``in_progress``) with the server process that runs it (``owner_pid``); its
final save clears that. At start-up :meth:`ResponseStore.fail_abandoned`
turns the rows of processes that are gone (a crash, a kill) into ``failed``,
so no response stays ``in_progress`` forever.

Rows older than the retention period are swept at most once a minute, on
writes. Blocking SQLite calls run in worker threads (``anyio.to_thread``),
one connection guarded by a lock.
"""

from __future__ import annotations

import abc
import asyncio
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson

from toolrelay.app.sqlite import connect, migrate, script_step, transaction

__all__ = ["ResponseRow", "ResponseStorage", "ResponseStore", "StoredResponse", "response_scope"]

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

# Step 3: the process running a background response (NULL once it is settled).
_OWNERS = """
ALTER TABLE responses ADD COLUMN owner_pid INTEGER;
CREATE INDEX IF NOT EXISTS responses_running ON responses (owner_pid) WHERE owner_pid IS NOT NULL;
"""

# Step 4: each scope's count and bytes kept by triggers, so the caps cost one
# row read per save: summing a key's rows on every save made a save O(rows),
# measured at 5 ms of CPU per request once a key had ~1,000 stored responses.
# And an index of item ids, for the ``item_reference`` input items that
# clients (the AI SDK by default) send instead of an earlier item's content.
_TOTALS_AND_ITEMS = """
CREATE TABLE IF NOT EXISTS response_totals (
    scope TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR REPLACE INTO response_totals SELECT scope, COUNT(*), COALESCE(SUM(size), 0) FROM responses GROUP BY scope;
CREATE TRIGGER IF NOT EXISTS responses_counted AFTER INSERT ON responses BEGIN
    INSERT INTO response_totals VALUES (new.scope, 1, new.size)
        ON CONFLICT(scope) DO UPDATE SET count = count + 1, bytes = bytes + new.size;
END;
CREATE TRIGGER IF NOT EXISTS responses_resized AFTER UPDATE OF size ON responses BEGIN
    UPDATE response_totals SET bytes = bytes - old.size + new.size WHERE scope = new.scope;
END;
CREATE TABLE IF NOT EXISTS response_items (
    scope TEXT NOT NULL,
    item_id TEXT NOT NULL,
    response_id TEXT NOT NULL,
    PRIMARY KEY (scope, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS response_items_by_response ON response_items (scope, response_id);
INSERT OR REPLACE INTO response_items
    SELECT r.scope, json_extract(j.value, '$.id'), r.id FROM responses r, json_each(CAST(r.input_items AS TEXT)) j
    WHERE json_extract(j.value, '$.id') IS NOT NULL;
INSERT OR REPLACE INTO response_items
    SELECT r.scope, json_extract(j.value, '$.id'), r.id FROM responses r, json_each(CAST(r.response AS TEXT), '$.output') j
    WHERE json_extract(j.value, '$.id') IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS responses_uncounted AFTER DELETE ON responses BEGIN
    UPDATE response_totals SET count = count - 1, bytes = bytes - old.size WHERE scope = old.scope;
    DELETE FROM response_items WHERE scope = old.scope AND response_id = old.id;
END;
"""

# Step 5: the same table with a rowid. WITHOUT ROWID keeps whole rows in the
# primary key's B-tree, sorted by (scope, id): each new response (a few kB of
# JSON) landed in the middle of it, splitting pages. Measured on this machine,
# 20,000 inserts in batches of 16: 51 us per row WITHOUT ROWID, 15 us with a
# rowid (rows appended) and the same uniqueness as an index.
_ROWID_TABLE = """
CREATE TABLE responses_rowid (
    scope TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    response BLOB NOT NULL,
    input_items BLOB NOT NULL,
    context BLOB NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    owner_pid INTEGER,
    UNIQUE (scope, id)
);
INSERT INTO responses_rowid (scope, id, created_at, response, input_items, context, size, owner_pid)
    SELECT scope, id, created_at, response, input_items, context, size, owner_pid FROM responses ORDER BY created_at;
DROP TABLE responses;
ALTER TABLE responses_rowid RENAME TO responses;
CREATE INDEX responses_created ON responses (created_at);
CREATE INDEX responses_scope_created ON responses (scope, created_at);
CREATE INDEX responses_running ON responses (owner_pid) WHERE owner_pid IS NOT NULL;
CREATE TRIGGER responses_counted AFTER INSERT ON responses BEGIN
    INSERT INTO response_totals VALUES (new.scope, 1, new.size)
        ON CONFLICT(scope) DO UPDATE SET count = count + 1, bytes = bytes + new.size;
END;
CREATE TRIGGER responses_resized AFTER UPDATE OF size ON responses BEGIN
    UPDATE response_totals SET bytes = bytes - old.size + new.size WHERE scope = new.scope;
END;
CREATE TRIGGER responses_uncounted AFTER DELETE ON responses BEGIN
    UPDATE response_totals SET count = count - 1, bytes = bytes - old.size WHERE scope = old.scope;
    DELETE FROM response_items WHERE scope = old.scope AND response_id = old.id;
END;
"""

# Saves replace a row in place (a background response is saved several times):
# an upsert, so the update trigger (not a delete and an insert) keeps the totals.
_UPSERT = """
INSERT INTO responses (scope, id, created_at, response, input_items, context, size, owner_pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (scope, id) DO UPDATE SET
    created_at = excluded.created_at, response = excluded.response, input_items = excluded.input_items,
    context = excluded.context, size = excluded.size, owner_pid = excluded.owner_pid
"""

_SWEEP_EVERY = 60.0

#: One stored row as ``toolrelay db copy`` moves it: scope, id, created_at, the response, input items and
#: context JSON (bytes, as written), and the pid of the process running it (None once settled).
ResponseRow = tuple[str, str, int, bytes, bytes, bytes, "int | None"]


def response_scope(key_id: str | None) -> str:
    """The scope of a caller's responses: its key id, or the one local scope when auth is off."""
    return f"k:{key_id}" if key_id else "local"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    # Every item the model had seen before this response's output.
    context: list[dict[str, Any]]


#: While saves keep coming (the last commit was less than this ago), a save waits up to this long
#: for others to share its commit. Each commit writes every B-tree page it touched to the WAL: on a
#: store of 60,000 responses a commit of one row cost 35-44 us of CPU per row, of 32 rows 25 us.
GROUP_COMMIT_SECONDS = 0.002

# Rows written between two WAL checkpoints (each in a worker thread, never inside a commit on the loop).
_CHECKPOINT_EVERY = 500

# A save waiting for the writer: the row, the future its saver awaits, and that saver's loop.
_Pending = tuple[tuple[str, StoredResponse, "int | None"], "asyncio.Future[None]", asyncio.AbstractEventLoop]


def _settle(results: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    """On the saver's loop: wake every saver of a committed batch (a cancelled saver's future is left alone)."""
    for future, error in results:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class ResponseStorage(abc.ABC):
    """What the routes use of a stored-responses backend: group-committed saves and lookups by (scope, id).

    The async side (this class) is shared; a backend implements the blocking
    side (``_save_all``, ``_get``, ``_find_items``, ``_delete``,
    ``_fail_abandoned``, ``close``), which runs in worker threads:
    :class:`ResponseStore` on SQLite, :class:`~app.responses.store_pg.PostgresResponseStore`
    on PostgreSQL.

    A save returns once its row is committed (a client that retrieves a
    response right after it was answered finds it, on any worker). The saves
    of one event-loop turn commit together right after it (while saves keep
    coming, up to :data:`GROUP_COMMIT_SECONDS` later, so more share one
    commit): on the loop when
    the backend can do it without waiting (:meth:`_try_on_loop`: SQLite, when
    neither its lock nor the file's write lock is taken), else through one
    writer thread per store, which takes every save queued while it was
    committing the previous batch. Measured on this 2-core machine: a hop
    through anyio's worker threads costs 98 us of CPU, a queue to a thread of
    our own 47 us, and the wake-ups and GIL hand-offs of a thread write cost
    a stream about 0.3 ms of CPU more than the same SQLite write on the loop
    (about 80 us, no fsync: WAL, synchronous=NORMAL, checkpoints kept off the loop).
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        # Saves of this event-loop turn (or, when busy, of the next few ms), committed together (see _try_on_loop).
        self._loop_batch: list[_Pending] | None = None
        self._last_flush = float("-inf")

    async def save(self, scope: str, stored: StoredResponse, *, running: bool = False) -> None:
        """Insert or replace, committed when this returns; ``running``: a background response this process is still making.

        A saver that is cancelled while it waits leaves its row to be written all the same.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        pending: _Pending = ((scope, stored, os.getpid() if running else None), future, loop)
        batch = self._loop_batch
        if batch is None:
            batch = self._loop_batch = []
            if loop.time() - self._last_flush < GROUP_COMMIT_SECONDS:
                # Busy (the last commit was moments ago): gather the saves of the next few ms into one commit.
                loop.call_later(GROUP_COMMIT_SECONDS, self._flush_loop_batch)
            else:
                loop.call_soon(self._flush_loop_batch)
        batch.append(pending)
        await future

    def _flush_loop_batch(self) -> None:
        """On the loop, after the turn that queued them: commit the turn's saves here if the backend can, else in the writer thread."""
        batch, self._loop_batch = self._loop_batch or [], None
        self._last_flush = asyncio.get_running_loop().time()
        if not batch:
            return
        errors = self._try_on_loop([row for row, _, _ in batch])
        if errors is None:
            if self._writer is None:
                self._start_writer()
            for pending in batch:
                self._queue.put(pending)
            return
        _settle([(future, error) for (_, future, _), error in zip(batch, errors, strict=True)])

    def _try_on_loop(self, rows: list[tuple[str, StoredResponse, int | None]]) -> list[Exception | None] | None:
        """Write ``rows`` at once, without blocking, or None to have the writer thread do it (the default)."""
        return None

    def _start_writer(self) -> None:
        with self._writer_lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_batches, name="toolrelay-responses-writer", daemon=True)
                self._writer.start()

    def _write_batches(self) -> None:
        """The writer thread: each batch is every save queued since the last commit, written in one transaction."""
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while True:
                try:
                    pending = self._queue.get_nowait()
                except queue.Empty:
                    break
                if pending is None:
                    stopping = True
                    break
                batch.append(pending)
            try:
                errors: list[Exception | None] | None = self._save_all([row for row, _, _ in batch])
                failure: BaseException | None = None
            except BaseException as exc:  # noqa: BLE001 - the transaction failed: every saver of the batch gets the error
                errors, failure = None, exc
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], BaseException | None]]] = {}
            for position, (_, future, loop) in enumerate(batch):
                outcome = failure if errors is None else errors[position]
                by_loop.setdefault(loop, []).append((future, outcome))
            for loop, results in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, results)
                except RuntimeError:  # that loop is closed: nobody waits any more
                    pass
            if stopping:
                return

    def _stop_writer(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer thread (before a backend closes its connections)."""
        writer = self._writer
        if writer is not None:
            self._queue.put(None)
            writer.join(timeout)
            self._writer = None

    async def fail_abandoned(self, error: dict[str, Any]) -> int:
        """Mark ``failed`` (with ``error``) the running rows whose process is gone; how many."""
        return await anyio.to_thread.run_sync(self._fail_abandoned, error)

    async def get(self, scope: str, response_id: str) -> StoredResponse | None:
        return await anyio.to_thread.run_sync(self._get, scope, response_id)

    async def delete(self, scope: str, response_id: str) -> bool:
        return await anyio.to_thread.run_sync(self._delete, scope, response_id)

    async def find_items(self, scope: str, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The stored items (input or output of this scope's responses) with these ids; unknown ids are absent."""
        return await anyio.to_thread.run_sync(self._find_items, scope, item_ids)

    @abc.abstractmethod
    def close(self) -> None:
        """Write what is queued (:meth:`_stop_writer`) and release the backend's connections."""

    def _save(self, scope: str, stored: StoredResponse, owner_pid: int | None = None) -> None:
        errors = self._save_all([(scope, stored, owner_pid)])
        if errors[0] is not None:
            raise errors[0]

    @abc.abstractmethod
    def _save_all(self, rows: list[tuple[str, StoredResponse, int | None]]) -> list[Exception | None]:
        """Write ``rows`` in one transaction; per row, the error that kept it out (one bad row spoils no other)."""

    @abc.abstractmethod
    def _fail_abandoned(self, error: dict[str, Any]) -> int:
        """Mark ``failed`` the running rows whose process is gone; how many."""

    @abc.abstractmethod
    def _get(self, scope: str, response_id: str) -> StoredResponse | None:
        """The stored response, or None (unknown, another scope's, or expired)."""

    @abc.abstractmethod
    def _find_items(self, scope: str, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The scope's stored items with these ids."""

    @abc.abstractmethod
    def _delete(self, scope: str, response_id: str) -> bool:
        """Delete a response and its items; whether it existed."""


class ResponseStore(ResponseStorage):
    """Stored responses in a SQLite file (one connection guarded by a lock)."""

    def __init__(self, path: Path, *, retention_days: float, max_per_key: int = 10_000, max_bytes_per_key: int = 256 * 1024 * 1024) -> None:
        super().__init__()
        # No automatic checkpoint: one would fsync inside a commit made on the event loop; _checkpoint runs them in a thread.
        self._conn = connect(path, pragmas=("wal_autocheckpoint=0",))
        self._busy_ms = int(self._conn.execute("PRAGMA busy_timeout").fetchone()[0])
        self._since_checkpoint = 0
        steps = [script_step(_SCHEMA), script_step(_SIZES), script_step(_OWNERS), script_step(_TOTALS_AND_ITEMS), script_step(_ROWID_TABLE)]
        migrate(self._conn, steps, name=str(path))
        self._max_count = max_per_key
        self._max_bytes = max_bytes_per_key
        self._lock = threading.Lock()
        self._retention = retention_days * 86400.0
        self._swept = 0.0

    def close(self) -> None:
        self._stop_writer()
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._conn.close()

    def _try_on_loop(self, rows: list[tuple[str, StoredResponse, int | None]]) -> list[Exception | None] | None:
        # Never wait on the loop: not for the connection's lock (a lookup in a worker thread), not for the
        # file's write lock (another worker process): either taken, and the writer thread does it.
        if not self._lock.acquire(blocking=False):
            return None
        try:
            self._conn.execute("PRAGMA busy_timeout=0")
            try:
                errors = self._write_locked(rows)
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    return None
                raise
            finally:
                self._conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        finally:
            self._lock.release()
        self._since_checkpoint += len(rows)
        if self._since_checkpoint >= _CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            asyncio.get_running_loop().run_in_executor(None, self._checkpoint)
        return errors

    def _checkpoint(self) -> None:
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # ------------------------------------------------------------------ blocking side

    def _save_all(self, rows: list[tuple[str, StoredResponse, int | None]]) -> list[Exception | None]:
        with self._lock:
            errors = self._write_locked(rows)
            self._since_checkpoint += len(rows)
            if self._since_checkpoint >= _CHECKPOINT_EVERY:
                self._since_checkpoint = 0
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return errors

    def _write_locked(self, rows: list[tuple[str, StoredResponse, int | None]]) -> list[Exception | None]:
        """Write ``rows`` in one transaction (the caller holds the lock); per row, the error that kept it out."""
        encoded, errors = encode_rows(rows)
        with transaction(self._conn):
            for (scope, stored, _), values in zip(rows, encoded, strict=True):
                if values is None:
                    continue
                self._conn.execute(_UPSERT, values)
                response_id = values[1]
                self._conn.executemany("INSERT OR REPLACE INTO response_items VALUES (?, ?, ?)", [(scope, i, response_id) for i in item_ids(stored)])
            for scope in {scope for scope, _, _ in rows}:
                self._evict(scope)
            self._sweep()
        return errors

    def _evict(self, scope: str) -> None:
        """Keep one key's stored responses within the count and byte caps, dropping its oldest."""
        totals = self._conn.execute("SELECT count, bytes FROM response_totals WHERE scope = ?", (scope,)).fetchone()
        count, total = totals if totals is not None else (0, 0)
        if count <= self._max_count and total <= self._max_bytes:
            return
        over_bytes = total - self._max_bytes
        doomed: list[tuple[int]] = []
        # In the index's own order (rowid breaks ties), so the cursor stops after the few oldest rows: ordering by
        # (created_at, id) sorted the whole scope on every save once a key was at its cap (2.5 ms per save at 10,000).
        for rowid, size in self._conn.execute("SELECT rowid, size FROM responses WHERE scope = ? ORDER BY created_at, rowid", (scope,)):
            if count <= self._max_count and over_bytes <= 0:
                break
            doomed.append((rowid,))
            count -= 1
            over_bytes -= size
        self._conn.executemany("DELETE FROM responses WHERE rowid = ?", doomed)

    def _sweep(self) -> None:
        now = time.time()
        if now - self._swept < _SWEEP_EVERY:
            return
        self._swept = now
        self._conn.execute("DELETE FROM responses WHERE created_at < ?", (int(now - self._retention),))

    def _fail_abandoned(self, error: dict[str, Any]) -> int:
        with self._lock:
            rows: list[tuple[str, str, bytes, int]] = self._conn.execute(
                "SELECT scope, id, response, owner_pid FROM responses WHERE owner_pid IS NOT NULL"
            ).fetchall()
            failed = 0
            for scope, response_id, blob, pid in rows:
                # Another worker's live run (``--workers N``) is not ours to fail; this process's pid
                # can only be on a row left by an earlier process that had the same pid.
                if pid != os.getpid() and _alive(pid):
                    continue
                response = orjson.loads(blob)
                response.update(status="failed", error=error, completed_at=None)
                self._conn.execute(
                    "UPDATE responses SET response = ?, owner_pid = NULL WHERE scope = ? AND id = ?", (orjson.dumps(response), scope, response_id)
                )
                failed += 1
            return failed

    def _get(self, scope: str, response_id: str) -> StoredResponse | None:
        with self._lock:
            row: tuple[bytes, bytes, bytes, int] | None = self._conn.execute(
                "SELECT response, input_items, context, created_at FROM responses WHERE scope = ? AND id = ?", (scope, response_id)
            ).fetchone()
        # An expired row not swept yet is gone all the same.
        if row is None or row[3] < time.time() - self._retention:
            return None
        return StoredResponse(orjson.loads(row[0]), orjson.loads(row[1]), orjson.loads(row[2]))

    def _find_items(self, scope: str, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        wanted = list(dict.fromkeys(item_ids))
        owners: dict[str, list[str]] = {}
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for item_id in wanted:
                owner = self._conn.execute("SELECT response_id FROM response_items WHERE scope = ? AND item_id = ?", (scope, item_id)).fetchone()
                if owner is not None:
                    owners.setdefault(owner[0], []).append(item_id)
            rows = [
                (
                    response_id,
                    ids,
                    self._conn.execute("SELECT response, input_items, created_at FROM responses WHERE scope = ? AND id = ?", (scope, response_id)).fetchone(),
                )
                for response_id, ids in owners.items()
            ]
        horizon = time.time() - self._retention
        for _, ids, row in rows:
            if row is None or row[2] < horizon:
                continue
            found.update(items_with_ids(row[0], row[1], set(ids)))
        return found

    def export_rows(self, batch: int = 500) -> Iterator[list[ResponseRow]]:
        """Every stored row as written (``toolrelay db copy``), ``batch`` at a time, in key order."""
        after: tuple[str, str] = ("", "")
        while True:
            with self._lock:
                rows: list[ResponseRow] = self._conn.execute(
                    "SELECT scope, id, created_at, response, input_items, context, owner_pid FROM responses "
                    "WHERE (scope, id) > (?, ?) ORDER BY scope, id LIMIT ?",
                    (*after, batch),
                ).fetchall()
            if not rows:
                return
            yield rows
            after = (rows[-1][0], rows[-1][1])

    def _delete(self, scope: str, response_id: str) -> bool:
        with self._lock:
            cursor: sqlite3.Cursor = self._conn.execute("DELETE FROM responses WHERE scope = ? AND id = ?", (scope, response_id))
            return cursor.rowcount > 0


def encode_rows(rows: list[tuple[str, StoredResponse, int | None]]) -> tuple[list[tuple[Any, ...] | None], list[Exception | None]]:
    """Each row's column values (scope, id, created_at, three JSON blobs, size, owner pid), or the error that keeps it out."""
    encoded: list[tuple[Any, ...] | None] = []
    errors: list[Exception | None] = []
    for scope, stored, owner_pid in rows:
        try:
            encoded.append(_encode(scope, stored, owner_pid))
            errors.append(None)
        except (TypeError, ValueError, KeyError) as exc:  # content orjson cannot write (an integer past 64 bits)
            encoded.append(None)
            errors.append(exc)
    return encoded, errors


def item_ids(stored: StoredResponse) -> set[str]:
    """The ids of a response's input and output items: what ``item_reference`` may name."""
    items = [*stored.input_items, *(stored.response.get("output") or ())]
    return {item["id"] for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)}


def items_with_ids(response_blob: bytes, input_blob: bytes, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The items of one stored row (input first, then output) whose id is in ``wanted``."""
    found: dict[str, dict[str, Any]] = {}
    for item in [*orjson.loads(input_blob), *(orjson.loads(response_blob).get("output") or ())]:
        if isinstance(item, dict) and item.get("id") in wanted:
            found[item["id"]] = item
    return found


def _encode(scope: str, stored: StoredResponse, owner_pid: int | None) -> tuple[Any, ...]:
    response = stored.response
    blobs = (orjson.dumps(response), orjson.dumps(stored.input_items), orjson.dumps(stored.context))
    return (scope, response["id"], int(response["created_at"]), *blobs, sum(len(b) for b in blobs), owner_pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
