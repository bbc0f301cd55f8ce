"""Long-term memory: SQLite + FTS5, one database file, strict per-scope isolation."""

from toolrelay.app.ids import new_memory_id

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
from .store import MemoryStore
from .sync_store import SyncMemoryStore
from .validation import MemoryLimits

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
