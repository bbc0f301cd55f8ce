"""What the async facade needs of a blocking memory store: SQLite (:class:`SyncMemoryStore`) or PostgreSQL (``PgMemoryStore``)."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol

from .models import Memory, MemoryHit, MemoryPage
from .query import MatchMode
from .validation import MemoryLimits

__all__ = ["MemoryBackend"]


class MemoryBackend(Protocol):
    """The blocking store's methods; each call may block, so the facade runs it in a worker thread."""

    limits: MemoryLimits

    def save(self, scope: str, text: str, tags: Iterable[str] | None = None, metadata: Mapping[str, Any] | None = None) -> Memory: ...

    def save_many(self, scope: str, items: Iterable[str | Mapping[str, Any]], *, created_at: int | None = None) -> builtins.list[Memory]: ...

    def search(self, scope: str, query: str, limit: int = 5, tags: Iterable[str] | None = None, match: MatchMode = "any") -> builtins.list[MemoryHit]: ...

    def get(self, scope: str, id: str) -> Memory | None: ...

    def list(
        self, scope: str, limit: int = 20, after: str | None = None, order: Literal["asc", "desc"] = "asc", tags: Iterable[str] | None = None
    ) -> MemoryPage: ...

    def delete(self, scope: str, id: str) -> bool: ...

    def pop(self, scope: str, id: str) -> Memory | None: ...

    def forget(self, scope: str, query: str, limit: int = 5) -> builtins.list[str]: ...

    def forget_memories(self, scope: str, query: str, limit: int = 5) -> builtins.list[Memory]: ...

    def delete_all(self, scope: str) -> int: ...

    def export(self, scope: str) -> builtins.list[Memory]: ...

    def count(self, scope: str) -> int: ...

    def optimize(self) -> None: ...

    def integrity_check(self) -> bool: ...

    def close(self) -> None: ...
