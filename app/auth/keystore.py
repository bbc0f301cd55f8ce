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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from toolrelay.app.auth.access import ModelAccess
from toolrelay.app.auth.durations import iso
from toolrelay.app.auth.keyformat import hash_key, last4, matches, new_key, redacted
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

# ``max_output_tokens``: the key's ceiling on completion tokens (NULL: the
# server's). ``previous_key_hash`` / ``previous_valid_until``: after a
# rotation, the replaced secret's hash and the end of its grace period.
ADD_ROTATION_AND_CEILING = """
ALTER TABLE api_keys ADD COLUMN max_output_tokens INTEGER;
ALTER TABLE api_keys ADD COLUMN previous_key_hash BLOB;
ALTER TABLE api_keys ADD COLUMN previous_valid_until REAL;
"""

# ``PRAGMA user_version`` steps; the first is the schema from before versions
# (``IF NOT EXISTS``), so a keys.db of an older release opens as it is.
MIGRATIONS = (script_step(SCHEMA), script_step(_ADD_MCP_SERVERS), script_step(ADD_ROTATION_AND_CEILING))

# The settings ``update`` may change besides the allow-lists; the names are the columns (never caller text in SQL).
UPDATABLE = ("rpm", "tpm", "max_parallel", "budget_usd", "budget_period", "expires_at", "max_output_tokens")


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
    # Completion tokens a request may ask for (None: the server's ceiling, if any).
    max_output_tokens: int | None = None
    # After a rotation: the replaced secret's hash, accepted until ``previous_valid_until``.
    previous_key_hash: bytes | None = field(default=None, repr=False)
    previous_valid_until: float | None = None
    access: ModelAccess = field(default_factory=lambda: ModelAccess(()), compare=False, repr=False)

    @property
    def limited(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_parallel or self.budget_usd is not None)

    def accepts_previous(self, token: str, now: float) -> bool:
        """Whether ``token`` is the secret this key had before its last rotation, still in its grace period."""
        until = self.previous_valid_until
        return self.previous_key_hash is not None and until is not None and now < until and matches(token, self.previous_key_hash)

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
            "max_output_tokens": self.max_output_tokens,
            "created_at": int(self.created_at),
            "expires_at": int(self.expires_at) if self.expires_at is not None else None,
            "revoked_at": int(self.revoked_at) if self.revoked_at is not None else None,
            "previous_key_valid_until": _grace_end(self.previous_valid_until),
            "created": iso(self.created_at),
        }


def _grace_end(until: float | None) -> int | None:
    """When the secret replaced by the last rotation stops working; None once it has."""
    return int(until) if until is not None and until > time.time() else None


def _row_to_key(row: sqlite3.Row | tuple[Any, ...]) -> ApiKey:
    (kid, name, key_hash, tail, models, rpm, tpm, max_parallel, budget_usd, budget_period, expires_at, created_at, revoked_at, mcp_servers, *rest) = row
    max_output_tokens, previous_hash, previous_until = rest
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
        max_output_tokens=max_output_tokens or None,
        previous_key_hash=bytes(previous_hash) if previous_hash is not None else None,
        previous_valid_until=previous_until,
        access=ModelAccess(patterns),
    )


#: How long a look at keys.db's data_version stays good on the request path (seconds).
KEY_REFRESH_SECONDS = 0.005

_COLUMNS = (
    "id, name, key_hash, tail, models, rpm, tpm, max_parallel, budget_usd, budget_period, expires_at, created_at, revoked_at, mcp_servers,"
    " max_output_tokens, previous_key_hash, previous_valid_until"
)


COLUMN_COUNT = len(_COLUMNS.split(","))

# The new secret replaces the hash; the old hash is kept for the grace period (none with a grace of 0).
# Placeholders are psycopg's; SQLite's are the same with ``?``.
ROTATE_SQL = (
    "UPDATE api_keys SET key_hash = %s, tail = %s,"
    " previous_key_hash = CASE WHEN %s > 0 THEN key_hash END, previous_valid_until = CASE WHEN %s > 0 THEN %s END"
    " WHERE id = %s AND revoked_at IS NULL"
)


def rotation_values(full: str, grace_seconds: float, now: float) -> tuple[Any, ...]:
    """The parameters of :data:`ROTATE_SQL` before the key id."""
    return (hash_key(full), last4(full), grace_seconds, grace_seconds, now + grace_seconds)


def update_assignments(models: Iterable[str] | None, mcp_servers: Iterable[str] | Keep | None, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Column -> new value for an update; unknown setting names are a programming error."""
    assignments: dict[str, Any] = {}
    if models is not None:
        assignments["models"] = orjson.dumps([m.strip() for m in models if m and m.strip()]).decode()
    if not isinstance(mcp_servers, Keep):
        assignments["mcp_servers"] = _servers_json(mcp_servers)
    for name, value in (settings or {}).items():
        if name not in UPDATABLE:
            raise ValueError(f"not an updatable key setting: {name}")
        assignments[name] = value
    return assignments


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

    def refresh(self, *, force: bool = False) -> bool: ...
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
        max_output_tokens: int | None = None,
        now: float | None = None,
    ) -> tuple[ApiKey, str]: ...
    def update(
        self, key_id: str, *, models: Iterable[str] | None = None, mcp_servers: Iterable[str] | Keep | None = ..., settings: Mapping[str, Any] | None = None
    ) -> ApiKey | None: ...
    def rotate(self, key_id: str, *, grace_seconds: float, now: float | None = None) -> tuple[ApiKey, str] | None: ...
    def revoke(self, key_id: str, now: float | None = None) -> ApiKey | None: ...
    def load(self, key_id: str) -> ApiKey | None: ...
    def close(self) -> None: ...


class KeyStore:
    """The keys table and its in-memory mirror. Reads are dict lookups; writes go through SQLite."""

    # The data_version check in refresh(force=True) is exact: a key the mirror lacks does not exist.
    fetches_missing = False

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._watch = connect(self.path)
        self._version = -1
        self._checked_at = -KEY_REFRESH_SECONDS
        self._keys: dict[str, ApiKey] = {}
        self.refresh()

    # -- hot path ------------------------------------------------------

    def refresh(self, *, force: bool = False) -> bool:
        """Reload when another connection committed since the last look; True if it did.

        Looked at most once per :data:`KEY_REFRESH_SECONDS` unless ``force``: the
        check is a SQLite call that releases the GIL twice, 6-10 us per request
        on this machine (measured), and a change a few milliseconds old is as
        current as the request that races it. A credential the mirror does not
        match is checked again with ``force`` (:meth:`Gate.authenticate`), so a
        key created or rotated a moment ago is never refused.
        """
        now = time.monotonic()
        if not force and now - self._checked_at < KEY_REFRESH_SECONDS:
            return False
        self._checked_at = now
        version = self._watch.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return False
        self._version = version
        self._keys = {k.id: k for k in map(_row_to_key, self._watch.execute(f"SELECT {_COLUMNS} FROM api_keys"))}
        return True

    def expire_mirror(self) -> None:
        """Make the next :meth:`refresh` look at keys.db whatever the window."""
        self._checked_at = -KEY_REFRESH_SECONDS

    def get(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    @property
    def any_keys(self) -> bool:
        return bool(self._keys)

    def all(self) -> list[ApiKey]:
        return sorted(self._keys.values(), key=lambda k: (k.created_at, k.id))

    def fetch(self, key_id: str) -> ApiKey | None:
        self.refresh(force=True)
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
        max_output_tokens: int | None = None,
        now: float | None = None,
    ) -> tuple[ApiKey, str]:
        """Store a new key; returns it and the full key, which exists nowhere else afterwards."""
        created = time.time() if now is None else now
        patterns = [m.strip() for m in models if m and m.strip()]
        with _Writer(self) as conn:
            for _ in range(5):
                key_id, full = new_key()
                try:
                    conn.execute(
                        f"INSERT INTO api_keys ({_COLUMNS}) VALUES ({', '.join('?' * COLUMN_COUNT)})",
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
                            max_output_tokens,
                            None,
                            None,
                        ),
                    )
                    break
                except sqlite3.IntegrityError:  # 48-bit id collision: draw again
                    continue
            else:  # pragma: no cover - five collisions in a row
                raise RuntimeError("could not allocate a key id")
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return _row_to_key(row), full

    def update(
        self, key_id: str, *, models: Iterable[str] | None = None, mcp_servers: Iterable[str] | Keep | None = KEEP, settings: Mapping[str, Any] | None = None
    ) -> ApiKey | None:
        """Change a key (``models`` None, ``mcp_servers`` KEEP, a column absent from ``settings``: unchanged;
        ``settings`` maps :data:`UPDATABLE` columns to values, None clearing one); None if there is no such key."""
        assignments = update_assignments(models, mcp_servers, settings)
        with _Writer(self) as conn:
            if assignments:
                columns = ", ".join(f"{name} = ?" for name in assignments)
                conn.execute(f"UPDATE api_keys SET {columns} WHERE id = ?", (*assignments.values(), key_id))  # column names from UPDATABLE
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return _row_to_key(row) if row else None

    def rotate(self, key_id: str, *, grace_seconds: float, now: float | None = None) -> tuple[ApiKey, str] | None:
        """A new secret for ``key_id``; the old one keeps working for ``grace_seconds``. None if there is no such
        key or it is revoked (a revoked key stays revoked)."""
        when = time.time() if now is None else now
        _, full = new_key(key_id)
        with _Writer(self) as conn:
            changed = conn.execute(ROTATE_SQL.replace("%s", "?"), (*rotation_values(full, grace_seconds, when), key_id)).rowcount
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return (_row_to_key(row), full) if changed and row else None

    def revoke(self, key_id: str, now: float | None = None) -> ApiKey | None:
        """Mark the key revoked (idempotent); None if there is no such key."""
        with _Writer(self) as conn:
            conn.execute("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (time.time() if now is None else now, key_id))
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return _row_to_key(row) if row else None

    def load(self, key_id: str) -> ApiKey | None:
        """Read one key straight from the file (for the CLI, which keeps no mirror)."""
        with _Writer(self) as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return _row_to_key(row) if row else None

    def close(self) -> None:
        self._watch.close()


class _Writer:
    """A short-lived connection per write, so the watcher connection sees it as someone else's commit."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.conn: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        self.conn = connect(self.store.path)
        return self.conn

    def __exit__(self, *exc: Any) -> None:
        assert self.conn is not None  # noqa: S101 (narrows for the type checker: __enter__ opened it)
        self.conn.close()
        # This store's own change is read by its next refresh(), window or not.
        self.store.expire_mirror()
