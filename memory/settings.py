"""The ``[memory]`` configuration section."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MemorySettings:
    enabled: bool = True
    # Database file; empty means <data_dir>/memory.db.
    path: str = ""
    # Per-search cost budget of the ranking planner, in milliseconds (None: the store's default, 3 ms).
    search_budget_ms: float | None = None
    # Storage caps (0: none), checked on every save (HTTP and memory_save): one
    # key could otherwise fill the disk (issue 10 item 12). A scope is one key
    # or one `user` of a key; the per-key caps count all its users together,
    # since a key can mint any number of `user` values.
    max_memories_per_scope: int = 10_000
    max_bytes_per_scope: int = 16 * 1024 * 1024
    max_memories_per_key: int = 100_000
    max_bytes_per_key: int = 256 * 1024 * 1024
