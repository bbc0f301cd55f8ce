"""Long-term memory on SQLite: one database file, FTS5 full-text ranking; the async facade.

The store is split along its seams:

- :mod:`.validation`: size bounds and the cleaning of every value a caller sends;
- :mod:`.schema`: tables, triggers, the full-text index and their ``user_version`` migrations;
- :mod:`.planner`: which words a search ranks within its cost budget, and how the scope is applied;
- :mod:`.sync_store`: :class:`SyncMemoryStore`, the blocking store (connection pool, writes, reads);
- this module: :class:`MemoryStore`, which runs every call in a worker thread
  (``anyio.to_thread``) so the event loop never blocks on SQLite.
"""

from __future__ import annotations

import builtins
import functools
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread

from .backend import MemoryBackend
from .models import Memory, MemoryHit, MemoryPage
from .query import MatchMode
from .sync_store import Order, SyncMemoryStore
from .validation import MemoryLimits

__all__ = ["MemoryStore", "SyncMemoryStore"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class MemoryStore:
    """Async facade over a blocking store: :class:`SyncMemoryStore`, or ``PgMemoryStore`` through :meth:`from_sync`.

    Every method runs the blocking work in a worker thread, at most
    ``max_concurrency`` at a time, so the event loop never waits on disk or
    on the database.
    """

    sync: MemoryBackend

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
    def from_sync(cls, sync: MemoryBackend, *, max_concurrency: int = 4) -> MemoryStore:
        self = cls.__new__(cls)
        self.sync = sync
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        return self

    @property
    def path(self) -> Path | None:
        """The SQLite file; None for a store in PostgreSQL."""
        path = getattr(self.sync, "path", None)
        return path if isinstance(path, Path) else None

    @property
    def limits(self) -> MemoryLimits:
        return self.sync.limits

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self._limiter)

    async def save(self, scope: str, text: str, tags: Iterable[str] | None = None, metadata: Mapping[str, Any] | None = None) -> Memory:
        return await self._run(self.sync.save, scope, text, tags, metadata)

    async def save_many(self, scope: str, items: Iterable[str | Mapping[str, Any]], *, created_at: int | None = None) -> builtins.list[Memory]:
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
