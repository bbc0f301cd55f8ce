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
