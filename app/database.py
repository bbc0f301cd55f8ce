"""The process's shared database (``[database] url``): one pool, opened at start-up, handed to the stores.

Without a URL nothing here imports psycopg and :func:`open_database` returns
None: every store keeps its SQLite file in ``data_dir``. With one, the pool
is opened and checked before anything else is built, so a server that cannot
reach its database refuses to start (:class:`DatabaseUnreachable`, a
:class:`ConfigError`: the CLI prints it and exits 2, no traceback) instead of
failing its first requests.

While running, a store that cannot get a connection within
``connect_timeout_seconds`` raises :class:`toolrelay.app.postgres.DatabaseUnavailable`;
the HTTP layer answers it with :func:`database_unavailable` (503, OpenAI-shaped).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from toolrelay.app.config import ConfigError
from toolrelay.app.errors import OpenAIError
from toolrelay.app.settings import DatabaseSettings

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

__all__ = ["DatabaseHealth", "DatabaseUnreachable", "database_unavailable", "host_name", "open_database", "unavailable_errors"]


class DatabaseUnreachable(ConfigError):
    """The configured database cannot be used at start-up; the message names the URL without its password."""


def open_database(settings: DatabaseSettings, *, name: str = "toolrelay") -> ConnectionPool[Any] | None:
    """The pool on ``settings.url`` (None for SQLite); :class:`DatabaseUnreachable` when it cannot be used."""
    if settings.url is None:
        return None
    from toolrelay.app.postgres import DatabaseUnavailable, open_pool

    try:
        return open_pool(
            settings.url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            connect_timeout=settings.connect_timeout_seconds,
            name=name,
        )
    except DatabaseUnavailable as exc:
        raise DatabaseUnreachable(f"{exc}; refusing to start (check [database] url / TOOLRELAY_DATABASE__URL and that the server is up)") from None


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the database is down" (for the HTTP layer's 503); imports psycopg."""
    import psycopg
    from psycopg_pool import PoolTimeout

    from toolrelay.app.postgres import DatabaseUnavailable

    return (DatabaseUnavailable, PoolTimeout, psycopg.OperationalError)


def database_unavailable() -> OpenAIError:
    return OpenAIError(
        503,
        "The database is unavailable; try again shortly.",
        type="server_error",
        code="database_unavailable",
        headers={"retry-after": "1"},
    )


def host_name(settings: DatabaseSettings) -> str:
    """This process's name in shared tables (the ledger's ``host``): configured, or ``<hostname>:<pid>``."""
    return settings.host_name or f"{socket.gethostname()}:{os.getpid()}"


class DatabaseHealth:
    """Up or down, for ``/ready``: one ``SELECT 1`` at most every ``ttl`` seconds, bounded by the pool timeout."""

    def __init__(self, pool: ConnectionPool[Any], url: str, *, timeout: float, ttl: float = 2.0) -> None:
        self._pool = pool
        self._url = url
        self._timeout = timeout
        self._ttl = ttl
        self._lock = threading.Lock()
        self._checked: tuple[float, bool, str] | None = None

    def check(self) -> tuple[bool, str]:
        """(up, detail); blocking (run it in a worker thread)."""
        with self._lock:
            cached = self._checked
            if cached is not None and time.monotonic() - cached[0] < self._ttl:
                return cached[1], cached[2]
            up, detail = True, ""
            try:
                with self._pool.connection(timeout=self._timeout) as conn:
                    conn.execute("SELECT 1")
            except Exception as exc:  # noqa: BLE001 - any failure is "down", and its kind is the detail
                up, detail = False, type(exc).__name__
            self._checked = (time.monotonic(), up, detail)
            return up, detail

    def status(self, *, admin: bool) -> dict[str, Any]:
        """The ``database`` entry of ``/ready`` from the last check; the (redacted) URL for the admin key only."""
        cached = self._checked
        up = cached[1] if cached is not None else True
        body: dict[str, Any] = {"backend": "postgresql", "ok": up, "status": "up" if up else "down"}
        if admin:
            from toolrelay.app.postgres import redact_url

            body["url"] = redact_url(self._url)
            if cached is not None and cached[2]:
                body["detail"] = cached[2]
        return body
