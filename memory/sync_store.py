"""The blocking memory store: connections, writes, reads; search is delegated to the planner.

Threads: :class:`SyncMemoryStore` keeps a small pool of connections (WAL, so
readers never wait for the writer) and serializes its own writes with a lock;
``BEGIN IMMEDIATE`` plus a busy timeout cover other processes.
:class:`MemoryStore` is the async facade: every call runs in a worker thread
(``anyio.to_thread``) so the event loop never blocks on SQLite.
"""

from __future__ import annotations

import builtins
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from toolrelay.app.ids import new_memory_id
from toolrelay.app.sqlite import connect, migrate, transaction

from .models import Memory, MemoryHit, MemoryPage, MemoryQuotaExceeded, MemoryStoreClosed, MemoryValidationError
from .planner import ScopeStrategy, SearchPlanner, score, tag_clause
from .query import MatchMode, query_terms
from .schema import MEMORY_COLUMNS, FtsDetail, migrations, owner_of, row_to_memory
from .scope import scope_token
from .validation import (
    DEFAULT_LIMITS,
    MemoryLimits,
    as_query_text,
    check_id,
    check_scope,
    clamp,
    clean_metadata,
    clean_tags,
    clean_text,
    scrub,
)

__all__ = ["Order", "SyncMemoryStore"]

Order = Literal["asc", "desc"]

# Per-connection settings beyond the common ones (app/sqlite.py): temporary
# tables in memory, a 32 MB page cache and 256 MB of the file memory-mapped,
# for the full-text reads.
_PRAGMAS = ("temp_store=MEMORY", "cache_size=-32000", "mmap_size=268435456")


class SyncMemoryStore:
    """Blocking memory store; safe to share between threads.

    Use :class:`~toolrelay.memory.store.MemoryStore` from async code.
    ``scope_strategy`` and ``search_budget_ms`` configure the
    :class:`~toolrelay.memory.planner.SearchPlanner`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limits: MemoryLimits = DEFAULT_LIMITS,
        max_connections: int = 8,
        busy_timeout: float = 10.0,
        fts_detail: FtsDetail = "full",
        scope_strategy: ScopeStrategy = "auto",
        search_budget_ms: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.limits = limits
        self._busy_timeout = busy_timeout
        steps = migrations(fts_detail)
        self._planner = SearchPlanner(scope_strategy=scope_strategy, search_budget_ms=search_budget_ms)
        self._df_cache = self._planner.df_cache  # bench/memory_search.py clears it between rounds
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._write_lock = threading.RLock()
        self._closed = False
        with self._write_lock, self._connection() as db:
            migrate(db, steps, name=f"{self.path} (memory)")

    # -- connections -------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # Pooled: each connection is used by one thread at a time.
        return connect(self.path, busy_timeout=self._busy_timeout, pragmas=_PRAGMAS, cached_statements=256)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise MemoryStoreClosed("memory store is closed")
        self._slots.acquire()
        try:
            try:
                db = self._pool.get_nowait()
            except queue.Empty:
                db = self._connect()
            try:
                yield db
            finally:
                if db.in_transaction:  # an exception escaped mid-write
                    db.execute("ROLLBACK")
                if self._closed:
                    db.close()
                else:
                    self._pool.put(db)
        finally:
            self._slots.release()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE``; commits on success.

        The lock serializes this store's own writers in-process, so they
        queue on it instead of spinning in SQLite's busy handler.
        """
        with self._write_lock, self._connection() as db, transaction(db):
            yield db

    def close(self) -> None:
        """Close the pooled connections; later calls raise MemoryStoreClosed.

        Connections in use by a running call are closed when it returns.
        """
        self._closed = True
        while True:
            try:
                db = self._pool.get_nowait()
            except queue.Empty:
                break
            db.close()

    def __enter__(self) -> SyncMemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ------------------------------------------------------------

    _INSERT = "INSERT INTO memories (id, scope, scope_key, text, tags, tags_text, created_at, metadata) VALUES (?,?,?,?,?,?,?,?)"

    def _prepare(
        self,
        scope: str,
        text: object,  # checked by clean_text: items come from clients
        tags: Iterable[str] | None,
        metadata: Mapping[str, Any] | None,
        created_at: int,
        scope_key: str,
    ) -> tuple[Memory, tuple[Any, ...]]:
        text = clean_text(text, self.limits)
        kept_tags = clean_tags(tags, self.limits, strict=True)
        meta = clean_metadata(metadata, self.limits)
        mem = Memory(
            id=new_memory_id(),
            scope=scope,
            text=text,
            tags=tuple(kept_tags),
            created_at=created_at,
            metadata=json.loads(meta) if meta else None,
        )
        row = (
            mem.id,
            scope,
            scope_key,
            text,
            json.dumps(kept_tags, ensure_ascii=False, separators=(",", ":")),
            " ".join(kept_tags),
            created_at,
            meta,
        )
        return mem, row

    def save(
        self,
        scope: str,
        text: str,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Memory:
        """Store one memory. Raises MemoryValidationError on bad input."""
        check_scope(scope)
        mem, row = self._prepare(scope, text, tags, metadata, int(time.time()), scope_token(scope))
        with self._write() as db:
            self._check_room(db, scope, [row])
            db.execute(self._INSERT, row)
        return mem

    def save_many(self, scope: str, items: Iterable[str | Mapping[str, Any]], *, created_at: int | None = None) -> builtins.list[Memory]:
        """Bulk import in one transaction (one ``executemany``).

        Each item is a text or a mapping with ``text`` and optional ``tags``,
        ``metadata``, ``created_at``. Everything is validated before anything
        is written; one bad item rejects the batch.
        """
        check_scope(scope)
        now = int(time.time()) if created_at is None else int(created_at)
        key = scope_token(scope)
        mems: builtins.list[Memory] = []
        rows: builtins.list[tuple[Any, ...]] = []
        for i, item in enumerate(items):
            try:
                if isinstance(item, str):
                    mem, row = self._prepare(scope, item, None, None, now, key)
                elif isinstance(item, Mapping):
                    ts = clamp(item.get("created_at", now), 0, 2**62, now)
                    mem, row = self._prepare(scope, item.get("text"), item.get("tags"), item.get("metadata"), ts, key)
                else:
                    raise MemoryValidationError("each item must be a text or an object with 'text'")
            except MemoryValidationError as exc:
                raise MemoryValidationError(f"item {i}: {exc}") from None
            mems.append(mem)
            rows.append(row)
        if rows:
            with self._write() as db:
                self._check_room(db, scope, rows)
                db.executemany(self._INSERT, rows)
        return mems

    def _check_room(self, db: sqlite3.Connection, scope: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Raise MemoryQuotaExceeded unless ``rows`` fit the scope's and the key's caps."""
        lim = self.limits
        if not (lim.max_memories_per_scope or lim.max_bytes_per_scope or lim.max_memories_per_key or lim.max_bytes_per_key):
            return
        # Same measure as the triggers' _SIZE: text, tags JSON and metadata JSON in UTF-8.
        adding = sum(len(r[3].encode()) + len(r[4].encode()) + (len(r[7].encode()) if r[7] else 0) for r in rows)
        got = {
            owner: (n, size) for owner, n, size in db.execute("SELECT owner, n, bytes FROM memory_usage WHERE owner IN (?, ?)", ("s:" + scope, owner_of(scope)))
        }
        for owner, what, max_n, max_bytes in (
            ("s:" + scope, "this memory scope", lim.max_memories_per_scope, lim.max_bytes_per_scope),
            (owner_of(scope), "this API key (all its users together)", lim.max_memories_per_key, lim.max_bytes_per_key),
        ):
            n, size = got.get(owner, (0, 0))
            if max_n and n + len(rows) > max_n:
                raise MemoryQuotaExceeded(
                    f"memory is full: {what} holds {n} memories and the limit is {max_n}; delete (forget) memories that are no longer needed before saving more"
                )
            if max_bytes and size + adding > max_bytes:
                raise MemoryQuotaExceeded(
                    f"memory is full: {what} holds {size} bytes of memories and the limit is {max_bytes} "
                    f"(this adds {adding}); delete (forget) memories that are no longer needed before saving more"
                )

    def delete(self, scope: str, id: str) -> bool:
        """Delete one memory of ``scope``; False if ``scope`` has none with that id."""
        return self.pop(scope, id) is not None

    def pop(self, scope: str, id: str) -> Memory | None:
        """Delete one memory of ``scope`` and return it (None if absent)."""
        check_scope(scope)
        if check_id(id) is None:
            return None
        with self._write() as db:
            row = db.execute(f"SELECT {MEMORY_COLUMNS}, 0.0, m.seq FROM memories m WHERE m.scope = ? AND m.id = ?", (scope, id)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM memories WHERE seq = ? AND scope = ?", (row[7], scope))
        return row_to_memory(row)

    def forget_memories(self, scope: str, query: str, limit: int = 5) -> builtins.list[Memory]:
        """Delete the (at most ``limit``) best matches containing every word of ``query``.

        Stricter than :meth:`search` (all words must occur, not any), so a
        vague query does not wipe loosely related memories; a query without
        usable words deletes nothing. Returns what was deleted.
        """
        check_scope(scope)
        limit = clamp(limit, 1, self.limits.max_search_limit, 5)
        with self._write() as db:
            rows = self._planner.rows(db, scope, query, limit, [], "all") if query_terms(as_query_text(query)) else []
            if rows:
                seqs = [r[7] for r in rows]
                marks = ",".join("?" * len(seqs))
                db.execute(f"DELETE FROM memories WHERE scope = ? AND seq IN ({marks})", (scope, *seqs))
        return [row_to_memory(r) for r in rows]

    def forget(self, scope: str, query: str, limit: int = 5) -> builtins.list[str]:
        """Like :meth:`forget_memories`, returning the deleted ids."""
        return [m.id for m in self.forget_memories(scope, query, limit)]

    def delete_all(self, scope: str) -> int:
        """Delete every memory of ``scope``; returns how many."""
        check_scope(scope)
        with self._write() as db:
            return db.execute("DELETE FROM memories WHERE scope = ?", (scope,)).rowcount

    # -- reads -------------------------------------------------------------

    def get(self, scope: str, id: str) -> Memory | None:
        """The memory ``id`` if it belongs to ``scope``, else None."""
        check_scope(scope)
        if check_id(id) is None:
            return None
        with self._connection() as db:
            row = db.execute(f"SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.scope = ? AND m.id = ?", (scope, id)).fetchone()
        return row_to_memory(row) if row else None

    def count(self, scope: str) -> int:
        check_scope(scope)
        with self._connection() as db:
            row = db.execute("SELECT n FROM memory_counts WHERE scope = ?", (scope,)).fetchone()
        return int(row[0]) if row else 0

    def list(
        self,
        scope: str,
        limit: int = 20,
        after: str | None = None,
        order: Order = "asc",
        tags: Iterable[str] | None = None,
    ) -> MemoryPage:
        """One page of ``scope``'s memories in creation order (``"desc"``: newest first).

        ``after`` is the ``last_id`` of the previous page. It is a position,
        not a lookup: it may have been deleted since, and an id from another
        scope reveals nothing (it only sets where the page starts). With
        ``tags``, only memories carrying one of them (a scan of the scope).
        """
        check_scope(scope)
        limit = clamp(limit, 1, self.limits.max_list_limit, 20)
        desc = order == "desc"
        params: list[Any] = [scope]
        sql = f"SELECT {MEMORY_COLUMNS} FROM memories m WHERE m.scope = ?"
        if after is not None:
            sql += " AND m.id < ?" if desc else " AND m.id > ?"
            params.append(scrub(str(after)))
        sql += tag_clause(clean_tags(tags, self.limits, strict=False), params)
        sql += f" ORDER BY m.id {'DESC' if desc else 'ASC'} LIMIT ?"
        params.append(limit + 1)
        with self._connection() as db:
            rows = db.execute(sql, params).fetchall()
        return MemoryPage(data=[row_to_memory(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def export(self, scope: str) -> builtins.list[Memory]:
        """Every memory of ``scope`` in creation order."""
        return builtins.list(self.iter_export(scope))

    def iter_export(self, scope: str, batch: int = 1000) -> Iterator[Memory]:
        """Every memory of ``scope`` in creation order, read ``batch`` at a time."""
        after: str | None = None
        while True:
            page = self.list(scope, limit=batch, after=after)
            yield from page.data
            if not page.has_more:
                return
            after = page.last_id

    def search(
        self,
        scope: str,
        query: str,
        limit: int = 5,
        tags: Iterable[str] | None = None,
        match: MatchMode = "any",
    ) -> builtins.list[MemoryHit]:
        """Memories of ``scope`` ranked by bm25 against the words of ``query``.

        ``match="any"`` (default) finds memories containing any of the words,
        those matching more and rarer words first; ``"all"`` requires every
        word. ``tags`` keeps memories carrying at least one of them. A query
        without usable words returns the newest memories carrying ``tags``
        when tags are given, else nothing. Never raises on odd query text.

        ``score`` is ``-bm25`` (higher is better). In a large database, words
        too common to rank within the time budget are only used as a
        fallback: memories matching nothing but those come after the ranked
        ones, newest first, with score 0.
        """
        check_scope(scope)
        limit = clamp(limit, 1, self.limits.max_search_limit, 5)
        wanted_tags = clean_tags(tags, self.limits, strict=False)
        with self._connection() as db:
            rows = self._planner.rows(db, scope, as_query_text(query), limit, wanted_tags, match)
        return [MemoryHit(row_to_memory(r), score(r[6])) for r in rows]

    # -- maintenance -------------------------------------------------------

    def optimize(self) -> None:
        """Merge the full-text index into one segment (after big imports)."""
        with self._write() as db:
            db.execute("INSERT INTO memories_fts(memories_fts) VALUES ('optimize')")

    def integrity_check(self) -> bool:
        """FTS index consistent with the table, and SQLite's quick_check passes."""
        with self._connection() as db:
            try:
                db.execute("INSERT INTO memories_fts(memories_fts, rank) VALUES ('integrity-check', 1)")
            except sqlite3.DatabaseError:
                return False
            return db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
