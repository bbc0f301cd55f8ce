"""API keys in SQLite (``<data_dir>/keys.db``, WAL), mirrored in memory for the hot path.

The server answers every request from an in-memory dict. Changes made by any
other connection (the ``toolrelay keys`` CLI in another process, the admin
API's writer) are noticed with ``PRAGMA data_version`` on a connection kept
open for that purpose: it is a read of the WAL index, a few microseconds, so
it runs on every authentication and a revoked key is refused on the very next
request. The table is reloaded only when that number moves.

Rows are never deleted: a revoked key keeps its id (the ledger refers to it)
and keeps auth on (revoking the last key must not open the server).
"""

from __future__ import annotations

import enum
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from toolrelay.app.auth.access import ModelAccess
from toolrelay.app.auth.durations import iso
from toolrelay.app.auth.keyformat import hash_key, last4, new_key, redacted
from toolrelay.app.sqlite import connect as _sqlite_connect
from toolrelay.app.sqlite import migrate, script_step

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    key_hash      BLOB NOT NULL,
    tail          TEXT NOT NULL,
    models        TEXT NOT NULL DEFAULT '[]',
    rpm           INTEGER,
    tpm           INTEGER,
    max_parallel  INTEGER,
    budget_usd    REAL,
    budget_period TEXT NOT NULL DEFAULT 'monthly',
    expires_at    REAL,
    created_at    REAL NOT NULL,
    revoked_at    REAL
);
"""

# ``mcp_servers``: the MCP servers (``[mcp.servers.<name>]``) whose tools the
# key may use, as a JSON list; NULL is every server, so existing keys keep
# what they had.
_ADD_MCP_SERVERS = "ALTER TABLE api_keys ADD COLUMN mcp_servers TEXT;"

# ``PRAGMA user_version`` steps; the first is the schema from before versions
# (``IF NOT EXISTS``), so a keys.db of an older release opens as it is.
MIGRATIONS = (script_step(SCHEMA), script_step(_ADD_MCP_SERVERS))


def connect(path: Path) -> sqlite3.Connection:
    """A connection to keys.db with its schema current.

    Autocommit: each statement is its own transaction unless we BEGIN
    explicitly, so the watcher's view of the file is never frozen by a
    transaction left open (see :mod:`toolrelay.app.sqlite`).
    """
    conn = _sqlite_connect(path)
    try:
        migrate(conn, MIGRATIONS, name=str(path))
    except BaseException:
        conn.close()
        raise
    return conn


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    key_hash: bytes = field(repr=False)
    tail: str = field(repr=False)
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_period: str = "monthly"
    expires_at: float | None = None
    created_at: float = 0.0
    revoked_at: float | None = None
    # MCP server names whose tools the key may use; None: every configured server.
    mcp_servers: tuple[str, ...] | None = None
    access: ModelAccess = field(default_factory=lambda: ModelAccess(()), compare=False, repr=False)

    @property
    def limited(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_parallel or self.budget_usd is not None)

    def status(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def public(self, *, spent_usd: float | None = None) -> dict[str, Any]:
        """The key as the admin API and ``keys show --json`` present it; never the secret."""
        return {
            "object": "api_key",
            "id": self.id,
            "name": self.name,
            "redacted_value": redacted(self.id, self.tail),
            "status": self.status(time.time()),
            "models": list(self.models) or ["*"],
            "mcp_servers": list(self.mcp_servers) if self.mcp_servers is not None else None,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_parallel": self.max_parallel,
            "budget_usd": self.budget_usd,
            "budget_period": self.budget_period,
            "spent_usd": spent_usd,
            "created_at": int(self.created_at),
            "expires_at": int(self.expires_at) if self.expires_at is not None else None,
            "revoked_at": int(self.revoked_at) if self.revoked_at is not None else None,
            "created": iso(self.created_at),
        }


def _row_to_key(row: sqlite3.Row | tuple[Any, ...]) -> ApiKey:
    (kid, name, key_hash, tail, models, rpm, tpm, max_parallel, budget_usd, budget_period, expires_at, created_at, revoked_at, mcp_servers) = row
    patterns = tuple(orjson.loads(models or "[]"))
    return ApiKey(
        id=kid,
        name=name,
        key_hash=bytes(key_hash),
        tail=tail,
        models=patterns,
        rpm=rpm or None,
        tpm=tpm or None,
        max_parallel=max_parallel or None,
        budget_usd=budget_usd,
        budget_period=budget_period or "monthly",
        expires_at=expires_at,
        created_at=created_at,
        revoked_at=revoked_at,
        mcp_servers=tuple(orjson.loads(mcp_servers)) if mcp_servers is not None else None,
        access=ModelAccess(patterns),
    )


_COLUMNS = "id, name, key_hash, tail, models, rpm, tpm, max_parallel, budget_usd, budget_period, expires_at, created_at, revoked_at, mcp_servers"


class Keep(enum.Enum):
    """Leave this setting as it is (where None already means every server)."""

    KEEP = "keep"


KEEP = Keep.KEEP


def _servers_json(servers: Iterable[str] | None) -> str | None:
    return None if servers is None else orjson.dumps(sorted({s.strip() for s in servers if s and s.strip()})).decode()


class Keys(Protocol):
    """What the gate, the admin API and the CLI use of a key store: :class:`KeyStore` (SQLite) or
    :class:`toolrelay.app.auth.pg_keystore.PgKeyStore` (PostgreSQL, shared by several hosts)."""

    # True: a key id the mirror does not hold may still exist (written by another host a moment ago): ask fetch().
    fetches_missing: bool

    def refresh(self) -> bool: ...
    def get(self, key_id: str) -> ApiKey | None: ...
    @property
    def any_keys(self) -> bool: ...
    def all(self) -> list[ApiKey]: ...
    def fetch(self, key_id: str) -> ApiKey | None: ...
    def create(
        self,
        *,
        name: str,
        models: Iterable[str] = (),
        rpm: int | None = None,
        tpm: int | None = None,
        max_parallel: int | None = None,
        budget_usd: float | None = None,
        budget_period: str = "monthly",
        expires_at: float | None = None,
        mcp_servers: Iterable[str] | None = None,
        now: float | None = None,
    ) -> tuple[ApiKey, str]: ...
    def update(self, key_id: str, *, models: Iterable[str] | None = None, mcp_servers: Iterable[str] | Keep | None = ...) -> ApiKey | None: ...
    def revoke(self, key_id: str, now: float | None = None) -> ApiKey | None: ...
    def load(self, key_id: str) -> ApiKey | None: ...
    def close(self) -> None: ...


class KeyStore:
    """The keys table and its in-memory mirror. Reads are dict lookups; writes go through SQLite."""

    # The data_version check in refresh() is exact: a key the mirror lacks does not exist.
    fetches_missing = False

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._watch = connect(self.path)
        self._version = -1
        self._keys: dict[str, ApiKey] = {}
        self.refresh()

    # -- hot path ------------------------------------------------------

    def refresh(self) -> bool:
        """Reload when another connection committed since the last look; True if it did."""
        version = self._watch.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return False
        self._version = version
        self._keys = {k.id: k for k in map(_row_to_key, self._watch.execute(f"SELECT {_COLUMNS} FROM api_keys"))}
        return True

    def get(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    @property
    def any_keys(self) -> bool:
        return bool(self._keys)

    def all(self) -> list[ApiKey]:
        return sorted(self._keys.values(), key=lambda k: (k.created_at, k.id))

    def fetch(self, key_id: str) -> ApiKey | None:
        self.refresh()
        return self.get(key_id)

    # -- writes (CLI, admin API; off the hot path) ---------------------

    def create(
        self,
        *,
        name: str,
        models: Iterable[str] = (),
        rpm: int | None = None,
        tpm: int | None = None,
        max_parallel: int | None = None,
        budget_usd: float | None = None,
        budget_period: str = "monthly",
        expires_at: float | None = None,
        mcp_servers: Iterable[str] | None = None,
        now: float | None = None,
    ) -> tuple[ApiKey, str]:
        """Store a new key; returns it and the full key, which exists nowhere else afterwards."""
        created = time.time() if now is None else now
        patterns = [m.strip() for m in models if m and m.strip()]
        with _Writer(self.path) as conn:
            for _ in range(5):
                key_id, full = new_key()
                try:
                    conn.execute(
                        f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            key_id,
                            name,
                            hash_key(full),
                            last4(full),
                            orjson.dumps(patterns).decode(),
                            rpm,
                            tpm,
                            max_parallel,
                            budget_usd,
                            budget_period,
                            expires_at,
                            created,
                            None,
                            _servers_json(mcp_servers),
                        ),
                    )
                    break
                except sqlite3.IntegrityError:  # 48-bit id collision: draw again
                    continue
            else:  # pragma: no cover - five collisions in a row
                raise RuntimeError("could not allocate a key id")
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return _row_to_key(row), full

    def update(self, key_id: str, *, models: Iterable[str] | None = None, mcp_servers: Iterable[str] | Keep | None = KEEP) -> ApiKey | None:
        """Change a key's allow-lists (``models`` None and ``mcp_servers`` KEEP: unchanged); None if there is no such key."""
        with _Writer(self.path) as conn:
            if models is not None:
                patterns = [m.strip() for m in models if m and m.strip()]
                conn.execute("UPDATE api_keys SET models = ? WHERE id = ?", (orjson.dumps(patterns).decode(), key_id))
            if mcp_servers is not KEEP:
                conn.execute("UPDATE api_keys SET mcp_servers = ? WHERE id = ?", (_servers_json(mcp_servers), key_id))
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return _row_to_key(row) if row else None

    def revoke(self, key_id: str, now: float | None = None) -> ApiKey | None:
        """Mark the key revoked (idempotent); None if there is no such key."""
        with _Writer(self.path) as conn:
            conn.execute("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (time.time() if now is None else now, key_id))
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return _row_to_key(row) if row else None

    def load(self, key_id: str) -> ApiKey | None:
        """Read one key straight from the file (for the CLI, which keeps no mirror)."""
        with _Writer(self.path) as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return _row_to_key(row) if row else None

    def close(self) -> None:
        self._watch.close()


class _Writer:
    """A short-lived connection per write, so the watcher connection sees it as someone else's commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        self.conn = connect(self.path)
        return self.conn

    def __exit__(self, *exc: Any) -> None:
        assert self.conn is not None  # noqa: S101 (narrows for the type checker: __enter__ opened it)
        self.conn.close()
