"""API keys in PostgreSQL (``[database] url``), mirrored in memory like :class:`~toolrelay.app.auth.keystore.KeyStore`.

Several hosts share the table, so a change made on one must reach the others'
mirrors: a trigger on ``api_keys`` sends ``NOTIFY toolrelay_keys`` for every
written row (also for an operator's hand-written SQL), and a listener thread
per process, on a connection of its own, reloads the mirror when one arrives
(milliseconds later, where the issue asks for a second). The same thread
reloads at least every third of ``key_cache_seconds`` as a safety net (a
notification lost with a dropped connection).

The request path still reads a dict only. While the database cannot be read,
the mirror keeps authenticating for ``key_cache_seconds`` after its last good
load; past that :meth:`PgKeyStore.refresh` raises 503 ``database_unavailable``
rather than trust keys that may have been revoked meanwhile.

A key id the mirror does not hold is looked up once in the table
(:meth:`PgKeyStore.fetch`) before it is refused, so a key created on another
host works there at once even if its notification is still on the way;
wrong guesses are throttled per address by the gate before they cost a query.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
import psycopg
from psycopg_pool import ConnectionPool

from toolrelay.app.auth.keyformat import hash_key, last4, new_key
from toolrelay.app.auth.keystore import (
    _COLUMNS,
    ADD_ROTATION_AND_CEILING,
    COLUMN_COUNT,
    KEEP,
    ROTATE_SQL,
    ApiKey,
    Keep,
    _row_to_key,
    _servers_json,
    rotation_values,
    update_assignments,
)
from toolrelay.app.database import database_unavailable
from toolrelay.app.postgres import DatabaseUnavailable, migrate

__all__ = ["CHANNEL", "MIGRATIONS", "PgKeyStore"]

log = logging.getLogger("toolrelay.auth")

CHANNEL = "toolrelay_keys"

_SCHEMA = """
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    key_hash      BYTEA NOT NULL,
    tail          TEXT NOT NULL,
    models        TEXT NOT NULL DEFAULT '[]',
    rpm           BIGINT,
    tpm           BIGINT,
    max_parallel  BIGINT,
    budget_usd    DOUBLE PRECISION,
    budget_period TEXT NOT NULL DEFAULT 'monthly',
    expires_at    DOUBLE PRECISION,
    created_at    DOUBLE PRECISION NOT NULL,
    revoked_at    DOUBLE PRECISION,
    mcp_servers   TEXT
);
CREATE FUNCTION toolrelay_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('toolrelay_keys', COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END $$;
CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION toolrelay_keys_changed();
"""
# Versioned steps of the "keys" schema (app/postgres.migrate); the second is SQLite's, types spelled for PostgreSQL.
MIGRATIONS: tuple[str, ...] = (
    _SCHEMA,
    ADD_ROTATION_AND_CEILING.replace("INTEGER", "BIGINT").replace("BLOB", "BYTEA").replace("REAL", "DOUBLE PRECISION"),
)

_SELECT = f"SELECT {_COLUMNS} FROM api_keys"  # noqa: S608 - a constant column list
_SELECT_ONE = f"SELECT {_COLUMNS} FROM api_keys WHERE id = %s"  # noqa: S608
_INSERT = f"INSERT INTO api_keys ({_COLUMNS}) VALUES ({', '.join(['%s'] * COLUMN_COUNT)})"  # noqa: S608
# After a failed listen or load: wait this long before the next try (doubling up to the cap).
_RETRY_FIRST, _RETRY_CAP = 0.2, 2.0


class PgKeyStore:
    """The keys table in PostgreSQL and this process's mirror of it; the interface of :class:`KeyStore`."""

    # The mirror may lag another host's write by the notification's trip: look a missing key up once.
    fetches_missing = True

    def __init__(
        self,
        pool: ConnectionPool[Any],
        url: str,
        *,
        cache_seconds: float = 30.0,
        timeout: float = 5.0,
        listen: bool = True,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """``listen`` False: no listener thread (a CLI command that reads and writes once); ``on_close``: run by close()."""
        self._pool = pool
        self._url = url  # the listener's own connection (the pool's conninfo may be a callable)
        self._cache_seconds = cache_seconds
        self._timeout = timeout
        self._keys: dict[str, ApiKey] = {}
        self._loaded_at = 0.0  # monotonic time of the last good load
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.listening = threading.Event()  # set while the listener's LISTEN is in place (tests wait on it)
        with self._connection() as conn:
            migrate(conn, MIGRATIONS, name="keys")
        self._reload()
        self._on_close = on_close
        self._thread: threading.Thread | None = None
        if listen:
            self._thread = threading.Thread(target=self._listen_loop, name="toolrelay-keys-listener", daemon=True)
            self._thread.start()

    # -- hot path ------------------------------------------------------

    def refresh(self, *, force: bool = False) -> bool:
        """The mirror is kept current by the listener (``force`` changes nothing); refuse (503) once it is older than ``key_cache_seconds``."""
        if time.monotonic() - self._loaded_at > self._cache_seconds:
            raise database_unavailable()
        return False

    def get(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    @property
    def any_keys(self) -> bool:
        return bool(self._keys)

    def all(self) -> list[ApiKey]:
        return sorted(self._keys.values(), key=lambda k: (k.created_at, k.id))

    def fetch(self, key_id: str) -> ApiKey | None:
        """Read one key from the table into the mirror (blocking: a key id the mirror does not know yet)."""
        key = self.load(key_id)
        if key is not None:
            self._put(key)
        return key

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
        with self._connection() as conn:
            for _ in range(5):
                key_id, full = new_key()
                values = (
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
                )
                try:
                    conn.execute(_INSERT, values)
                    break
                except psycopg.errors.UniqueViolation:  # 48-bit id collision: draw again
                    continue
            else:  # pragma: no cover - five collisions in a row
                raise RuntimeError("could not allocate a key id")
            row = conn.execute(_SELECT_ONE, (key_id,)).fetchone()
        key = self._put(_row_to_key(row))
        return key, full

    def update(
        self, key_id: str, *, models: Iterable[str] | None = None, mcp_servers: Iterable[str] | Keep | None = KEEP, settings: Mapping[str, Any] | None = None
    ) -> ApiKey | None:
        """As :meth:`KeyStore.update`; the trigger tells the other hosts."""
        assignments = update_assignments(models, mcp_servers, settings)
        with self._connection() as conn, conn.transaction():
            if assignments:
                columns = ", ".join(f"{name} = %s" for name in assignments)
                conn.execute(f"UPDATE api_keys SET {columns} WHERE id = %s", (*assignments.values(), key_id))  # noqa: S608 - column names from UPDATABLE
            row = conn.execute(_SELECT_ONE, (key_id,)).fetchone()
        return self._put(_row_to_key(row)) if row else None

    def rotate(self, key_id: str, *, grace_seconds: float, now: float | None = None) -> tuple[ApiKey, str] | None:
        """As :meth:`KeyStore.rotate`; the trigger tells the other hosts, whose mirrors then accept the new secret."""
        when = time.time() if now is None else now
        _, full = new_key(key_id)
        with self._connection() as conn, conn.transaction():
            changed = conn.execute(ROTATE_SQL, (*rotation_values(full, grace_seconds, when), key_id)).rowcount
            row = conn.execute(_SELECT_ONE, (key_id,)).fetchone()
        return (self._put(_row_to_key(row)), full) if changed and row else None

    def revoke(self, key_id: str, now: float | None = None) -> ApiKey | None:
        """Mark the key revoked (idempotent); None if there is no such key."""
        with self._connection() as conn:
            row = conn.execute(
                f"UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s) WHERE id = %s RETURNING {_COLUMNS}",  # noqa: S608
                (time.time() if now is None else now, key_id),
            ).fetchone()
        return self._put(_row_to_key(row)) if row else None

    def load(self, key_id: str) -> ApiKey | None:
        """Read one key straight from the table."""
        with self._connection() as conn:
            row = conn.execute(_SELECT_ONE, (key_id,)).fetchone()
        return _row_to_key(row) if row else None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._timeout + 2)
        if self._on_close is not None:
            self._on_close()

    # -- internals ---------------------------------------------------------

    def _connection(self) -> Any:
        """A pooled connection within the timeout, else :class:`DatabaseUnavailable` (the HTTP layer's 503)."""
        return _Borrowed(self._pool, self._timeout)

    def _put(self, key: ApiKey) -> ApiKey:
        with self._lock:
            keys = dict(self._keys)
            keys[key.id] = key
            self._keys = keys
        return key

    def _reload(self) -> None:
        with self._connection() as conn:
            rows = conn.execute(_SELECT).fetchall()
        keys = {k.id: k for k in map(_row_to_key, rows)}
        with self._lock:
            self._keys = keys  # one reference swap: readers see the old or the new table, whole
            self._loaded_at = time.monotonic()

    def _listen_loop(self) -> None:
        """LISTEN on a connection of its own; reload on each notification and at least every third of the cache time."""
        period = max(0.05, self._cache_seconds / 3)
        retry = _RETRY_FIRST
        conninfo = self._url
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=max(1, round(self._timeout))) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._reload()  # whatever changed while nobody listened
                    self.listening.set()
                    retry = _RETRY_FIRST
                    while not self._stop.is_set():
                        # Wake for the first notification, or after ``period`` (or to look at the stop flag).
                        changed = False
                        for _ in conn.notifies(timeout=min(period, 0.5), stop_after=1):
                            changed = True
                        if changed or time.monotonic() - self._loaded_at >= period:
                            self._reload()
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any outage
                self.listening.clear()
                log.warning("keys listener: %s: %s; retrying in %.1f s", type(exc).__name__, exc, retry)
                self._stop.wait(retry)
                retry = min(retry * 2, _RETRY_CAP)
        self.listening.clear()


class _Borrowed:
    """``with`` a pooled connection; a pool that has none to give within ``timeout`` is :class:`DatabaseUnavailable`."""

    def __init__(self, pool: ConnectionPool[Any], timeout: float) -> None:
        self._cm = pool.connection(timeout=timeout)

    def __enter__(self) -> psycopg.Connection[Any]:
        try:
            return self._cm.__enter__()
        except Exception as exc:  # noqa: BLE001 - a pool timeout or a refused connection: the same 503
            raise DatabaseUnavailable(f"no database connection: {type(exc).__name__}") from None

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)
