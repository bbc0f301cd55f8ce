"""Breaker state shared by every worker and host through Redis (``[redis]`` configured).

Per deployment, under the configured prefix ``p`` and the hash tag of the
deployment's key ``k`` (``<model>|<deployment>``):

- ``p:{rt:k}:fail``  failures in the current window (a counter that expires with the window)
- ``p:{rt:k}:open``  present while the breaker is open; its TTL is the cooldown left
- ``p:{rt:k}:probe`` the half-open probe's claim (``SET NX``), so one process probes

A failure that reaches the limit opens the breaker for everyone in the same
script. Processes read the open keys' TTLs every ``breaker_sync_seconds`` (one
pipelined round trip), so the request path never waits on Redis except to
report a failure or claim a probe. Redis being down degrades to each process's
own breakers, logged, never to a refused request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("toolrelay.routing")

__all__ = ["RedisBreakers"]

_FAILED = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n >= tonumber(ARGV[2]) or ARGV[4] == '1' then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('DEL', KEYS[1], KEYS[3])
  return tonumber(ARGV[3])
end
return 0
"""
_LOG_EVERY = 30.0


class RedisBreakers:
    def __init__(self, url: str, *, prefix: str, socket_timeout: float, connect_timeout: float) -> None:
        self._url = url
        self._prefix = prefix
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._redis: Any = None
        self._failed: Any = None
        self._logged = 0.0

    async def start(self) -> None:
        import redis.asyncio as aioredis  # only when [redis] is configured

        self._redis = aioredis.Redis.from_url(self._url, socket_timeout=self._socket_timeout, socket_connect_timeout=self._connect_timeout)
        self._failed = self._redis.register_script(_FAILED)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _key(self, key: str, what: str) -> str:
        return f"{self._prefix}:{{rt:{key}}}:{what}"

    def _unavailable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._logged > _LOG_EVERY:
            self._logged = now
            log.warning("redis unreachable for shared breaker state (%s); each process uses its own breakers meanwhile", type(exc).__name__)

    async def failed(self, key: str, *, limit: int, window: float, cooldown: float, reopen: bool) -> float:
        """Count a failure; the seconds the breaker is now open for everyone (0.0: still closed)."""
        if self._failed is None:
            return 0.0
        keys = [self._key(key, "fail"), self._key(key, "open"), self._key(key, "probe")]
        try:
            opened = await self._failed(keys=keys, args=[int(window * 1000), limit, int(cooldown * 1000), "1" if reopen else "0"])
        except Exception as exc:  # noqa: BLE001 - shared state is an optimisation over local breakers
            self._unavailable(exc)
            return 0.0
        return int(opened) / 1000.0

    async def succeeded(self, key: str) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.delete(self._key(key, "open"), self._key(key, "fail"), self._key(key, "probe"))
        except Exception as exc:  # noqa: BLE001 - see failed()
            self._unavailable(exc)

    async def claim_probe(self, key: str, seconds: float) -> bool:
        """True for the one process that may probe a half-open deployment (True too when Redis is down)."""
        if self._redis is None:
            return True
        try:
            return bool(await self._redis.set(self._key(key, "probe"), "1", nx=True, px=max(1, int(seconds * 1000))))
        except Exception as exc:  # noqa: BLE001 - see failed()
            self._unavailable(exc)
            return True

    async def open_seconds(self, keys: list[str]) -> list[float] | None:
        """Per key, the seconds its breaker stays open (0.0: not open); None when Redis did not answer."""
        if self._redis is None or not keys:
            return None
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.pttl(self._key(key, "open"))
                ttls = await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - see failed()
            self._unavailable(exc)
            return None
        return [ttl / 1000.0 if isinstance(ttl, int) and ttl > 0 else 0.0 for ttl in ttls]
