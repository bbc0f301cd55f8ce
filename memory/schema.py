"""The memory database's schema and its migrations.

Layout (created on first open, WAL mode; ``PRAGMA user_version`` = 2, the
steps of :data:`MIGRATIONS`):

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
    values (schema 2; filled from the existing rows when it is added).
``memories_fts``
    FTS5, external content (``content=memories``), ``porter unicode61
    remove_diacritics 2`` tokenizer, ``detail=full``, columns ``text``,
    ``tags_text``, ``scope_key``; kept in step by triggers. Ranking is
    ``bm25(1.0, 0.75, 0.0)``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, Literal, NamedTuple

from toolrelay.app.sqlite import Migration, run_script

from .models import Memory

__all__ = ["MEMORY_COLUMNS", "SCHEMA_VERSION", "FtsDetail", "MemoryRow", "export_rows", "migrations", "owner_of", "row_to_memory"]

FtsDetail = Literal["full", "column"]

# Row shape of every internal query: the memory, then score, then seq.
MEMORY_COLUMNS = "m.id, m.scope, m.text, m.tags, m.created_at, m.metadata"

# The table as sqlite-utils created it before this module wrote the DDL itself.
_MEMORIES_DDL = """
CREATE TABLE IF NOT EXISTS memories (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    scope TEXT NOT NULL,
    scope_key TEXT NOT NULL,
    text TEXT NOT NULL,
    tags TEXT NOT NULL,
    tags_text TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    metadata TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS memories_id ON memories (id);
CREATE INDEX IF NOT EXISTS memories_scope_id ON memories (scope, id);
"""

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


def owner_of(scope: str) -> str:
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


def row_to_memory(row: Sequence[Any]) -> Memory:
    id_, scope, text, tags, created_at, metadata = row[:6]
    return Memory(
        id=id_,
        scope=scope,
        text=text,
        tags=tuple(json.loads(tags)) if tags else (),
        created_at=int(created_at),
        metadata=json.loads(metadata) if metadata else None,
    )


class MemoryRow(NamedTuple):
    """One stored memory as the ``memories`` table holds it, for moving it to another store unchanged."""

    id: str
    scope: str
    text: str
    #: The JSON array as stored.
    tags: str
    created_at: int
    #: The JSON object as stored, or None.
    metadata: str | None


def export_rows(conn: sqlite3.Connection, batch: int = 1000) -> Iterator[list[MemoryRow]]:
    """Every memory of the file in insertion (``seq``) order, ``batch`` rows at a time.

    Takes a connection rather than a store: ``toolrelay db copy`` reads a file
    it opened read-only, which opening a store (it migrates) would not be.
    """
    after = -1
    while True:
        rows = conn.execute(
            "SELECT seq, id, scope, text, tags, created_at, metadata FROM memories WHERE seq > ? ORDER BY seq LIMIT ?", (after, batch)
        ).fetchall()
        if not rows:
            return
        yield [MemoryRow(id_, scope, text, tags, int(created_at), metadata) for _, id_, scope, text, tags, created_at, metadata in rows]
        after = rows[-1][0]


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _create_memories(detail: FtsDetail) -> Migration:
    """Schema 1: the table, its counts and the full-text index (each only where missing)."""

    def step(conn: sqlite3.Connection) -> None:
        tables = _tables(conn)
        if "memories" not in tables:
            run_script(conn, _MEMORIES_DDL)
            run_script(conn, _MEMORIES_EXTRA_DDL)
        if "memories_fts" not in tables:
            run_script(conn, _FTS_DDL.format(detail=detail))

    return step


def _add_usage(conn: sqlite3.Connection) -> None:
    """Schema 2: per-owner usage for the storage caps, filled from the rows already stored.

    Files of schema 1 written after the caps existed already have the table.
    """
    if "memory_usage" not in _tables(conn):
        run_script(conn, _USAGE_DDL)
        conn.execute(_USAGE_BACKFILL)


def migrations(detail: FtsDetail = "full") -> Sequence[Migration]:
    """The ``user_version`` steps; ``detail`` is FTS5's ``detail`` option for a new index."""
    if detail not in ("full", "column"):
        raise ValueError("fts_detail must be 'full' or 'column'")
    return (_create_memories(detail), _add_usage)


SCHEMA_VERSION = len(migrations())
