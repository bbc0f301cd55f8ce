"""Long-term memory on PostgreSQL: the blocking store, same interface and answers as :class:`SyncMemoryStore`.

Several toolrelay hosts share one database, so a memory saved through one
host is found through every other. The pool is passed in (one per process,
opened by the services); the async facade is the same
:class:`~toolrelay.memory.store.MemoryStore` (``MemoryStore.from_sync``),
running every call in a worker thread.

Behaviour kept from the SQLite store: the same validation and limits
(:mod:`.validation`), the same query words (:func:`.query.query_terms`:
quoted, stopwords dropped, at most 24), every statement filtered on
``scope = %s``, caps checked inside the write transaction, ``match="all"``
for forgetting, tag filters, cursors and orders.

Search: each query word becomes ``phraseto_tsquery`` of that word alone
(PostgreSQL's own parser and stemmer; a word is never parsed as tsquery
syntax, so ``!``, ``&``, ``:*`` or quotes are plain characters), the
conversions cached. Ranking is BM25-like: for each word its IDF within the
scope (counted in the same statement, so no other scope's statistics enter
a score) times ``ts_rank`` of that word with weights text 1.0, tags 0.75 and
length normalization. As in the SQLite planner, a search whose words match
too many of a large scope's rows to rank within the budget ranks the rarest
words only and fills up with newest memories matching the common ones
(score 0); the per-word frequencies come from PostgreSQL's own column
statistics (``pg_stats.most_common_elems`` of the vector), read at most once
a minute.
"""

from __future__ import annotations

import builtins
import json
import logging
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from toolrelay.app.ids import new_memory_id
from toolrelay.app.postgres import DatabaseUnavailable, migrate

from .models import Memory, MemoryHit, MemoryPage, MemoryQuotaExceeded, MemoryStoreClosed, MemoryValidationError
from .pg_schema import SCHEMA_NAME, TS_CONFIG, check_language, migrations, set_language
from .query import MatchMode, query_terms
from .schema import MemoryRow, owner_of
from .sync_store import Order
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

__all__ = ["PgMemoryStore", "fold"]

log = logging.getLogger(__name__)

_COLUMNS = "m.id, m.scope, m.text, m.tags, m.created_at, m.metadata"
# ts_rank's weights for labels {D, C, B, A}: text is A (1.0), tags B (0.75), as FTS5's bm25 column weights.
_WEIGHTS = "'{0, 0, 0.75, 1.0}'::float4[]"
_VEC = f"setweight(to_tsvector('{TS_CONFIG}', v.folded), 'A') || setweight(to_tsvector('{TS_CONFIG}', v.folded_tags), 'B')"
_INSERT = f"""
INSERT INTO memories (id, scope, text, tags, tag_list, created_at, metadata, size, vec)
SELECT v.id, %s, v.text, v.tags, ARRAY(SELECT json_array_elements_text(v.filter_tags::json)), v.created_at, v.metadata, v.size, {_VEC}
FROM unnest(%s::text[], %s::bytea[], %s::text[], %s::bigint[], %s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[])
    AS v(id, text, tags, created_at, metadata, size, folded, folded_tags, filter_tags)
ORDER BY v.id
"""
# A copied row keeps its id, scope and creation time; WITH ORDINALITY keeps the source's order in seq.
_IMPORT = f"""
INSERT INTO memories (id, scope, text, tags, tag_list, created_at, metadata, size, vec)
SELECT v.id, v.scope, v.text, v.tags, ARRAY(SELECT json_array_elements_text(v.filter_tags::json)), v.created_at, v.metadata, v.size, {_VEC}
FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::text[], %s::bigint[], %s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[])
    WITH ORDINALITY AS v(id, scope, text, tags, created_at, metadata, size, folded, folded_tags, filter_tags, ord)
ORDER BY v.ord
"""
_LEXEME = re.compile(r"'((?:[^']|'')*)'")


def _is_separator(ch: str) -> bool:
    # Same rule as the query's tokenizer (query._is_separator): ASCII other than letters and digits, Unicode spaces and controls.
    if ch < "\x80":
        return not ch.isalnum()
    cat = unicodedata.category(ch)
    return cat[0] == "Z" or cat == "Cc" or cat == "Cs"


def fold(text: str) -> str:
    """``text`` as the index sees it: diacritics removed (NFKD without combining marks), separators as spaces.

    The same folding for stored text and query words, so "Café" finds "cafe"
    and "brulee" finds "brûlée" as with FTS5's ``remove_diacritics 2``, and
    PostgreSQL's parser never sees an e-mail address, URL or hyphenated word
    (it would index "a-b" as one more token than the query has).
    """
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(" " if _is_separator(ch) else ch for ch in decomposed if not unicodedata.combining(ch))


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000; tags and cursors are compared, never shown, so U+FFFD is a safe stand-in.
    return value.replace("\x00", "\ufffd")


def score(value: float) -> float:
    """To 6 significant digits, as the SQLite store reports ``-bm25`` (higher is better, 0.0 when unranked)."""
    return float(f"{float(value):.6g}") + 0.0


class _Lru:
    """A small thread-safe LRU map (word -> tsquery text)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class PgMemoryStore:
    """Blocking memory store on a PostgreSQL pool; safe to share between threads.

    Wrap it in :class:`~toolrelay.memory.store.MemoryStore` (``from_sync``)
    for async code. ``language`` is the stemmer (a Snowball language or
    ``simple``); changing it rebuilds every vector once, at start-up, under
    the migration lock.
    """

    # Planner constants, measured on a 2-core VM with PostgreSQL 15 (bench/memory_search.py --backend postgres):
    # a matching row costs about ROW_US to find and read, plus RANK_US per ranked word (the @@ count and ts_rank).
    ROW_US = 1.5
    RANK_US = 1.5
    #: Planned ranking cost above which the most common words are not ranked (1.5 ms: p50 0.80 ms, p99 5.1 ms
    #: against p50 1.91 ms, p99 5.0 ms with 3 ms over 100k memories in one scope, bench/memory_search.py on a
    #: loaded 2-core VM).
    SEARCH_BUDGET_US = 1500.0
    #: Below this many memories in the scope, every search is exact.
    PLAN_FROM_ROWS = 1000
    #: A bulk import of this many rows refreshes the statistics at once (autovacuum would, later).
    ANALYZE_FROM_ROWS = 5000
    #: Column statistics are re-read at most this often (seconds).
    STATS_TTL = 60.0

    def __init__(
        self,
        pool: ConnectionPool[Any],
        *,
        limits: MemoryLimits = DEFAULT_LIMITS,
        language: str = "english",
        search_budget_ms: float | None = None,
    ) -> None:
        self.limits = limits
        self.language = check_language(language)
        self._pool = pool
        self._closed = False
        if search_budget_ms is not None:
            self.SEARCH_BUDGET_US = float(search_budget_ms) * 1000.0
        self._queries = _Lru(16384)
        self._stats: tuple[float, dict[str, float], float] = (0.0, {}, 0.0)
        self._stats_lock = threading.Lock()
        self._sizes: dict[str, tuple[float, int]] = {}
        with self._connection() as conn:
            migrate(conn, migrations(language), name=SCHEMA_NAME)
            self._use_language(conn, language)

    # -- connections -------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise MemoryStoreClosed("memory store is closed")
        try:
            with self._pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise DatabaseUnavailable(f"the memory database cannot be reached: {type(exc).__name__}") from exc

    @contextmanager
    def _write(self, scope: str) -> Iterator[psycopg.Connection[Any]]:
        """A transaction holding the scope's and its key's usage rows locked (in one order, so writers never deadlock)."""
        with self._connection() as conn, conn.transaction():
            owners = sorted({"s:" + scope, owner_of(scope)})
            conn.execute(
                "INSERT INTO memories_usage (owner, n, bytes) SELECT unnest(%s::text[]), 0, 0 ON CONFLICT (owner) DO NOTHING",
                (owners,),
            )
            conn.execute("SELECT owner FROM memories_usage WHERE owner = ANY(%s) ORDER BY owner FOR UPDATE", (owners,))
            yield conn

    def close(self) -> None:
        """Later calls raise MemoryStoreClosed; the pool belongs to whoever opened it."""
        self._closed = True

    def __enter__(self) -> PgMemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _use_language(self, conn: psycopg.Connection[Any], language: str) -> None:
        row = conn.execute("SELECT language FROM memories_language").fetchone()
        if row is not None and row[0] == language:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('toolrelay-memory-language'))")
            row = conn.execute("SELECT language FROM memories_language").fetchone()
            if row is not None and row[0] == language:
                return
            log.warning("memory search language changes from %s to %s: rebuilding every memory's index entry", row[0] if row else None, language)
            set_language(conn, language)
            rows = conn.execute("SELECT seq, text, tags FROM memories").fetchall()
            batch = [(seq, fold(bytes(text).decode()), fold(" ".join(json.loads(tags)))) for seq, text, tags in rows]
            for start in range(0, len(batch), 1000):
                part = batch[start : start + 1000]
                conn.execute(
                    f"UPDATE memories m SET vec = {_VEC} FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(seq, folded, folded_tags) WHERE m.seq = v.seq",
                    ([p[0] for p in part], [p[1] for p in part], [p[2] for p in part]),
                )
        self._queries.clear()

    # -- writes ------------------------------------------------------------

    def _prepare(
        self, scope: str, text: object, tags: Iterable[str] | None, metadata: Mapping[str, Any] | None, created_at: int
    ) -> tuple[Memory, tuple[Any, ...]]:
        text = clean_text(text, self.limits)
        kept_tags = clean_tags(tags, self.limits, strict=True)
        meta = clean_metadata(metadata, self.limits)
        mem = Memory(id=new_memory_id(), scope=scope, text=text, tags=tuple(kept_tags), created_at=created_at, metadata=json.loads(meta) if meta else None)
        tags_json = json.dumps(kept_tags, ensure_ascii=False, separators=(",", ":"))
        encoded = text.encode()
        # The SQLite store's measure: text, tags JSON and metadata JSON in UTF-8.
        size = len(encoded) + len(tags_json.encode()) + (len(meta.encode()) if meta else 0)
        filter_tags = json.dumps([_no_nul(t) for t in kept_tags], ensure_ascii=False)
        row = (mem.id, encoded, tags_json, created_at, meta, size, fold(text), fold(" ".join(kept_tags)), filter_tags)
        return mem, row

    def _insert(self, conn: psycopg.Connection[Any], scope: str, rows: Sequence[tuple[Any, ...]]) -> None:
        self._check_room(conn, scope, rows)
        for start in range(0, len(rows), 2000):
            part = rows[start : start + 2000]
            columns = [[r[i] for r in part] for i in range(9)]
            conn.execute(_INSERT, (scope, *columns))
        n, size = len(rows), sum(r[5] for r in rows)
        conn.execute(
            "UPDATE memories_usage SET n = n + %s, bytes = bytes + %s WHERE owner = ANY(%s)",
            (n, size, ["s:" + scope, owner_of(scope)]),
        )

    def _check_room(self, conn: psycopg.Connection[Any], scope: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Raise MemoryQuotaExceeded unless ``rows`` fit the scope's and the key's caps (rows locked by :meth:`_write`)."""
        lim = self.limits
        if not (lim.max_memories_per_scope or lim.max_bytes_per_scope or lim.max_memories_per_key or lim.max_bytes_per_key):
            return
        adding = sum(r[5] for r in rows)
        got = {
            owner: (int(n), int(size))
            for owner, n, size in conn.execute("SELECT owner, n, bytes FROM memories_usage WHERE owner = ANY(%s)", (["s:" + scope, owner_of(scope)],))
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

    def _deleted(self, conn: psycopg.Connection[Any], scope: str, sizes: Sequence[int]) -> None:
        if sizes:
            conn.execute(
                "UPDATE memories_usage SET n = n - %s, bytes = bytes - %s WHERE owner = ANY(%s)",
                (len(sizes), sum(sizes), ["s:" + scope, owner_of(scope)]),
            )

    def save(self, scope: str, text: str, tags: Iterable[str] | None = None, metadata: Mapping[str, Any] | None = None) -> Memory:
        """Store one memory. Raises MemoryValidationError on bad input."""
        _check_pg_scope(scope)
        mem, row = self._prepare(scope, text, tags, metadata, int(time.time()))
        with self._write(scope) as conn:
            self._insert(conn, scope, [row])
        return mem

    def save_many(self, scope: str, items: Iterable[str | Mapping[str, Any]], *, created_at: int | None = None) -> builtins.list[Memory]:
        """Bulk import in one transaction; everything is validated first, one bad item rejects the batch."""
        _check_pg_scope(scope)
        now = int(time.time()) if created_at is None else int(created_at)
        mems: builtins.list[Memory] = []
        rows: builtins.list[tuple[Any, ...]] = []
        for i, item in enumerate(items):
            try:
                if isinstance(item, str):
                    mem, row = self._prepare(scope, item, None, None, now)
                elif isinstance(item, Mapping):
                    ts = clamp(item.get("created_at", now), 0, 2**62, now)
                    mem, row = self._prepare(scope, item.get("text"), item.get("tags"), item.get("metadata"), ts)
                else:
                    raise MemoryValidationError("each item must be a text or an object with 'text'")
            except MemoryValidationError as exc:
                raise MemoryValidationError(f"item {i}: {exc}") from None
            mems.append(mem)
            rows.append(row)
        if rows:
            with self._write(scope) as conn:
                self._insert(conn, scope, rows)
            if len(rows) >= self.ANALYZE_FROM_ROWS:
                self.optimize()
        return mems

    def delete(self, scope: str, id: str) -> bool:
        """Delete one memory of ``scope``; False if ``scope`` has none with that id."""
        return self.pop(scope, id) is not None

    def pop(self, scope: str, id: str) -> Memory | None:
        """Delete one memory of ``scope`` and return it (None if absent)."""
        _check_pg_scope(scope)
        if _usable_id(id) is None:
            return None
        with self._write(scope) as conn:
            row = conn.execute(f"DELETE FROM memories m WHERE m.scope = %s AND m.id = %s RETURNING {_COLUMNS}, m.size", (scope, id)).fetchone()
            if row is None:
                return None
            self._deleted(conn, scope, [row[6]])
        return _memory(row)

    def forget_memories(self, scope: str, query: str, limit: int = 5) -> builtins.list[Memory]:
        """Delete the (at most ``limit``) best matches containing every word of ``query``; returns them."""
        _check_pg_scope(scope)
        limit = clamp(limit, 1, self.limits.max_search_limit, 5)
        if not query_terms(as_query_text(query)):
            return []
        with self._write(scope) as conn:
            rows = self._rows(conn, scope, as_query_text(query), limit, [], "all")
            if not rows:
                return []
            sizes = conn.execute("DELETE FROM memories WHERE scope = %s AND seq = ANY(%s) RETURNING size", (scope, [r[7] for r in rows])).fetchall()
            self._deleted(conn, scope, [s for (s,) in sizes])
        return [_memory(r) for r in rows]

    def forget(self, scope: str, query: str, limit: int = 5) -> builtins.list[str]:
        return [m.id for m in self.forget_memories(scope, query, limit)]

    def delete_all(self, scope: str) -> int:
        """Delete every memory of ``scope``; returns how many."""
        _check_pg_scope(scope)
        with self._write(scope) as conn:
            sizes = conn.execute("DELETE FROM memories WHERE scope = %s RETURNING size", (scope,)).fetchall()
            self._deleted(conn, scope, [s for (s,) in sizes])
        return len(sizes)

    # -- reads -------------------------------------------------------------

    def get(self, scope: str, id: str) -> Memory | None:
        _check_pg_scope(scope)
        if _usable_id(id) is None:
            return None
        with self._connection() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM memories m WHERE m.scope = %s AND m.id = %s", (scope, id)).fetchone()
        return _memory(row) if row else None

    def count(self, scope: str) -> int:
        _check_pg_scope(scope)
        with self._connection() as conn:
            row = conn.execute("SELECT n FROM memories_usage WHERE owner = %s", ("s:" + scope,)).fetchone()
        return int(row[0]) if row else 0

    def list(self, scope: str, limit: int = 20, after: str | None = None, order: Order = "asc", tags: Iterable[str] | None = None) -> MemoryPage:
        """One page of ``scope``'s memories in creation order (``after``: a position, never a lookup)."""
        _check_pg_scope(scope)
        limit = clamp(limit, 1, self.limits.max_list_limit, 20)
        desc = order == "desc"
        params: builtins.list[Any] = [scope]
        sql = f"SELECT {_COLUMNS} FROM memories m WHERE m.scope = %s"
        if after is not None:
            sql += " AND m.id < %s" if desc else " AND m.id > %s"
            params.append(_no_nul(scrub(str(after))))
        sql += _tag_clause(clean_tags(tags, self.limits, strict=False), params)
        sql += f" ORDER BY m.id {'DESC' if desc else 'ASC'} LIMIT %s"
        params.append(limit + 1)
        with self._connection() as conn:
            rows = conn.execute(sql, params).fetchall()  # pyright: ignore[reportArgumentType]  # built from literals above
        return MemoryPage(data=[_memory(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def export(self, scope: str) -> builtins.list[Memory]:
        return builtins.list(self.iter_export(scope))

    def iter_export(self, scope: str, batch: int = 1000) -> Iterator[Memory]:
        after: str | None = None
        while True:
            page = self.list(scope, limit=batch, after=after)
            yield from page.data
            if not page.has_more:
                return
            after = page.last_id

    def search(self, scope: str, query: str, limit: int = 5, tags: Iterable[str] | None = None, match: MatchMode = "any") -> builtins.list[MemoryHit]:
        """Memories of ``scope`` ranked against the words of ``query`` (see the module docstring); never raises on odd text."""
        _check_pg_scope(scope)
        limit = clamp(limit, 1, self.limits.max_search_limit, 5)
        wanted_tags = clean_tags(tags, self.limits, strict=False)
        with self._connection() as conn:
            rows = self._rows(conn, scope, as_query_text(query), limit, wanted_tags, match)
        return [MemoryHit(_memory(r), score(r[6])) for r in rows]

    # -- search ------------------------------------------------------------

    def _tsqueries(self, conn: psycopg.Connection[Any], terms: Sequence[str]) -> builtins.list[str]:
        """Each word as its tsquery text (PostgreSQL's stemming of the folded word); words that index nothing are left out."""
        keys = [fold(t).lower() for t in terms]
        missing = sorted({k for k in keys if self._queries.get(k) is None})
        if missing:
            for word, text in conn.execute(f"SELECT w, phraseto_tsquery('{TS_CONFIG}', w)::text FROM unnest(%s::text[]) AS w", (missing,)):
                self._queries.put(word, text or "")
        out: builtins.list[str] = []
        for key in keys:
            text = self._queries.get(key)
            if text and text not in out:
                out.append(text)
        return out

    def _frequencies(self, conn: psycopg.Connection[Any]) -> tuple[dict[str, float], float]:
        """The vector column's most common lexemes with the share of rows holding each, and the smallest share listed."""
        now = time.monotonic()
        with self._stats_lock:
            at, freqs, floor = self._stats
            if now - at < self.STATS_TTL:
                return freqs, floor
        row = conn.execute(
            "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = 'memories' AND attname = 'vec'"
        ).fetchone()
        freqs, floor = {}, 0.0
        if row and row[0] and row[1]:
            elems, shares = row[0], row[1]
            freqs = {str(e): float(f) for e, f in zip(elems, shares, strict=False)}
            # most_common_elem_freqs ends with the minimum, maximum and null share.
            floor = float(shares[len(elems)]) if len(shares) > len(elems) else min(freqs.values())
        with self._stats_lock:
            self._stats = (now, freqs, floor)
        return freqs, floor

    def _scope_size(self, conn: psycopg.Connection[Any], scope: str) -> int:
        """Memories in ``scope``, for planning only (a second old at most: a round trip saved per search)."""
        now = time.monotonic()
        cached = self._sizes.get(scope)
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        row = conn.execute("SELECT n FROM memories_usage WHERE owner = %s", ("s:" + scope,)).fetchone()
        size = int(row[0]) if row else 0
        if len(self._sizes) > 4096:
            self._sizes.clear()
        self._sizes[scope] = (now, size)
        return size

    def _rows(self, conn: psycopg.Connection[Any], scope: str, query: str, limit: int, tags: Sequence[str], mode: MatchMode) -> builtins.list[tuple[Any, ...]]:
        terms = query_terms(query)
        if not terms:
            return self._newest_with_tags(conn, scope, tags, limit) if tags else []
        tsq = self._tsqueries(conn, terms)
        if not tsq:
            return []
        if mode == "all":
            if len(tsq) < len({fold(t).lower() for t in terms}):
                # A word that indexes nothing cannot occur in a memory: nothing holds every word.
                return []
            return self._ranked(conn, scope, tsq, mode, tags, limit)
        in_scope = self._scope_size(conn, scope)
        freqs, floor = self._frequencies(conn) if in_scope >= self.PLAN_FROM_ROWS else ({}, 0.0)
        if not freqs:
            # A small scope, or no statistics yet (a young table): rank every word.
            return self._ranked(conn, scope, tsq, "any", tags, limit)

        def rows_with(q: str) -> float:
            lexemes = [lex.replace("''", "'") for lex in _LEXEME.findall(q)]
            share = min((freqs.get(lex, floor) for lex in lexemes), default=floor)
            return share * in_scope

        est = {q: rows_with(q) for q in tsq}
        by_rarity = sorted(tsq, key=est.__getitem__)
        ranked: builtins.list[str] = []
        rows_ranked = 0.0
        for q in by_rarity:
            # Each matching row is read once, then tested and ranked once per ranked word.
            cost = (rows_ranked + est[q]) * (self.ROW_US + self.RANK_US * (len(ranked) + 1))
            if cost > self.SEARCH_BUDGET_US:
                break
            ranked.append(q)
            rows_ranked += est[q]
        common = by_rarity[len(ranked) :]
        rows = self._ranked(conn, scope, ranked, "any", tags, limit) if ranked else []
        if common and len(rows) < limit:
            seen = [r[7] for r in rows]
            rows += self._newest_matching(conn, scope, common, tags, limit - len(rows), seen)
        return rows

    def _ranked(
        self, conn: psycopg.Connection[Any], scope: str, tsq: Sequence[str], mode: MatchMode, tags: Sequence[str], limit: int
    ) -> builtins.list[tuple[Any, ...]]:
        joiner = " && " if mode == "all" else " || "
        combined = joiner.join(f"%(q{i})s::tsquery" for i in range(len(tsq)))
        params: dict[str, Any] = {f"q{i}": q for i, q in enumerate(tsq)}
        params |= {"scope": scope, "owner": "s:" + scope, "limit": limit}
        tag_filter = ""
        if tags:
            tag_filter = " AND m.tag_list && %(tags)s::text[]"
            params["tags"] = [_no_nul(t) for t in tags]
        if len(tsq) == 1:
            # One word: its IDF is the same for every row, ts_rank alone orders them.
            sql = f"""
                SELECT {_COLUMNS}, ts_rank({_WEIGHTS}, m.vec, %(q0)s::tsquery, 1)::float8 AS score, m.seq
                FROM memories m WHERE m.scope = %(scope)s AND m.vec @@ %(q0)s::tsquery{tag_filter}
                ORDER BY score DESC, m.seq DESC LIMIT %(limit)s
            """
            return _fetch(conn, sql, params)
        # BM25's IDF within the scope, ln(1 + (N - df + 0.5) / (df + 0.5)), counted over the rows that match at all.
        # d and w are one row each, materialized: inlined, a nested loop could recount d for every row of c.
        counts = ", ".join(f"count(*) FILTER (WHERE c.vec @@ %(q{i})s::tsquery)::float8 AS d{i}" for i in range(len(tsq)))
        idfs = ", ".join(f"ln(1 + (u.n - d.d{i} + 0.5) / (d.d{i} + 0.5)) AS w{i}" for i in range(len(tsq)))
        rank = " + ".join(f"w.w{i} * ts_rank({_WEIGHTS}, c.vec, %(q{i})s::tsquery, 1)" for i in range(len(tsq)))
        sql = f"""
            WITH c AS MATERIALIZED (
                SELECT m.seq, m.vec FROM memories m WHERE m.scope = %(scope)s AND m.vec @@ ({combined}){tag_filter}
            ), d AS MATERIALIZED (SELECT {counts} FROM c),
            w AS MATERIALIZED (SELECT {idfs} FROM d, (SELECT coalesce(max(n), 0)::float8 AS n FROM memories_usage WHERE owner = %(owner)s) u),
            r AS (SELECT c.seq, {rank} AS score FROM c, w ORDER BY score DESC, c.seq DESC LIMIT %(limit)s)
            SELECT {_COLUMNS}, r.score, m.seq FROM r JOIN memories m ON m.seq = r.seq ORDER BY r.score DESC, m.seq DESC
        """
        return _fetch(conn, sql, params)

    def _newest_matching(
        self, conn: psycopg.Connection[Any], scope: str, tsq: Sequence[str], tags: Sequence[str], limit: int, seen: Sequence[int]
    ) -> builtins.list[tuple[Any, ...]]:
        combined = " || ".join(f"%(q{i})s::tsquery" for i in range(len(tsq)))
        params: dict[str, Any] = {f"q{i}": q for i, q in enumerate(tsq)}
        params |= {"scope": scope, "limit": limit, "seen": builtins.list(seen)}
        sql = f"SELECT {_COLUMNS}, 0.0, m.seq FROM memories m WHERE m.scope = %(scope)s AND m.vec @@ ({combined}) AND NOT (m.seq = ANY(%(seen)s::bigint[]))"
        if tags:
            sql += " AND m.tag_list && %(tags)s::text[]"
            params["tags"] = [_no_nul(t) for t in tags]
        sql += " ORDER BY m.id DESC LIMIT %(limit)s"
        return _fetch(conn, sql, params)

    def _newest_with_tags(self, conn: psycopg.Connection[Any], scope: str, tags: Sequence[str], limit: int) -> builtins.list[tuple[Any, ...]]:
        return _fetch(
            conn,
            f"SELECT {_COLUMNS}, 0.0, m.seq FROM memories m WHERE m.scope = %(scope)s AND m.tag_list && %(tags)s::text[] ORDER BY m.id DESC LIMIT %(limit)s",
            {"scope": scope, "tags": [_no_nul(t) for t in tags], "limit": limit},
        )

    # -- moving an installation ----------------------------------------------

    def import_rows(self, batches: Iterable[Sequence[MemoryRow]]) -> int:
        """Write memories exported from another store as they are (ids, scopes, times, tags and metadata kept), in one transaction.

        For ``toolrelay db copy``: the caps are not checked (the memories exist
        already; refusing some would lose them), the search vectors are built
        with this store's language and the usage rows grow by what was written.
        Returns the number of rows written.
        """
        usage: dict[str, builtins.list[int]] = {}
        written = 0
        with self._connection() as conn, conn.transaction():
            for batch in batches:
                if not batch:
                    continue
                columns: builtins.list[builtins.list[Any]] = [[] for _ in range(10)]
                for row in batch:
                    _check_pg_scope(row.scope)
                    tags = [str(t) for t in json.loads(row.tags)] if row.tags else []
                    encoded = row.text.encode()
                    # The SQLite store's measure (its triggers' _SIZE): text, tags JSON and metadata JSON in UTF-8.
                    size = len(encoded) + len(row.tags.encode()) + (len(row.metadata.encode()) if row.metadata else 0)
                    values = (row.id, row.scope, encoded, row.tags, row.created_at, row.metadata, size, fold(row.text), fold(" ".join(tags)))
                    for column, value in zip(columns, (*values, json.dumps([_no_nul(t) for t in tags], ensure_ascii=False)), strict=True):
                        column.append(value)
                    for owner in ("s:" + row.scope, owner_of(row.scope)):
                        counts = usage.setdefault(owner, [0, 0])
                        counts[0] += 1
                        counts[1] += size
                conn.execute(_IMPORT, columns)
                written += len(batch)
            owners = sorted(usage)
            conn.execute(
                "INSERT INTO memories_usage (owner, n, bytes) SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) "
                "ON CONFLICT (owner) DO UPDATE SET n = memories_usage.n + excluded.n, bytes = memories_usage.bytes + excluded.bytes",
                (owners, [usage[o][0] for o in owners], [usage[o][1] for o in owners]),
            )
        self._sizes.clear()
        if written >= self.ANALYZE_FROM_ROWS:
            self.optimize()
        return written

    def count_rows(self) -> int:
        """Memories in every scope together."""
        with self._connection() as conn:
            row = conn.execute("SELECT count(*) FROM memories").fetchone()
        return int(row[0]) if row else 0

    # -- maintenance -------------------------------------------------------

    def optimize(self) -> None:
        """Refresh the planner's statistics (after big imports): the word frequencies the search plans with."""
        with self._connection() as conn:
            conn.execute("ANALYZE memories")
        with self._stats_lock:
            self._stats = (0.0, {}, 0.0)

    def integrity_check(self) -> bool:
        """The usage counters agree with the rows, and every vector is non-NULL."""
        with self._connection() as conn:
            bad = conn.execute(
                """
                WITH real AS (
                    SELECT 's:' || scope AS owner, count(*) AS n, sum(size) AS bytes FROM memories GROUP BY scope
                    UNION ALL
                    SELECT 'o:' || split_part(scope, '/', 1), count(*), sum(size) FROM memories GROUP BY split_part(scope, '/', 1)
                )
                SELECT count(*) FROM real FULL JOIN (SELECT * FROM memories_usage WHERE n <> 0 OR bytes <> 0) u USING (owner)
                WHERE real.n IS DISTINCT FROM u.n OR real.bytes IS DISTINCT FROM u.bytes
                """
            ).fetchone()
            return bool(bad) and bad[0] == 0


def _fetch(conn: psycopg.Connection[Any], sql: str, params: Mapping[str, Any]) -> builtins.list[tuple[Any, ...]]:
    """Rows of a search statement, planned for its own values every time (never prepared).

    psycopg prepares a statement run five times, and PostgreSQL then plans it
    once for any values: a generic plan that takes every scope for an
    average one and ANDs the scope index (100k rows read) with the word's GIN
    entries, 5-20 ms where the plan for the actual words and scope reads only
    the matching rows (1 ms). Planning each time costs about 0.1 ms.
    """
    return conn.execute(sql, params, prepare=False).fetchall()  # pyright: ignore[reportArgumentType]  # built from literals by the callers


def _check_pg_scope(scope: str) -> None:
    check_scope(scope)
    if "\x00" in scope:
        raise MemoryValidationError("scope must not contain U+0000")


def _usable_id(id: Any) -> str | None:
    usable = check_id(id)
    return None if usable is None or "\x00" in usable else usable


def _tag_clause(tags: Sequence[str], params: builtins.list[Any]) -> str:
    if not tags:
        return ""
    params.append([_no_nul(t) for t in tags])
    return " AND m.tag_list && %s::text[]"


def _memory(row: Sequence[Any]) -> Memory:
    id_, scope, text, tags, created_at, metadata = row[:6]
    return Memory(
        id=id_,
        scope=scope,
        text=bytes(text).decode(),
        tags=tuple(json.loads(tags)) if tags else (),
        created_at=int(created_at),
        metadata=json.loads(metadata) if metadata else None,
    )
