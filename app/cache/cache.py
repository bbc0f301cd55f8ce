"""The response cache as the chat route uses it: look a request up, record what the upstream answers."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Literal, Protocol

from toolrelay.app.accumulate import CompletionAccumulator
from toolrelay.app.cache.entry import entry_bytes, replay_events
from toolrelay.app.cache.keying import cacheable, directives, request_key
from toolrelay.app.events import Event

__all__ = ["CACHE_HEADER", "CacheBackend", "Lookup", "ResponseCache"]

#: The response header saying how the cache took part: ``hit``, ``miss`` (asked the upstream; stored
#: if the answer qualifies) or ``bypass`` (not looked up: not repeatable, or the client said no).
CACHE_HEADER = "x-toolrelay-cache"

LookupStatus = Literal["hit", "miss", "bypass"]


class CacheBackend(Protocol):
    """Where entries live (:class:`~app.cache.memory.MemoryBackend`, :class:`~app.cache.redis_store.RedisCacheBackend`)."""

    @property
    def name(self) -> str: ...

    async def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, entry: bytes) -> None:
        """Store ``entry`` for the TTL, without blocking the request that wrote it."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Lookup:
    """One request's way through the cache: its status, and on a hit the replayed answer's events."""

    __slots__ = ("key", "replay", "status", "write")

    def __init__(self, status: LookupStatus, key: str = "", *, write: bool = False, replay: AsyncGenerator[Event, None] | None = None) -> None:
        self.status = status
        self.key = key
        self.write = write
        self.replay = replay


_BYPASS = Lookup("bypass")


class ResponseCache:
    """Exact-match answers of proxied chat completions, per API key (``[cache]``)."""

    def __init__(self, backend: CacheBackend, *, cache_tool_calls: bool = False) -> None:
        self.backend = backend
        self.cache_tool_calls = cache_tool_calls
        # Kept up to date here, rendered by app/metrics.py (summed over workers).
        self.lookups: dict[tuple[str, ...], int] = {("hit",): 0, ("miss",): 0, ("bypass",): 0}
        self.stored: dict[tuple[str, ...], int] = {(backend.name,): 0}

    async def lookup(self, payload: dict[str, Any], *, scope: str | None, upstream: str, model: str, cache_control: str | None) -> Lookup:
        """``scope``: the caller's key id (None: a server without keys, one scope); ``upstream`` and
        ``model``: where the request resolved to; ``cache_control``: the request's header."""
        wanted = directives(cache_control)
        key = request_key(payload, scope=scope or "", upstream=upstream, model=model) if (wanted.read or wanted.write) and cacheable(payload) else None
        if key is None:
            self.lookups[("bypass",)] += 1
            return _BYPASS
        entry = await self.backend.get(key) if wanted.read else None
        if entry is not None:
            self.lookups[("hit",)] += 1
            return Lookup("hit", key, replay=_replayed(replay_events(entry)))
        self.lookups[("miss",)] += 1
        return Lookup("miss", key, write=wanted.write)

    async def recording(self, events: AsyncGenerator[Event, None], key: str) -> AsyncGenerator[Event, None]:
        """``events`` passed through; stored under ``key`` once they end, if the answer qualifies.

        The entry is written only when the upstream's events ran out: a reader
        that stops early (the client left, an error event) closes this generator
        at its ``yield`` and nothing is stored. A cut or failed stream ends with
        a :class:`~app.events.Failure`, which :func:`entry_bytes` refuses, as
        it refuses a choice that never got a finish reason.
        """
        completion = CompletionAccumulator()
        add = completion.add
        try:
            async for event in events:
                add(event)
                yield event
        finally:
            await events.aclose()
        entry = entry_bytes(completion, tool_calls=self.cache_tool_calls)
        if entry is not None:
            self.backend.put(key, entry)
            self.stored[(self.backend.name,)] += 1

    async def start(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        await self.backend.close()


async def _replayed(events: list[Event]) -> AsyncGenerator[Event, None]:
    for event in events:
        yield event
