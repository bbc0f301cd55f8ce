"""The durable stores under test on either backend: SQLite in a temporary directory, or a fresh PostgreSQL database.

A test parametrized with :data:`BACKENDS` asks :class:`StoreMaker` for its
store by backend name; the pools it opened are closed at the end. The
``postgres`` case takes the ``postgres_url`` fixture (a real server, skipped
without the binaries unless CI requires them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

__all__ = ["BACKENDS", "StoreMaker", "scalar"]

BACKENDS = ("sqlite", "postgres")


class StoreMaker:
    """Builds stores of one backend for one test; ``close()`` closes every store and pool it made."""

    def __init__(self, request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self._tmp = tmp_path
        self._url: str | None = request.getfixturevalue("postgres_url") if backend == "postgres" else None
        self._closers: list[Any] = []

    @property
    def url(self) -> str:
        assert self._url is not None
        return self._url

    def pool(self) -> Any:
        from toolrelay.app.postgres import open_pool

        pool = open_pool(self.url, max_size=4)
        self._closers.append(pool.close)
        return pool

    def responses(self, name: str = "responses.db", **options: Any) -> Any:
        """A response store (``retention_days`` 30 unless given); the same ``name`` reopens the same data."""
        options.setdefault("retention_days", 30)
        if self.backend == "sqlite":
            from toolrelay.app.responses.store import ResponseStore

            store: Any = ResponseStore(self._tmp / name, **options)
        else:
            from toolrelay.app.responses.store_pg import PostgresResponseStore

            store = PostgresResponseStore(self.pool(), **options)
        self._closers.insert(0, store.close)
        return store

    def continuations(self, name: str = "agent.db") -> Any:
        if self.backend == "sqlite":
            from toolrelay.agent.continuations import ContinuationStore

            store: Any = ContinuationStore(self._tmp / name)
        else:
            from toolrelay.agent.continuations_pg import PostgresContinuationStore

            store = PostgresContinuationStore(self.pool())
        self._closers.insert(0, store.close)
        return store

    def close(self) -> None:
        for closer in self._closers:
            closer()
        self._closers.clear()


def scalar(store: Any, sql: str) -> Any:
    """One value of a query on the store's own database (``?``-free SQL that both dialects read alike)."""
    if hasattr(store, "_conn"):
        return store._conn.execute(sql).fetchone()[0]
    with store._pool.connection() as conn:
        return conn.execute(sql).fetchone()[0]
