"""The shared backend: entries in Redis (``[redis] url``) under ``<prefix>:cache:<key>``, expiring after the TTL.

Every worker and host sees one cache. Redis being down is a miss, never an
error: the request goes to the upstream as if the cache were off, and the
failure is logged at most once a minute. A write is sent in a task of its
own, so a slow Redis does not hold back the end of the answer it stores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from toolrelay.app.auth.redis_backend import open_redis
from toolrelay.app.settings import RedisSettings

__all__ = ["RedisCacheBackend"]

log = logging.getLogger("toolrelay.cache")

_LOG_EVERY_S = 60.0


class RedisCacheBackend:
    name = "redis"

    def __init__(self, settings: RedisSettings, *, ttl_seconds: float, max_bytes: int) -> None:
        self._settings = settings
        self._namespace = f"{settings.prefix}:cache:"
        self.ttl_ms = max(1, round(ttl_seconds * 1000))
        self.max_bytes = max_bytes
        self._redis: Any = None
        self._writes: set[asyncio.Task[None]] = set()
        self._failure_logged = 0.0

    async def start(self) -> None:
        settings = self._settings
        self._redis = open_redis(settings.url, socket_timeout=settings.socket_timeout, connect_timeout=settings.connect_timeout)

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def get(self, key: str) -> bytes | None:
        if self._redis is None:
            return None
        try:
            return await self._redis.get(self._namespace + key)
        except Exception as exc:  # noqa: BLE001 - a cache that is down is a miss
            self._failed("read", exc)
            return None

    def put(self, key: str, entry: bytes) -> None:
        if self._redis is None or len(entry) > self.max_bytes:
            return
        task = asyncio.get_running_loop().create_task(self._write(self._namespace + key, entry))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, name: str, entry: bytes) -> None:
        try:
            await self._redis.set(name, entry, px=self.ttl_ms)
        except Exception as exc:  # noqa: BLE001 - not stored: the next request asks the upstream
            self._failed("write", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._failure_logged >= _LOG_EVERY_S:
            self._failure_logged = now
            log.warning("response cache: redis %s failed (%s); answering from the upstream", what, type(exc).__name__)
