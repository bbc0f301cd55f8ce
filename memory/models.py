"""Plain value types returned by the memory store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class MemoryStoreError(ValueError):
    """Base class of memory store errors (a ``ValueError``)."""


class MemoryValidationError(MemoryStoreError):
    """Input the store refuses: empty or oversized text, too many tags, ..."""


class MemoryQuotaExceeded(MemoryStoreError):
    """The scope (or the API key owning it) holds as many memories or bytes as allowed."""


class MemoryStoreClosed(RuntimeError):
    """The store was closed."""


@dataclass(frozen=True, slots=True)
class Memory:
    id: str
    scope: str
    text: str
    tags: tuple[str, ...] = ()
    created_at: int = 0
    metadata: dict[str, Any] | None = None

    @property
    def created_iso(self) -> str:
        return datetime.fromtimestamp(self.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def to_dict(self) -> dict[str, Any]:
        """OpenAI-style object for the HTTP API (the scope is not included)."""
        d: dict[str, Any] = {
            "id": self.id,
            "object": "memory",
            "text": self.text,
            "tags": list(self.tags),
            "created_at": self.created_at,
        }
        if self.metadata is not None:
            d["metadata"] = self.metadata
        return d


@dataclass(frozen=True, slots=True)
class MemoryHit:
    """A search result: the memory and its relevance (higher is better)."""

    memory: Memory
    score: float

    def to_dict(self) -> dict[str, Any]:
        d = self.memory.to_dict()
        d["score"] = self.score
        return d


@dataclass(frozen=True, slots=True)
class MemoryPage:
    """One page of a cursor-paginated list (OpenAI list object shape)."""

    data: list[Memory] = field(default_factory=list)
    has_more: bool = False

    @property
    def first_id(self) -> str | None:
        return self.data[0].id if self.data else None

    @property
    def last_id(self) -> str | None:
        return self.data[-1].id if self.data else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [m.to_dict() for m in self.data],
            "first_id": self.first_id,
            "last_id": self.last_id,
            "has_more": self.has_more,
        }
