"""Long-term memory on SQLite: one database file, FTS5 full-text ranking.

Layout (created on first open, ``PRAGMA user_version`` = 1, WAL mode):

``memories``
    ``seq INTEGER PRIMARY KEY`` (stable rowid for the full-text index), ``id``
    (``mem_`` + 26 chars, unique, time-ordered), ``scope``, ``scope_key`` (the
    scope as one digits-only full-text token), ``text``, ``tags`` (JSON
    array), ``tags_text`` (tags joined by spaces, for full-text search),
    ``created_at`` (unix seconds), ``metadata`` (JSON or NULL). Indexes:
    ``(id)`` unique, ``(scope, id)``.
``memory_counts``
    memories per scope (and the total under the key ``''``), kept by triggers.
``memory_usage``
    memories and stored bytes (text, tags and metadata as stored) per owner,
    kept by triggers: ``s:<scope>`` for each scope, ``o:<key part>`` for all
    the scopes of one API key (``k:<key>`` and its ``k:<key>/u:...``). The
    caps of :class:`MemoryLimits` are checked against it inside the write
    transaction, so a key cannot fill the disk, even by minting ``user``
    values (added after schema 1; created and filled on open).
``memories_fts``
    FTS5, external content (``content=memories``), ``porter unicode61
    remove_diacritics 2`` tokenizer, ``detail=full``, columns ``text``,
    ``tags_text``, ``scope_key``; kept in step by triggers. Ranking is
    ``bm25(1.0, 0.75, 0.0)``.

Scope isolation: every statement filters on ``scope = ?``. Search may also
put the scope's token into the MATCH expression (``scope_key : "<digits>"
AND {text tags_text} : (...)``) so the full-text engine ranks only that
scope's rows; the user's words are always quoted strings restricted to
``text``/``tags_text`` and can never name a column or an operator.

Search cost: bm25 costs about 0.6 us for every matching row plus 0.03 us for
every row containing each query word anywhere in the table. A search is
planned against a budget (3 ms by default): per-word document counts (capped,
cached) decide whether to put the scope in MATCH and which words to rank,
rarest first; words too common to fit (in a very large scope) are used only
to fill the result up, newest first, with score 0. Below 2000 memories in the
database every search is exact.

Threads: :class:`SyncMemoryStore` keeps a small pool of connections (WAL, so
readers never wait for the writer) and serializes its own writes with a lock;
``BEGIN IMMEDIATE`` plus a busy timeout cover other processes.
:class:`MemoryStore` is the async facade: every call runs in a worker thread
(``anyio.to_thread``) so the event loop never blocks on SQLite.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import anyio
import anyio.to_thread
import sqlite_utils

from toolrelay.app.ids import new_memory_id
from toolrelay.app.private_files import private_file

from .models import (
    Memory,
    MemoryHit,
    MemoryPage,
    MemoryQuotaExceeded,
    MemoryStoreClosed,
    MemoryValidationError,
)
from .query import (
    MatchMode,
    build_match,
    is_plain_ascii_word,
    query_terms,
    quote_term,
    tokenize,
)

__all__ = [
    "DEFAULT_LIMITS",
    "MemoryLimits",
    "MemoryStore",
    "SyncMemoryStore",
    "new_memory_id",
]

SCHEMA_VERSION = 1

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

Order = Literal["asc", "desc"]


class MemoryLimits:
    """Size bounds (all inclusive)."""

    __slots__ = (
        "max_bytes_per_key",
        "max_bytes_per_scope",
        "max_list_limit",
        "max_memories_per_key",
        "max_memories_per_scope",
        "max_metadata_bytes",
        "max_search_limit",
        "max_tag_chars",
        "max_tags",
        "max_text_bytes",
    )

    def __init__(
        self,
        *,
        max_text_bytes: int = 8192,
        max_tags: int = 16,
        max_tag_chars: int = 64,
        max_metadata_bytes: int = 4096,
        max_search_limit: int = 100,
        max_list_limit: int = 1000,
        max_memories_per_scope: int = 0,
        max_bytes_per_scope: int = 0,
        max_memories_per_key: int = 0,
        max_bytes_per_key: int = 0,
    ) -> None:
        self.max_text_bytes = max_text_bytes
        self.max_tags = max_tags
        self.max_tag_chars = max_tag_chars
        self.max_metadata_bytes = max_metadata_bytes
        self.max_search_limit = max_search_limit
        self.max_list_limit = max_list_limit
        # Storage caps (0: none); a "key" is every scope sharing the part
        # before the first "/" (an API key and all its users).
        self.max_memories_per_scope = max_memories_per_scope
        self.max_bytes_per_scope = max_bytes_per_scope
        self.max_memories_per_key = max_memories_per_key
        self.max_bytes_per_key = max_bytes_per_key


DEFAULT_LIMITS = MemoryLimits()

def scope_token(scope: str) -> str:
    """The scope as one full-text token: 128 bits of SHA-256 in decimal.

    Digits only, so neither unicode61 nor the porter stemmer alters it.
    """
    return str(int.from_bytes(hashlib.sha256(scope.encode("utf-8", "surrogatepass")).digest()[:16], "big"))


# ---------------------------------------------------------------------------
# validation


def _scrub(s: str) -> str:
    """``s`` with lone surrogates (unencodable, SQLite would refuse them) as U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)


def _check_scope(scope: str) -> str:
    if not isinstance(scope, str) or not scope or len(scope) > 2048 or _scrub(scope) != scope:
        raise MemoryValidationError("scope must be a non-empty string of at most 2048 characters")
    return scope


def _check_id(id: Any) -> str | None:
    """A usable id string, or None for anything that cannot be one."""
    if not isinstance(id, str) or not id or len(id) > 200 or _scrub(id) != id:
        return None
    return id


def normalize_tag(tag: str) -> str:
    """Tags compare case-insensitively, with whitespace collapsed."""
    return " ".join(_scrub(str(tag)).split()).casefold()


def _clean_tags(tags: Iterable[str] | None, limits: MemoryLimits, *, strict: bool) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [tags]
    out: list[str] = []
    for raw in tags:
        if not isinstance(raw, str):
            if strict:
                raise MemoryValidationError("tags must be strings")
            continue
        tag = normalize_tag(raw)
        if not tag:
            continue
        if len(tag) > limits.max_tag_chars:
            if strict:
                raise MemoryValidationError(f"a tag may have at most {limits.max_tag_chars} characters")
            tag = tag[: limits.max_tag_chars]
        if tag not in out:
            out.append(tag)
    if len(out) > limits.max_tags:
        if strict:
            raise MemoryValidationError(f"at most {limits.max_tags} tags per memory")
        out = out[: limits.max_tags]
    return out


def _clean_text(text: str, limits: MemoryLimits) -> str:
    if not isinstance(text, str):
        raise MemoryValidationError("text must be a string")
    text = _scrub(text).strip()
    if not text:
        raise MemoryValidationError("text must not be empty")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_text_bytes:
        raise MemoryValidationError(f"text is {size} bytes, the limit is {limits.max_text_bytes}")
    return text


def _clean_metadata(metadata: Mapping[str, Any] | None, limits: MemoryLimits) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise MemoryValidationError("metadata must be an object")
    try:
        encoded = json.dumps(dict(metadata), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        if _scrub(encoded) != encoded:  # lone surrogates: keep them as JSON escapes
            encoded = json.dumps(dict(metadata), ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise MemoryValidationError(f"metadata is not JSON-serializable: {exc}") from None
    if len(encoded.encode("utf-8")) > limits.max_metadata_bytes:
        raise MemoryValidationError(f"metadata may be at most {limits.max_metadata_bytes} bytes as JSON")
    return encoded


def _clamp(value: Any, lo: int, hi: int, default: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return default
    return max(lo, min(hi, n))


# ---------------------------------------------------------------------------
# SQL

# Row shape of every internal query: the memory, then score, then seq.
_COLS = "m.id, m.scope, m.text, m.tags, m.created_at, m.metadata"

_MEMORIES_EXTRA_DDL = """
CREATE TABLE IF NOT EXISTS memory_counts (
    scope TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS memories_count_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memory_counts(scope, n) VALUES (new.scope, 1), ('', 1)
    ON CONFLICT(scope) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS memories_count_ad AFTER DELETE ON memories BEGIN
    UPDATE memory_counts SET n = n - 1 WHERE scope IN (old.scope, '');
    DELETE FROM memory_counts WHERE scope = old.scope AND n <= 0;
END;
"""

# The stored size of a row and the owner of its scope (the part before "/").
_SIZE = "length(CAST({r}.text AS BLOB)) + length(CAST({r}.tags AS BLOB)) + coalesce(length(CAST({r}.metadata AS BLOB)), 0)"
_OWNER = "'o:' || CASE WHEN instr({r}.scope, '/') > 0 THEN substr({r}.scope, 1, instr({r}.scope, '/') - 1) ELSE {r}.scope END"
_USAGE_DDL = f"""
CREATE TABLE IF NOT EXISTS memory_usage (
    owner TEXT PRIMARY KEY,
    n INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS memories_usage_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memory_usage(owner, n, bytes)
    VALUES ('s:' || new.scope, 1, {_SIZE.format(r="new")}), ({_OWNER.format(r="new")}, 1, {_SIZE.format(r="new")})
    ON CONFLICT(owner) DO UPDATE SET n = n + excluded.n, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS memories_usage_ad AFTER DELETE ON memories BEGIN
    UPDATE memory_usage SET n = n - 1, bytes = bytes - ({_SIZE.format(r="old")})
    WHERE owner IN ('s:' || old.scope, {_OWNER.format(r="old")});
    DELETE FROM memory_usage WHERE owner IN ('s:' || old.scope, {_OWNER.format(r="old")}) AND n <= 0;
END;
CREATE TRIGGER IF NOT EXISTS memories_usage_au AFTER UPDATE ON memories BEGIN
    UPDATE memory_usage SET bytes = bytes - ({_SIZE.format(r="old")}) + ({_SIZE.format(r="new")})
    WHERE owner IN ('s:' || new.scope, {_OWNER.format(r="new")});
END;
"""
_USAGE_BACKFILL = f"""
INSERT INTO memory_usage(owner, n, bytes)
SELECT owner, count(*), sum(size) FROM (
    SELECT 's:' || m.scope AS owner, {_SIZE.format(r="m")} AS size FROM memories m
    UNION ALL
    SELECT {_OWNER.format(r="m")}, {_SIZE.format(r="m")} FROM memories m
) GROUP BY owner
"""


def _owner_of(scope: str) -> str:
    """The ``memory_usage`` owner of all scopes of the key ``scope`` belongs to."""
    return "o:" + scope.split("/", 1)[0]


_FTS_DDL = """
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    text, tags_text, scope_key,
    content='memories', content_rowid='seq',
    tokenize='porter unicode61 remove_diacritics 2',
    detail={detail}
);
CREATE TRIGGER IF NOT EXISTS memories_fts_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts(rowid, text, tags_text, scope_key)
    VALUES (new.seq, new.text, new.tags_text, new.scope_key);
END;
CREATE TRIGGER IF NOT EXISTS memories_fts_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text, tags_text, scope_key)
    VALUES ('delete', old.seq, old.text, old.tags_text, old.scope_key);
END;
CREATE TRIGGER IF NOT EXISTS memories_fts_au AFTER UPDATE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text, tags_text, scope_key)
    VALUES ('delete', old.seq, old.text, old.tags_text, old.scope_key);
    INSERT INTO memories_fts(rowid, text, tags_text, scope_key)
    VALUES (new.seq, new.text, new.tags_text, new.scope_key);
END;
INSERT INTO memories_fts(memories_fts, rank) VALUES ('rank', 'bm25(1.0, 0.75, 0.0)');
"""

# Column weights: text 1.0, tags 0.75, the scope token 0 (it is in every row
# of the scope, and must not move scores). Same as the configured ``rank``.
_BM25 = "bm25(memories_fts, 1.0, 0.75, 0.0)"


def _row_to_memory(row: Sequence[Any]) -> Memory:
    id_, scope, text, tags, created_at, metadata = row[:6]
    return Memory(
        id=id_,
        scope=scope,
        text=text,
        tags=tuple(json.loads(tags)) if tags else (),
        created_at=int(created_at),
        metadata=json.loads(metadata) if metadata else None,
    )


def _tag_clause(tags: Sequence[str], params: list[Any]) -> str:
    """SQL condition: the memory carries at least one of ``tags`` (exact)."""
    if not tags:
        return ""
    params.extend(tags)
    marks = ",".join("?" * len(tags))
    return f" AND EXISTS (SELECT 1 FROM json_each(m.tags) WHERE json_each.value IN ({marks}))"


def _tag_prefilter(tags: Sequence[str]) -> str | None:
    """FTS5 condition that every memory carrying one of ``tags`` satisfies.

    Each tag becomes a phrase in the ``tags_text`` column; the exact
    (``json_each``) check still follows in SQL. None unless every tag is made
    of plain ASCII words, where FTS5's tokenization is certain (a tag FTS5
    might not index must not filter anything out).
    """
    phrases = []
    for tag in tags:
        words = tokenize(tag)
        if not words or not all(is_plain_ascii_word(w) for w in words):
            return None
        phrases.append(quote_term(" ".join(words)))
    return "tags_text : (" + " OR ".join(phrases) + ")" if phrases else None


class _DfCache:
    """Small LRU of per-word document counts (capped), shared by all threads.

    Only used to plan a search (which words are too common to rank), so a
    stale entry costs a little speed or recall, never correctness.
    """

    def __init__(self, size: int = 8192, ttl: float = 300.0) -> None:
        self._size = size
        self._ttl = ttl
        self._data: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, term: str) -> int | None:
        with self._lock:
            item = self._data.get(term)
            if item is None:
                return None
            if item[1] < time.monotonic():
                del self._data[term]
                return None
            self._data.move_to_end(term)
            return item[0]

    def put(self, term: str, df: int) -> None:
        with self._lock:
            self._data[term] = (df, time.monotonic() + self._ttl)
            self._data.move_to_end(term)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


# ---------------------------------------------------------------------------
# the store


class SyncMemoryStore:
    """Blocking memory store; safe to share between threads.

    Use :class:`MemoryStore` from async code.

    ``scope_strategy`` (for benchmarks; keep ``"auto"``): ``"match"`` always
    puts the scope token into the FTS5 query, ``"filter"`` only filters the
    joined rows on ``scope = ?``; ``"auto"`` picks the cheaper per query.
    The SQL ``scope = ?`` filter is applied in every case.
    """

    # Search cost model, microseconds per row, measured with SQLite 3.40 on
    # a 2-core x86 box (bench/memory_search.py). bm25 first counts, for each
    # phrase of the query, every row of the whole table containing it (its
    # idf), then scores every matching row.
    IDF_US = 0.03  # per row of a phrase's doclist (also what count(*) costs)
    RANK_US = 0.6  # per matching row scored by bm25 (+ the top-k sorter)
    RANK_PER_TERM = 0.05  # relative extra per additional word in the query
    #: Planned cost above which the most common words are not ranked.
    SEARCH_BUDGET_US = 3000.0
    #: Per-word document counts are counted up to this many rows ...
    DF_CAP = 8000
    #: ... and at most this many rows are counted per search (cold cache).
    DF_COUNT_BUDGET = 24000
    #: Below this many memories in the database, every search is exact.
    EXACT_BELOW_ROWS = 2000

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limits: MemoryLimits = DEFAULT_LIMITS,
        max_connections: int = 8,
        busy_timeout: float = 10.0,
        fts_detail: Literal["full", "column"] = "full",
        scope_strategy: Literal["auto", "match", "filter"] = "auto",
        search_budget_ms: float | None = None,
    ) -> None:
        self.path = Path(path)
        if search_budget_ms is not None:
            self.SEARCH_BUDGET_US = float(search_budget_ms) * 1000.0
        self.limits = limits
        self._busy_timeout = busy_timeout
        if scope_strategy not in ("auto", "match", "filter"):
            raise ValueError("scope_strategy must be 'auto', 'match' or 'filter'")
        self._scope_strategy = scope_strategy
        self._pool: queue.LifoQueue[sqlite_utils.Database] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._write_lock = threading.RLock()
        self._df_cache = _DfCache()
        self._closed = False
        with self._connection() as db:
            self._init_schema(db, fts_detail)

    # -- connections -------------------------------------------------------

    def _connect(self) -> sqlite_utils.Database:
        private_file(self.path)  # 0600 before SQLite creates it (issue 10 item 16)
        conn = sqlite3.connect(
            str(self.path),
            timeout=self._busy_timeout,
            isolation_level=None,  # autocommit; write transactions are explicit
            check_same_thread=False,  # pooled; used by one thread at a time
            cached_statements=256,
        )
        try:
            for pragma in (
                "PRAGMA journal_mode=WAL",
                "PRAGMA synchronous=NORMAL",
                f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}",
                "PRAGMA temp_store=MEMORY",
                "PRAGMA cache_size=-32000",
                "PRAGMA mmap_size=268435456",
            ):
                conn.execute(pragma)
        except BaseException:
            conn.close()
            raise
        return sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)

    @contextmanager
    def _connection(self) -> Iterator[sqlite_utils.Database]:
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
                if db.conn.in_transaction:  # an exception escaped mid-write
                    db.conn.execute("ROLLBACK")
                if self._closed:
                    db.conn.close()
                else:
                    self._pool.put(db)
        finally:
            self._slots.release()

    @contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        """A connection inside ``BEGIN IMMEDIATE``; commits on success."""
        with self._write_lock, self._connection() as db:
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.conn.execute("ROLLBACK")
                raise
            db.conn.execute("COMMIT")

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
            db.conn.close()

    def __enter__(self) -> SyncMemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _init_schema(self, db: sqlite_utils.Database, detail: str) -> None:
        if detail not in ("full", "column"):
            raise ValueError("fts_detail must be 'full' or 'column'")
        with self._write_lock:
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                version = db.conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"{self.path}: memory schema {version} is newer than this code ({SCHEMA_VERSION})"
                    )
                tables = set(db.table_names())
                if "memories" not in tables:
                    db["memories"].create(
                        {
                            "seq": int,
                            "id": str,
                            "scope": str,
                            "scope_key": str,
                            "text": str,
                            "tags": str,
                            "tags_text": str,
                            "created_at": int,
                            "metadata": str,
                        },
                        pk="seq",
                        not_null={"id", "scope", "scope_key", "text", "tags", "tags_text", "created_at"},
                    )
                    db["memories"].create_index(["id"], index_name="memories_id", unique=True)
                    db["memories"].create_index(["scope", "id"], index_name="memories_scope_id")
                    for stmt in _split_sql(_MEMORIES_EXTRA_DDL):
                        db.conn.execute(stmt)
                if "memories_fts" not in tables:
                    for stmt in _split_sql(_FTS_DDL.format(detail=detail)):
                        db.conn.execute(stmt)
                if "memory_usage" not in tables:
                    for stmt in _split_sql(_USAGE_DDL):
                        db.conn.execute(stmt)
                    db.conn.execute(_USAGE_BACKFILL)  # a database from before the caps
                db.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.conn.execute("COMMIT")
            except BaseException:
                db.conn.execute("ROLLBACK")
                raise

    # -- writes ------------------------------------------------------------

    _INSERT = (
        "INSERT INTO memories (id, scope, scope_key, text, tags, tags_text, created_at, metadata) "
        "VALUES (?,?,?,?,?,?,?,?)"
    )

    def _prepare(
        self,
        scope: str,
        text: str,
        tags: Iterable[str] | None,
        metadata: Mapping[str, Any] | None,
        created_at: int,
        scope_key: str,
    ) -> tuple[Memory, tuple[Any, ...]]:
        text = _clean_text(text, self.limits)
        clean_tags = _clean_tags(tags, self.limits, strict=True)
        meta = _clean_metadata(metadata, self.limits)
        mem = Memory(
            id=new_memory_id(),
            scope=scope,
            text=text,
            tags=tuple(clean_tags),
            created_at=created_at,
            metadata=json.loads(meta) if meta else None,
        )
        row = (
            mem.id,
            scope,
            scope_key,
            text,
            json.dumps(clean_tags, ensure_ascii=False, separators=(",", ":")),
            " ".join(clean_tags),
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
        _check_scope(scope)
        mem, row = self._prepare(scope, text, tags, metadata, int(time.time()), scope_token(scope))
        with self._write() as db:
            self._check_room(db, scope, [row])
            db.conn.execute(self._INSERT, row)
        return mem

    def save_many(
        self, scope: str, items: Iterable[str | Mapping[str, Any]], *, created_at: int | None = None
    ) -> builtins.list[Memory]:
        """Bulk import in one transaction (one ``executemany``).

        Each item is a text or a mapping with ``text`` and optional ``tags``,
        ``metadata``, ``created_at``. Everything is validated before anything
        is written; one bad item rejects the batch.
        """
        _check_scope(scope)
        now = int(time.time()) if created_at is None else int(created_at)
        key = scope_token(scope)
        mems: builtins.list[Memory] = []
        rows: builtins.list[tuple[Any, ...]] = []
        for i, item in enumerate(items):
            try:
                if isinstance(item, str):
                    mem, row = self._prepare(scope, item, None, None, now, key)
                elif isinstance(item, Mapping):
                    ts = _clamp(item.get("created_at", now), 0, 2**62, now)
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
                db.conn.executemany(self._INSERT, rows)
        return mems

    def _check_room(self, db: sqlite_utils.Database, scope: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Raise MemoryQuotaExceeded unless ``rows`` fit the scope's and the key's caps."""
        lim = self.limits
        if not (lim.max_memories_per_scope or lim.max_bytes_per_scope or lim.max_memories_per_key or lim.max_bytes_per_key):
            return
        # Same measure as the triggers' _SIZE: text, tags JSON and metadata JSON in UTF-8.
        adding = sum(len(r[3].encode()) + len(r[4].encode()) + (len(r[7].encode()) if r[7] else 0) for r in rows)
        got = {
            owner: (n, size)
            for owner, n, size in db.conn.execute(
                "SELECT owner, n, bytes FROM memory_usage WHERE owner IN (?, ?)", ("s:" + scope, _owner_of(scope))
            )
        }
        for owner, what, max_n, max_bytes in (
            ("s:" + scope, "this memory scope", lim.max_memories_per_scope, lim.max_bytes_per_scope),
            (_owner_of(scope), "this API key (all its users together)", lim.max_memories_per_key, lim.max_bytes_per_key),
        ):
            n, size = got.get(owner, (0, 0))
            if max_n and n + len(rows) > max_n:
                raise MemoryQuotaExceeded(
                    f"memory is full: {what} holds {n} memories and the limit is {max_n}; "
                    "delete (forget) memories that are no longer needed before saving more"
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
        _check_scope(scope)
        if _check_id(id) is None:
            return None
        with self._write() as db:
            row = db.conn.execute(
                f"SELECT {_COLS}, 0.0, m.seq FROM memories m WHERE m.scope = ? AND m.id = ?", (scope, id)
            ).fetchone()
            if row is None:
                return None
            db.conn.execute("DELETE FROM memories WHERE seq = ? AND scope = ?", (row[7], scope))
        return _row_to_memory(row)

    def forget_memories(self, scope: str, query: str, limit: int = 5) -> builtins.list[Memory]:
        """Delete the (at most ``limit``) best matches containing every word of ``query``.

        Stricter than :meth:`search` (all words must occur, not any), so a
        vague query does not wipe loosely related memories; a query without
        usable words deletes nothing. Returns what was deleted.
        """
        _check_scope(scope)
        limit = _clamp(limit, 1, self.limits.max_search_limit, 5)
        with self._write() as db:
            rows = self._search_rows(db, scope, query, limit, [], "all") if query_terms(_as_text(query)) else []
            if rows:
                seqs = [r[7] for r in rows]
                marks = ",".join("?" * len(seqs))
                db.conn.execute(f"DELETE FROM memories WHERE scope = ? AND seq IN ({marks})", (scope, *seqs))
        return [_row_to_memory(r) for r in rows]

    def forget(self, scope: str, query: str, limit: int = 5) -> builtins.list[str]:
        """Like :meth:`forget_memories`, returning the deleted ids."""
        return [m.id for m in self.forget_memories(scope, query, limit)]

    def delete_all(self, scope: str) -> int:
        """Delete every memory of ``scope``; returns how many."""
        _check_scope(scope)
        with self._write() as db:
            return db.conn.execute("DELETE FROM memories WHERE scope = ?", (scope,)).rowcount

    # -- reads -------------------------------------------------------------

    def get(self, scope: str, id: str) -> Memory | None:
        """The memory ``id`` if it belongs to ``scope``, else None."""
        _check_scope(scope)
        if _check_id(id) is None:
            return None
        with self._connection() as db:
            row = db.conn.execute(
                f"SELECT {_COLS} FROM memories m WHERE m.scope = ? AND m.id = ?", (scope, id)
            ).fetchone()
        return _row_to_memory(row) if row else None

    def count(self, scope: str) -> int:
        _check_scope(scope)
        with self._connection() as db:
            row = db.conn.execute("SELECT n FROM memory_counts WHERE scope = ?", (scope,)).fetchone()
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
        _check_scope(scope)
        limit = _clamp(limit, 1, self.limits.max_list_limit, 20)
        desc = order == "desc"
        params: list[Any] = [scope]
        sql = f"SELECT {_COLS} FROM memories m WHERE m.scope = ?"
        if after is not None:
            sql += " AND m.id < ?" if desc else " AND m.id > ?"
            params.append(_scrub(str(after)))
        sql += _tag_clause(_clean_tags(tags, self.limits, strict=False), params)
        sql += f" ORDER BY m.id {'DESC' if desc else 'ASC'} LIMIT ?"
        params.append(limit + 1)
        with self._connection() as db:
            rows = db.conn.execute(sql, params).fetchall()
        return MemoryPage(data=[_row_to_memory(r) for r in rows[:limit]], has_more=len(rows) > limit)

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
        _check_scope(scope)
        limit = _clamp(limit, 1, self.limits.max_search_limit, 5)
        clean_tags = _clean_tags(tags, self.limits, strict=False)
        with self._connection() as db:
            rows = self._search_rows(db, scope, _as_text(query), limit, clean_tags, match)
        return [MemoryHit(_row_to_memory(r), _score(r[6])) for r in rows]

    # -- search internals ----------------------------------------------------

    def _stats(self, db: sqlite_utils.Database, scope: str) -> tuple[int, int]:
        """(memories in the database, memories in ``scope``)."""
        got = dict(db.conn.execute("SELECT scope, n FROM memory_counts WHERE scope IN ('', ?)", (scope,)).fetchall())
        return int(got.get("", 0)), int(got.get(scope, 0))

    def _estimates(self, db: sqlite_utils.Database, terms: Sequence[str], total: int) -> tuple[dict[str, int], int]:
        """Rows of the whole table containing each term; ``total`` for common ones.

        Counts stop at DF_CAP (a word that common is not worth ranking in a
        big scope) and are cached. Uncached words share a counting budget of
        DF_COUNT_BUDGET rows per search, so a long message full of common
        words cannot spend milliseconds on counting; words left uncounted
        are treated as common. Returns the estimates and the rows counted.
        """
        est: dict[str, int] = {}
        todo: list[str] = []
        for t in terms:
            df = self._df_cache.get(t.lower())
            if df is None:
                todo.append(t)
            else:
                est[t] = df if df < self.DF_CAP else total
        budget = self.DF_COUNT_BUDGET
        for t in todo:
            cap = min(self.DF_CAP, budget)
            if cap <= 0:
                est[t] = total
                continue
            df = db.conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM memories_fts WHERE memories_fts MATCH ? LIMIT ?)",
                (build_match([t]), cap),
            ).fetchone()[0]
            budget -= df
            if df < cap or cap == self.DF_CAP:
                self._df_cache.put(t.lower(), df)
            est[t] = df if df < cap else total
        return est, self.DF_COUNT_BUDGET - budget

    def _run_fts(
        self,
        db: sqlite_utils.Database,
        scope: str,
        terms: Sequence[str],
        mode: MatchMode,
        scoped: bool,
        tags: Sequence[str],
        limit: int,
        *,
        newest_first: bool = False,
    ) -> builtins.list[tuple[Any, ...]]:
        """One FTS5 query, filtered on scope (always in SQL, optionally in MATCH)."""
        expr = build_match(
            list(terms),
            mode=mode,
            scope_column="scope_key" if scoped else None,
            scope_token=scope_token(scope) if scoped else None,
        )
        if expr is None:
            return []
        prefilter = _tag_prefilter(tags)
        if prefilter:
            expr = f"{expr} AND {prefilter}"
        try:
            # Fast path: rank inside FTS5 alone (explicit bm25() with SQLite's
            # top-k sorter is ~25% cheaper than ORDER BY rank), take a few
            # spare rows, then join and filter on scope and tags.
            spare = limit + 8 if scoped else 4 * limit + 16
            order = "rowid DESC" if newest_first else "s"
            score = "0.0" if newest_first else _BM25
            ranked = db.conn.execute(
                f"SELECT rowid, {score} AS s FROM memories_fts WHERE memories_fts MATCH ? ORDER BY {order} LIMIT ?",
                (expr, spare),
            ).fetchall()
            if not ranked:
                return []
            params: list[Any] = [r[0] for r in ranked]
            params.append(scope)
            sql = (
                f"SELECT {_COLS}, m.seq FROM memories m WHERE m.seq IN ({','.join('?' * len(ranked))}) AND +m.scope = ?"
            )
            sql += _tag_clause(tags, params)
            found = {row[-1]: row for row in db.conn.execute(sql, params)}
            rows = [(*found[seq][:6], s, seq) for seq, s in ranked if seq in found][:limit]
            if len(rows) == limit or len(ranked) < spare:
                return rows  # enough, or every match was looked at
            # Other scopes' rows or the tag filter used up the spare rows:
            # let SQLite walk the ranked matches until ``limit`` pass.
            order = "memories_fts.rowid DESC" if newest_first else "memories_fts.rank"
            score = "0.0" if newest_first else "memories_fts.rank"
            params = [expr, scope]
            sql = (
                f"SELECT {_COLS}, {score}, m.seq FROM memories_fts "
                "JOIN memories m ON m.seq = memories_fts.rowid "
                "WHERE memories_fts MATCH ? AND m.scope = ?"
            )
            sql += _tag_clause(tags, params) + f" ORDER BY {order} LIMIT ?"
            params.append(limit)
            return db.conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            # The expression holds quoted words only, so this is not expected;
            # an FTS5 complaint must not turn into a server error though.
            if "fts5" in str(exc).lower():
                log.warning("memory search: FTS5 rejected %r: %s", expr[:200], exc)
                return []
            raise

    def _search_rows(
        self,
        db: sqlite_utils.Database,
        scope: str,
        query: str,
        limit: int,
        tags: Sequence[str],
        mode: MatchMode,
    ) -> builtins.list[tuple[Any, ...]]:
        terms = query_terms(query)
        if not terms:
            return self._newest_with_tags(db, scope, tags, limit) if tags else []
        total, in_scope = self._stats(db, scope)
        if in_scope == 0:
            return []
        frac = in_scope / max(total, 1)
        strategy = self._scope_strategy
        if mode == "all" or total < self.EXACT_BELOW_ROWS:
            scoped = strategy == "match" or (strategy == "auto" and frac < 0.5)
            return self._run_fts(db, scope, terms, mode, scoped, tags, limit)

        # Plan: est[t] is how many rows contain t (the whole table when the
        # count hit the cap). Scoping in MATCH costs the scope's own doclist
        # once but then only ranks the scope's rows.
        est, counted = self._estimates(db, terms, total)
        by_rarity = sorted(terms, key=est.__getitem__)
        # Counting (cold cache) already spent part of the budget.
        budget = max(self.SEARCH_BUDGET_US - counted * self.IDF_US, self.SEARCH_BUDGET_US / 3)

        def plan(scoped: bool) -> tuple[int, float]:
            """(how many of the rarest words fit the budget, planned cost)."""
            fixed = in_scope * self.IDF_US if scoped else 0.0
            share = frac if scoped else 1.0
            rows = 0
            n, spent = 0, fixed
            for i, t in enumerate(by_rarity):
                # Scoring a row costs a little more for every phrase in the query.
                per_row = self.RANK_US * (1.0 + self.RANK_PER_TERM * i)
                cost = fixed + (rows + est[t]) * (self.IDF_US + share * per_row)
                if cost > budget:
                    break
                rows += est[t]
                n, spent = i + 1, cost
            return n, spent

        if strategy == "auto":
            n_match, cost_match = plan(True)
            n_filter, cost_filter = plan(False)
            scoped = (n_match, -cost_match) > (n_filter, -cost_filter)
            n = n_match if scoped else n_filter
        else:
            scoped = strategy == "match"
            n = plan(scoped)[0]
        ranked, common = by_rarity[:n], by_rarity[n:]
        rows = self._run_fts(db, scope, ranked, "any", scoped, tags, limit) if ranked else []
        if common and len(rows) < limit:
            seen = {r[7] for r in rows}
            more = self._run_fts(db, scope, common, "any", scoped, tags, limit, newest_first=True)
            rows += [r for r in more if r[7] not in seen][: limit - len(rows)]
        return rows

    def _newest_with_tags(
        self, db: sqlite_utils.Database, scope: str, tags: Sequence[str], limit: int
    ) -> builtins.list[tuple[Any, ...]]:
        prefilter = _tag_prefilter(tags)
        params: list[Any]
        if prefilter:
            params = [f"scope_key : {quote_term(scope_token(scope))} AND {prefilter}", scope]
            sql = (
                f"SELECT {_COLS}, 0.0, m.seq FROM memories_fts "
                "JOIN memories m ON m.seq = memories_fts.rowid "
                "WHERE memories_fts MATCH ? AND m.scope = ?"
            )
            order = " ORDER BY memories_fts.rowid DESC LIMIT ?"
        else:
            params = [scope]
            sql = f"SELECT {_COLS}, 0.0, m.seq FROM memories m WHERE m.scope = ?"
            order = " ORDER BY m.id DESC LIMIT ?"
        sql += _tag_clause(tags, params) + order
        params.append(limit)
        return db.conn.execute(sql, params).fetchall()

    # -- maintenance -------------------------------------------------------

    def optimize(self) -> None:
        """Merge the full-text index into one segment (after big imports)."""
        with self._write() as db:
            db.conn.execute("INSERT INTO memories_fts(memories_fts) VALUES ('optimize')")

    def integrity_check(self) -> bool:
        """FTS index consistent with the table, and SQLite's quick_check passes."""
        with self._connection() as db:
            try:
                db.conn.execute("INSERT INTO memories_fts(memories_fts, rank) VALUES ('integrity-check', 1)")
            except sqlite3.DatabaseError:
                return False
            return db.conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def _score(bm25: float) -> float:
    """``-bm25`` to 6 significant digits (higher is better; 0.0 when unranked)."""
    return float(f"{-float(bm25):.6g}") + 0.0


def _as_text(query: Any) -> str:
    if isinstance(query, str):
        return _scrub(query)
    return "" if query is None else _scrub(str(query))


def _split_sql(script: str) -> builtins.list[str]:
    """Statements of a script (trigger bodies hold ``;`` inside BEGIN ... END)."""
    out: builtins.list[str] = []
    buf: builtins.list[str] = []
    for line in script.strip().splitlines():
        buf.append(line)
        stmt = "\n".join(buf).strip()
        if stmt.endswith(";") and sqlite3.complete_statement(stmt):
            out.append(stmt)
            buf = []
    if "".join(buf).strip():
        out.append("\n".join(buf))
    return out


class MemoryStore:
    """Async facade over :class:`SyncMemoryStore`.

    Every method runs the blocking SQLite work in a worker thread, at most
    ``max_concurrency`` at a time, so the event loop never waits on disk.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_concurrency: int = 4, **kwargs: Any) -> None:
        """Open (creating if needed) the database; blocks briefly, see :meth:`open`.

        ``kwargs`` go to :class:`SyncMemoryStore` (``limits``, ``busy_timeout``,
        ``search_budget_ms``, ...).
        """
        self.sync = SyncMemoryStore(path, max_connections=max_concurrency, **kwargs)
        self._limiter = anyio.CapacityLimiter(max_concurrency)

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, max_concurrency: int = 4, **kwargs: Any) -> MemoryStore:
        """Like the constructor, with the file opening and schema set-up in a worker thread."""
        return await anyio.to_thread.run_sync(functools.partial(cls, path, max_concurrency=max_concurrency, **kwargs))

    @classmethod
    def from_sync(cls, sync: SyncMemoryStore, *, max_concurrency: int = 4) -> MemoryStore:
        self = cls.__new__(cls)
        self.sync = sync
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        return self

    @property
    def path(self) -> Path:
        return self.sync.path

    @property
    def limits(self) -> MemoryLimits:
        return self.sync.limits

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self._limiter)

    async def save(
        self, scope: str, text: str, tags: Iterable[str] | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Memory:
        return await self._run(self.sync.save, scope, text, tags, metadata)

    async def save_many(
        self, scope: str, items: Iterable[str | Mapping[str, Any]], *, created_at: int | None = None
    ) -> builtins.list[Memory]:
        items = builtins.list(items)
        return await self._run(self.sync.save_many, scope, items, created_at=created_at)

    async def search(
        self,
        scope: str,
        query: str,
        limit: int = 5,
        tags: Iterable[str] | None = None,
        match: MatchMode = "any",
    ) -> builtins.list[MemoryHit]:
        return await self._run(self.sync.search, scope, query, limit, tags, match)

    async def get(self, scope: str, id: str) -> Memory | None:
        return await self._run(self.sync.get, scope, id)

    async def list(
        self,
        scope: str,
        limit: int = 20,
        after: str | None = None,
        order: Order = "asc",
        tags: Iterable[str] | None = None,
    ) -> MemoryPage:
        return await self._run(self.sync.list, scope, limit, after, order, tags)

    async def delete(self, scope: str, id: str) -> bool:
        return await self._run(self.sync.delete, scope, id)

    async def pop(self, scope: str, id: str) -> Memory | None:
        return await self._run(self.sync.pop, scope, id)

    async def forget(self, scope: str, query: str, limit: int = 5) -> builtins.list[str]:
        return await self._run(self.sync.forget, scope, query, limit)

    async def forget_memories(self, scope: str, query: str, limit: int = 5) -> builtins.list[Memory]:
        return await self._run(self.sync.forget_memories, scope, query, limit)

    async def delete_all(self, scope: str) -> int:
        return await self._run(self.sync.delete_all, scope)

    async def export(self, scope: str) -> builtins.list[Memory]:
        return await self._run(self.sync.export, scope)

    async def count(self, scope: str) -> int:
        return await self._run(self.sync.count, scope)

    async def optimize(self) -> None:
        await self._run(self.sync.optimize)

    def close(self) -> None:
        self.sync.close()

    async def aclose(self) -> None:
        await self._run(self.sync.close)
