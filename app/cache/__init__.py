"""The exact-match response cache (``[cache]``, off by default; docs/operations.md#response-cache).

Proxied chat completions that are meant to be repeatable (``temperature`` 0
or a ``seed``) are stored whole per API key and replayed, streamed or not,
through the chat route's own encoder. ``keying`` decides what may be cached
and its key, ``entry`` what is stored and how it replays, ``memory`` and
``redis_store`` where entries live, ``cache`` what the route calls.
"""

from __future__ import annotations

from toolrelay.app.cache.cache import CACHE_HEADER, CacheBackend, Lookup, ResponseCache
from toolrelay.app.cache.keying import cacheable, directives, request_key
from toolrelay.app.cache.memory import MemoryBackend
from toolrelay.app.settings import CacheSettings, RedisSettings

__all__ = ["CACHE_HEADER", "CacheBackend", "Lookup", "MemoryBackend", "ResponseCache", "build_cache", "cacheable", "directives", "request_key"]


def build_cache(settings: CacheSettings, redis: RedisSettings) -> ResponseCache | None:
    """The configured cache, or None when ``[cache] enabled`` is off (the route then checks one attribute)."""
    if not settings.enabled:
        return None
    if settings.backend == "redis":
        # Imported only here: the redis package is needed only with [redis] configured.
        from toolrelay.app.cache.redis_store import RedisCacheBackend

        backend: CacheBackend = RedisCacheBackend(redis, ttl_seconds=settings.ttl_seconds, max_bytes=settings.max_bytes)
    else:
        backend = MemoryBackend(ttl_seconds=settings.ttl_seconds, max_entries=settings.max_entries, max_bytes=settings.max_bytes)
    return ResponseCache(backend, cache_tool_calls=settings.cache_tool_calls)
