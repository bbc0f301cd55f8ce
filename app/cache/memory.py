"""The in-process backend: least recently used entries evicted past a count or a size, each for its TTL."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Entries in this process only (each worker of ``--workers N`` has its own)."""

    name = "memory"

    def __init__(self, *, ttl_seconds: float, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        # key -> (expires at, entry); oldest use first.
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, entry = found
        if self._clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: bytes) -> None:
        size = len(entry)
        if size > self.max_bytes:
            return  # would evict everything else and still not fit
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + self.ttl_seconds, entry)
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: str) -> None:
        _, entry = self._entries.pop(key)
        self.bytes -= len(entry)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0
