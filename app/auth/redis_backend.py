"""The limit backend shared by every worker and host: Redis, one Lua script per decision.

Litestar's stores offer get/set/delete with expiry, which cannot express
"count the window, check the limit and add this request" atomically; two
small scripts can, and each request costs one round trip to admit and one to
settle. Time comes from Redis (``TIME``), so hosts with skewed clocks still
share one window. Every key of a bucket carries the same hash tag
(``{k:<id>}``), so the scripts also run on Redis Cluster.

Layout, per bucket ``b`` under the configured prefix ``p``:

- ``p:{b}:req``  sorted set, request id scored by admission time (ms)
- ``p:{b}:tok``  sorted set, ``<request id>:<tokens>`` scored by time
- ``p:{b}:toks`` running sum of the token set, so no scan per request
- ``p:{b}:par``  sorted set, request id scored by slot expiry (ms)
- ``p:{b}:spend:<period start>``  nano-dollars spent in that budget period
- ``p:{b}:resv``  hash, request id -> nano-dollars reserved against the budget
  by a request in flight; ``p:{b}:resvx`` the same ids scored by expiry (ms),
  so a reservation whose release never came lapses after the slot TTL;
  ``p:{b}:resvs`` their running sum
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from toolrelay.app.auth.limiter import WINDOW_MS, Ask, Decision, key_bucket
from toolrelay.app.auth.redis_pipeline import LuaScript, PipelinedRedis

log = logging.getLogger("toolrelay.auth")

# Shared by the scripts that reserve budget. Computed amounts go through
# string.format('%d'): Lua would write a large number as "1e+14", which INCRBY refuses.
_RESERVATIONS = """
local function held_by_others(resv, resvx, sum, rid, now)
  while true do
    local old = redis.call('ZRANGEBYSCORE', resvx, '-inf', now, 'LIMIT', 0, 500)
    if #old == 0 then break end
    for i = 1, #old do
      local v = redis.call('HGET', resv, old[i])
      if v then
        redis.call('DECRBY', sum, v)
        redis.call('HDEL', resv, old[i])
      end
    end
    redis.call('ZREM', resvx, unpack(old))
  end
  if redis.call('ZCARD', resvx) == 0 then redis.call('DEL', resv, sum) end
  local total = tonumber(redis.call('GET', sum) or '0')
  return total - tonumber(redis.call('HGET', resv, rid) or '0')
end
local function put_reservation(resv, resvx, sum, rid, nano, now, ttl)
  local old = tonumber(redis.call('HGET', resv, rid) or '0')
  redis.call('HSET', resv, rid, string.format('%d', nano))
  redis.call('ZADD', resvx, now + ttl, rid)
  redis.call('INCRBY', sum, string.format('%d', nano - old))
  redis.call('PEXPIRE', resv, ttl)
  redis.call('PEXPIRE', resvx, ttl)
  redis.call('PEXPIRE', sum, ttl)
end
"""

_ACQUIRE = LuaScript(
    _RESERVATIONS
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rid = ARGV[1]
local window = tonumber(ARGV[2])
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local tokens = tonumber(ARGV[5])
local par = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])
local budget = tonumber(ARGV[8])
local member = ARGV[9]
local cost = tonumber(ARGV[10])
local cutoff = now - window

if budget >= 0 then
  local spent = tonumber(redis.call('GET', KEYS[5]) or '0')
  if spent >= budget then return {1, 0, spent} end
  if cost > 0 then
    local held = held_by_others(KEYS[6], KEYS[7], KEYS[8], rid, now)
    if spent + held + cost > budget then return {1, 0, spent + held} end
  end
end
if par > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  local held = redis.call('ZCARD', KEYS[4])
  if held >= par then return {2, 1000, held} end
end
local rcount = 0
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  rcount = redis.call('ZCARD', KEYS[1])
  if rcount >= rpm then
    local e = redis.call('ZRANGE', KEYS[1], rcount - rpm, rcount - rpm, 'WITHSCORES')
    return {3, math.max(1, tonumber(e[2]) + window - now), rcount}
  end
end
local tsum = 0
if tpm > 0 then
  while true do
    local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff, 'LIMIT', 0, 500)
    if #old == 0 then break end
    local freed = 0
    for i = 1, #old do
      freed = freed + tonumber(string.match(old[i], ':(%d+)$') or '0')
    end
    redis.call('ZREM', KEYS[2], unpack(old))
    redis.call('DECRBY', KEYS[3], freed)
  end
  if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('DEL', KEYS[3]) end
  tsum = tonumber(redis.call('GET', KEYS[3]) or '0')
  if tokens > tpm then return {5, 0, tsum} end
  if tsum + tokens > tpm then
    local need = tsum + tokens - tpm
    local freed = 0
    local start = 0
    local retry = window
    local found = false
    while not found do
      local batch = redis.call('ZRANGE', KEYS[2], start, start + 499, 'WITHSCORES')
      if #batch == 0 then break end
      for i = 1, #batch, 2 do
        freed = freed + tonumber(string.match(batch[i], ':(%d+)$') or '0')
        if freed >= need then
          retry = math.max(1, tonumber(batch[i + 1]) + window - now)
          found = true
          break
        end
      end
      start = start + 500
    end
    return {4, retry, tsum}
  end
end
local rrem, rreset, trem, treset = -1, 0, -1, 0
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, rid)
  redis.call('PEXPIRE', KEYS[1], window)
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  rrem = rpm - rcount - 1
  rreset = tonumber(first[2]) + window - now
end
if tpm > 0 then
  redis.call('ZADD', KEYS[2], now, member)
  redis.call('PEXPIRE', KEYS[2], window)
  tsum = redis.call('INCRBY', KEYS[3], tokens)
  redis.call('PEXPIRE', KEYS[3], window)
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  trem = math.max(0, tpm - tsum)
  treset = tonumber(first[2]) + window - now
end
if par > 0 then
  redis.call('ZADD', KEYS[4], now + ttl, rid)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
if budget >= 0 and cost > 0 then
  put_reservation(KEYS[6], KEYS[7], KEYS[8], rid, cost, now, ttl)
end
return {0, 0, 0, rrem, rreset, trem, treset}
"""
)

_RESERVE = LuaScript(
    _RESERVATIONS
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rid = ARGV[1]
local budget = tonumber(ARGV[2])
local total = tonumber(ARGV[3])
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local others = held_by_others(KEYS[2], KEYS[3], KEYS[4], rid, now)
if spent + others + total > budget then return spent + others end
put_reservation(KEYS[2], KEYS[3], KEYS[4], rid, total, now, tonumber(ARGV[4]))
return -1
"""
)

_SETTLE = LuaScript("""
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and ARGV[2] ~= ARGV[3] then
  local score = redis.call('ZSCORE', KEYS[2], ARGV[2])
  if score then
    redis.call('ZREM', KEYS[2], ARGV[2])
    redis.call('ZADD', KEYS[2], score, ARGV[3])
    local s = redis.call('INCRBY', KEYS[3], tonumber(ARGV[4]))
    if s < 0 then redis.call('SET', KEYS[3], 0) end
    redis.call('PEXPIRE', KEYS[2], ARGV[7])
    redis.call('PEXPIRE', KEYS[3], ARGV[7])
  end
end
local held = redis.call('HGET', KEYS[5], ARGV[1])
if held then
  redis.call('HDEL', KEYS[5], ARGV[1])
  redis.call('ZREM', KEYS[6], ARGV[1])
  if redis.call('DECRBY', KEYS[7], held) <= 0 then redis.call('DEL', KEYS[7]) end
end
local cost = tonumber(ARGV[5])
if cost > 0 then
  redis.call('INCRBY', KEYS[4], ARGV[5])
  local ttl = tonumber(ARGV[6])
  if ttl > 0 then redis.call('EXPIRE', KEYS[4], ttl) end
end
return 1
""")

# Read-only: the refusals of _ACQUIRE that do not depend on the token count.
_PEEK = LuaScript("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local par = tonumber(ARGV[3])
local budget = tonumber(ARGV[4])
if budget >= 0 then
  local spent = tonumber(redis.call('GET', KEYS[3]) or '0')
  if spent >= budget then return {1, 0, spent} end
end
if par > 0 then
  local held = redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
  if held >= par then return {2, 1000, held} end
end
if rpm > 0 then
  local cutoff = now - window
  local rcount = redis.call('ZCOUNT', KEYS[1], '(' .. cutoff, '+inf')
  if rcount >= rpm then
    local e = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. cutoff, '+inf', 'WITHSCORES', 'LIMIT', rcount - rpm, 1)
    return {3, math.max(1, tonumber(e[2]) + window - now), rcount}
  end
end
return {0, 0, 0}
""")

_REASONS = {1: "budget", 2: "parallel", 3: "requests", 4: "tokens", 5: "too_large"}
# Spend counters outlive their period by a day, for the admin view of "yesterday".
_SPEND_GRACE_S = 86_400


def open_redis(url: str, *, socket_timeout: float, connect_timeout: float) -> Any:
    """An asyncio Redis client (a connection pool) for ``[redis] url``; call it on the serving event loop,
    whose connections it makes. Shared by the limit backend and the response cache (app/cache/)."""
    # Imported here: redis is only needed when a URL is configured.
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout, health_check_interval=30)


class _RedisPyLink:
    """The scripts through redis-py, for ``rediss://`` (TLS), which :class:`PipelinedRedis` does not speak."""

    def __init__(self, url: str, *, socket_timeout: float, connect_timeout: float) -> None:
        self._redis = open_redis(url, socket_timeout=socket_timeout, connect_timeout=connect_timeout)

    async def execute(self, *args: Any) -> Any:
        return await self._redis.execute_command(*args)

    async def script(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._redis.eval(script.source, len(keys), *keys, *args)

    async def close(self) -> None:
        await self._redis.aclose()


class RedisBackend:
    def __init__(
        self, url: str, *, prefix: str = "toolrelay", slot_ttl_seconds: float = 3600.0, socket_timeout: float = 1.0, connect_timeout: float = 2.0
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.slot_ttl_ms = int(slot_ttl_seconds * 1000)
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._redis: PipelinedRedis | _RedisPyLink | None = None

    @property
    def _link(self) -> PipelinedRedis | _RedisPyLink:
        link = self._redis
        if link is None:
            raise RedisConnectionError("the redis limit backend is closed")
        return link

    async def start(self) -> None:
        # Created on the serving event loop: the connection belongs to it.
        link_type = _RedisPyLink if self.url.startswith("rediss://") else PipelinedRedis
        self._redis = link_type(self.url, socket_timeout=self._socket_timeout, connect_timeout=self._connect_timeout)
        try:
            await self._redis.execute("PING")
        except Exception as exc:  # noqa: BLE001 - reported, not fatal: requests decide per fail_open
            log.warning(
                "redis at %s is not reachable yet (%s); requests needing limits wait for it (see limits.fail_open)", _safe_url(self.url), type(exc).__name__
            )

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.close()
            self._redis = None

    def _keys(self, bucket: str) -> tuple[str, str, str, str]:
        base = f"{self.prefix}:{{{bucket}}}"
        return base + ":req", base + ":tok", base + ":toks", base + ":par"

    def _spend_key(self, bucket: str, period_start: int) -> str:
        return f"{self.prefix}:{{{bucket}}}:spend:{period_start}"

    def _reservation_keys(self, bucket: str) -> tuple[str, str, str]:
        base = f"{self.prefix}:{{{bucket}}}"
        return base + ":resv", base + ":resvx", base + ":resvs"

    async def acquire(self, ask: Ask) -> Decision:
        policy = ask.policy
        req, tok, toks, par = self._keys(ask.bucket)
        spend = self._spend_key(ask.bucket, ask.period_start)
        budget = policy.budget_nano if policy.budget_nano is not None else -1
        member = f"{ask.rid}:{ask.tokens}"
        out = await self._link.script(
            _ACQUIRE,
            [req, tok, toks, par, spend, *self._reservation_keys(ask.bucket)],
            [ask.rid, WINDOW_MS, policy.rpm, policy.tpm, ask.tokens, policy.max_parallel, self.slot_ttl_ms, budget, member, ask.cost_nano],
        )
        status = int(out[0])
        if status:
            return Decision(False, _REASONS[status], retry_ms=int(out[1]), used=int(out[2]))
        decision = Decision(True)
        decision.requests_remaining = int(out[3])
        decision.requests_reset_ms = int(out[4])
        decision.tokens_remaining = int(out[5])
        decision.tokens_reset_ms = int(out[6])
        decision.handle = member if policy.tpm else ""
        return decision

    async def settle(self, ask: Ask, decision: Decision, tokens: int, cost_nano: int) -> None:
        _, tok, toks, par = self._keys(ask.bucket)
        spend = self._spend_key(ask.bucket, ask.period_start)
        old = decision.handle or ""
        new = f"{ask.rid}:{tokens}" if old else ""
        ttl = 0 if math.isinf(ask.period_end) else max(1, int(ask.period_end - time.time()) + _SPEND_GRACE_S)
        cost = cost_nano if ask.policy.budget_nano is not None else 0
        await self._link.script(
            _SETTLE, [par, tok, toks, spend, *self._reservation_keys(ask.bucket)], [ask.rid, old, new, tokens - ask.tokens, cost, ttl, WINDOW_MS]
        )

    async def reserve(self, ask: Ask, total_nano: int) -> int | None:
        budget = ask.policy.budget_nano
        if budget is None:
            return None
        out = int(
            await self._link.script(
                _RESERVE, [self._spend_key(ask.bucket, ask.period_start), *self._reservation_keys(ask.bucket)], [ask.rid, budget, total_nano, self.slot_ttl_ms]
            )
        )
        if out >= 0:
            return out
        ask.cost_nano = total_nano
        return None

    async def peek(self, ask: Ask) -> Decision:
        """What :meth:`acquire` would refuse whatever the token count, reserving nothing (one read-only script)."""
        policy = ask.policy
        req, _, _, par = self._keys(ask.bucket)
        budget = policy.budget_nano if policy.budget_nano is not None else -1
        out = await self._link.script(_PEEK, [req, par, self._spend_key(ask.bucket, ask.period_start)], [WINDOW_MS, policy.rpm, policy.max_parallel, budget])
        status = int(out[0])
        return Decision(False, _REASONS[status], retry_ms=int(out[1]), used=int(out[2])) if status else Decision(True)

    async def spent(self, key_id: str, period_start: int) -> int:
        value = await self._link.execute("GET", self._spend_key(key_bucket(key_id), period_start))
        return int(value or 0)

    async def seed_spend(self, key_id: str, period_start: int, period_end: float, nano: int) -> None:
        ttl = None if math.isinf(period_end) else max(1, int(period_end - time.time()) + _SPEND_GRACE_S)
        key = self._spend_key(key_bucket(key_id), period_start)
        await self._link.execute("SET", key, nano, "NX", *(("EX", ttl) if ttl is not None else ()))


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
