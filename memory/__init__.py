"""Long-term memory: SQLite + FTS5, one database file, strict per-scope isolation."""

from .models import (
    Memory,
    MemoryHit,
    MemoryPage,
    MemoryQuotaExceeded,
    MemoryStoreClosed,
    MemoryStoreError,
    MemoryValidationError,
)
from .scope import parse_scope, scope_for
from .store import MemoryLimits, MemoryStore, SyncMemoryStore, new_memory_id

__all__ = [
    "Memory",
    "MemoryHit",
    "MemoryLimits",
    "MemoryPage",
    "MemoryQuotaExceeded",
    "MemoryStore",
    "MemoryStoreClosed",
    "MemoryStoreError",
    "MemoryValidationError",
    "SyncMemoryStore",
    "new_memory_id",
    "parse_scope",
    "scope_for",
]
