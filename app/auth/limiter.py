"""Sliding-window request/token limits, parallel-request slots and budget spend.

Why a sliding log and not a token bucket: a limit of 60 per minute then
means at most 60 in any 60 seconds, exactly, also across workers sharing
Redis (a bucket refills while a burst is still arriving, so "60" admits a few
more). Each admitted request leaves an entry (time, tokens); entries older
than the window drop off, and the next free unit comes back when the oldest
entry leaves. Memory is one small entry per request per window per key.

The token entry is a reservation: the estimate made before the call
(prompt + max_tokens) is replaced by the real usage when the request ends.
Budgets work the same way: a request's worst-case cost is reserved against
the key's budget at admission (so requests in flight cannot all start while
the spend alone is still under budget), an agent run raises its reservation
before each model call, and the real cost replaces the reservation at the end.

Two backends implement one contract: :class:`MemoryBackend` (this process)
and :class:`app.auth.redis_backend.RedisBackend` (shared by every worker).
Both decide everything for one request in one step, so a refused request
reserves nothing.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Protocol

WINDOW_MS = 60_000


class Policy:
    """The limits one caller (a key, or an address when auth is off) is held to; 0 / None = no limit."""

    __slots__ = ("rpm", "tpm", "max_parallel", "budget_nano", "budget_period")

    def __init__(self, rpm: int = 0, tpm: int = 0, max_parallel: int = 0, budget_nano: int | None = None, budget_period: str = "monthly") -> None:
        self.rpm = max(0, rpm or 0)
        self.tpm = max(0, tpm or 0)
        self.max_parallel = max(0, max_parallel or 0)
        self.budget_nano = budget_nano
        self.budget_period = budget_period

    @property
    def active(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_parallel or self.budget_nano is not None)


class Ask:
    """One request's claim on a bucket."""

    __slots__ = ("bucket", "rid", "policy", "tokens", "period_start", "period_end", "cost_nano")

    def __init__(self, bucket: str, rid: str, policy: Policy, tokens: int, period_start: int = 0, period_end: float = float("inf"), cost_nano: int = 0) -> None:
        self.bucket = bucket
        self.rid = rid
        self.policy = policy
        self.tokens = tokens
        self.period_start = period_start
        self.period_end = period_end
        # Worst-case cost reserved against the budget (only when the policy has one); raised by `reserve`.
        self.cost_nano = cost_nano


class Decision:
    """The outcome of :meth:`LimitBackend.acquire`.

    ``reason`` when refused: ``budget``, ``parallel``, ``requests``,
    ``tokens`` or ``too_large`` (more tokens than the per-minute limit: no
    wait helps). ``used`` is what was counted against the limit that refused.
    Remaining/reset values describe the state after this request (-1 when
    that limit does not apply); resets are milliseconds until the oldest
    counted entry leaves the window, i.e. until "remaining" next grows.
    """

    __slots__ = ("ok", "reason", "retry_ms", "used", "requests_remaining", "requests_reset_ms", "tokens_remaining", "tokens_reset_ms", "handle")

    def __init__(self, ok: bool, reason: str | None = None, retry_ms: int = 0, used: int = 0) -> None:
        self.ok = ok
        self.reason = reason
        self.retry_ms = retry_ms
        self.used = used
        self.requests_remaining = -1
        self.requests_reset_ms = 0
        self.tokens_remaining = -1
        self.tokens_reset_ms = 0
        self.handle: Any = None


class LimitBackend(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def acquire(self, ask: Ask) -> Decision: ...

    async def settle(self, ask: Ask, decision: Decision, tokens: int, cost_nano: int) -> None:
        """The request ended: free its slot, true up its token entry, replace its budget reservation by its cost."""

    async def reserve(self, ask: Ask, total_nano: int) -> int | None:
        """Raise ``ask``'s budget reservation to ``total_nano`` (an agent run's next model call).

        Returns None when it fits (``ask.cost_nano`` is then ``total_nano``), else
        what is spent plus reserved by the key's other requests (nothing changes).
        """

    async def spent(self, key_id: str, period_start: int) -> int:
        """Nano-dollars spent by ``key_id`` in the period that starts at ``period_start``."""
        ...

    async def seed_spend(self, key_id: str, period_start: int, period_end: float, nano: int) -> None:
        """Start the period's spend at ``nano`` unless a counter already exists (from another worker)."""


# ---------------------------------------------------------------- in-process


# Requests within this many seconds share one log entry. A log of one entry
# per request held 180k objects per key at 3,000 requests/s, and the garbage
# collector's full passes over them showed up as 180 ms stalls and +0.2 ms CPU
# per request. A shared entry takes the time of its latest request, so units
# come back at most this much later than exactly: never more than the limit.
_COALESCE_SECONDS = 0.1


class _Entry:
    __slots__ = ("t", "first", "n", "live")

    def __init__(self, t: float, n: int) -> None:
        self.t = t
        self.first = t
        self.n = n
        self.live = True


class _Log:
    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[_Entry] = deque()
        self.total = 0

    def add(self, now: float, n: int) -> _Entry:
        entries = self.entries
        self.total += n
        if entries:
            last = entries[-1]
            if now - last.first < _COALESCE_SECONDS:
                last.n += n
                last.t = now
                return last
        entry = _Entry(now, n)
        entries.append(entry)
        return entry

    def expire(self, cutoff: float) -> None:
        entries = self.entries
        while entries and entries[0].t <= cutoff:
            e = entries.popleft()
            e.live = False
            self.total -= e.n

    def wait_ms(self, need: int, now: float) -> int:
        """Milliseconds until entries worth ``need`` units have left the window."""
        freed = 0
        for e in self.entries:
            freed += e.n
            if freed >= need:
                return max(1, int((e.t - now) * 1000) + WINDOW_MS)
        return WINDOW_MS

    def reset_ms(self, now: float) -> int:
        return max(0, int((self.entries[0].t - now) * 1000) + WINDOW_MS) if self.entries else 0


class _Bucket:
    __slots__ = ("requests", "tokens", "slots")

    def __init__(self) -> None:
        self.requests = _Log()
        self.tokens = _Log()
        self.slots: dict[str, float] = {}  # request id -> expiry (monotonic seconds)

    def idle(self) -> bool:
        return not (self.requests.entries or self.tokens.entries or self.slots)


class _Reservations:
    """Budget held by one key's requests in flight: request id -> (nano, expiry), and their sum."""

    __slots__ = ("held", "total")

    def __init__(self) -> None:
        self.held: dict[str, tuple[int, float]] = {}
        self.total = 0

    def put(self, rid: str, nano: int, expiry: float) -> None:
        self.drop(rid)
        self.held[rid] = (nano, expiry)
        self.total += nano

    def drop(self, rid: str) -> None:
        old = self.held.pop(rid, None)
        if old is not None:
            self.total -= old[0]

    def mine(self, rid: str) -> int:
        entry = self.held.get(rid)
        return entry[0] if entry is not None else 0

    def expire(self, now: float) -> None:
        """Forget reservations whose release never came (as slots do, after ``slot_ttl_seconds``)."""
        for rid in [r for r, (_, expiry) in self.held.items() if expiry <= now]:
            self.drop(rid)


class MemoryBackend:
    """Counters in this process: exact for one worker; N workers would enforce N limits (use Redis)."""

    def __init__(self, slot_ttl_seconds: float = 3600.0, clock: Any = time.monotonic) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._spend: dict[str, tuple[int, int]] = {}  # key id -> (period start, nano)
        self._reserved: dict[str, _Reservations] = {}  # bucket -> budget held by requests in flight
        # bucket -> (period start, nano) spent by other hosts on the shared ledger (set by app/auth/shared_spend.py).
        self._others: dict[str, tuple[int, int]] = {}
        self._slot_ttl = slot_ttl_seconds
        self._clock = clock
        self._acquires = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def acquire(self, ask: Ask) -> Decision:
        return self.acquire_now(ask)

    def acquire_now(self, ask: Ask) -> Decision:
        policy = ask.policy
        now = self._clock()
        if policy.budget_nano is not None:
            spent = self._budget_spent(ask.bucket, ask.period_start)
            if spent >= policy.budget_nano:
                return Decision(False, "budget", used=spent)
            if ask.cost_nano:
                held = self._held(ask.bucket, ask.rid, now, spent + ask.cost_nano, policy.budget_nano)
                if spent + held + ask.cost_nano > policy.budget_nano:
                    return Decision(False, "budget", used=spent + held)
        bucket = self._buckets.get(ask.bucket)
        if bucket is None:
            bucket = self._buckets[ask.bucket] = _Bucket()
            self._acquires += 1
            if self._acquires % 4096 == 0:
                self._sweep(now)
        slots = bucket.slots
        if policy.max_parallel and len(slots) >= policy.max_parallel:
            for rid in [r for r, expiry in slots.items() if expiry <= now]:
                del slots[rid]
            if len(slots) >= policy.max_parallel:
                return Decision(False, "parallel", retry_ms=1000, used=len(slots))
        cutoff = now - WINDOW_MS / 1000
        requests = bucket.requests
        if policy.rpm:
            requests.expire(cutoff)
            count = requests.total
            if count >= policy.rpm:
                return Decision(False, "requests", retry_ms=requests.wait_ms(count - policy.rpm + 1, now), used=count)
        tokens = bucket.tokens
        if policy.tpm:
            tokens.expire(cutoff)
            if ask.tokens > policy.tpm:
                return Decision(False, "too_large", used=tokens.total)
            if tokens.total + ask.tokens > policy.tpm:
                return Decision(False, "tokens", retry_ms=tokens.wait_ms(tokens.total + ask.tokens - policy.tpm, now), used=tokens.total)
        decision = Decision(True)
        if policy.rpm:
            requests.add(now, 1)
            decision.requests_remaining = policy.rpm - requests.total
            decision.requests_reset_ms = requests.reset_ms(now)
        if policy.tpm:
            decision.handle = tokens.add(now, ask.tokens)
            decision.tokens_remaining = max(0, policy.tpm - tokens.total)
            decision.tokens_reset_ms = tokens.reset_ms(now)
        if policy.max_parallel:
            slots[ask.rid] = now + self._slot_ttl
        if ask.cost_nano and policy.budget_nano is not None:
            self._reserved.setdefault(ask.bucket, _Reservations()).put(ask.rid, ask.cost_nano, now + self._slot_ttl)
        return decision

    def _held(self, bucket: str, rid: str, now: float, needed: int, budget: int) -> int:
        """Budget reserved by the bucket's other requests in flight.

        Stale reservations are dropped only when they would make ``needed`` not
        fit (as parallel slots are): a scan per admission would cost O(requests in flight).
        """
        reservations = self._reserved.get(bucket)
        if reservations is None:
            return 0
        held = reservations.total - reservations.mine(rid)
        if needed + held > budget:
            reservations.expire(now)
            held = reservations.total - reservations.mine(rid)
        return held

    async def reserve(self, ask: Ask, total_nano: int) -> int | None:
        return self.reserve_now(ask, total_nano)

    def reserve_now(self, ask: Ask, total_nano: int) -> int | None:
        policy = ask.policy
        if policy.budget_nano is None:
            return None
        now = self._clock()
        spent = self._budget_spent(ask.bucket, ask.period_start)
        others = self._held(ask.bucket, ask.rid, now, spent + total_nano, policy.budget_nano)
        if spent + others + total_nano > policy.budget_nano:
            return spent + others
        self._reserved.setdefault(ask.bucket, _Reservations()).put(ask.rid, total_nano, now + self._slot_ttl)
        ask.cost_nano = total_nano
        return None

    async def settle(self, ask: Ask, decision: Decision, tokens: int, cost_nano: int) -> None:
        self.settle_now(ask, decision, tokens, cost_nano)

    def settle_now(self, ask: Ask, decision: Decision, tokens: int, cost_nano: int) -> None:
        bucket = self._buckets.get(ask.bucket)
        if bucket is not None:
            bucket.slots.pop(ask.rid, None)
            entry = decision.handle
            # The entry may be shared with other requests: move it by this request's difference only.
            delta = tokens - ask.tokens
            if entry is not None and entry.live and delta:
                delta = max(delta, -entry.n)
                bucket.tokens.total += delta
                entry.n += delta
        reservations = self._reserved.get(ask.bucket)
        if reservations is not None:
            reservations.drop(ask.rid)
            if not reservations.held:
                del self._reserved[ask.bucket]
        if cost_nano and ask.policy.budget_nano is not None:
            self._spend[ask.bucket] = (ask.period_start, self._spent(ask.bucket, ask.period_start) + cost_nano)

    async def peek(self, ask: Ask) -> Decision:
        """What :meth:`acquire` would refuse whatever the token count (spent budget, parallel
        slots, requests per minute), reserving nothing: lets the gate refuse before it
        encodes a large prompt."""
        policy = ask.policy
        now = self._clock()
        if policy.budget_nano is not None:
            spent = self._budget_spent(ask.bucket, ask.period_start)
            if spent >= policy.budget_nano:
                return Decision(False, "budget", used=spent)
        bucket = self._buckets.get(ask.bucket)
        if bucket is not None:
            if policy.max_parallel:
                held = sum(1 for expiry in bucket.slots.values() if expiry > now)
                if held >= policy.max_parallel:
                    return Decision(False, "parallel", retry_ms=1000, used=held)
            requests = bucket.requests
            if policy.rpm:
                requests.expire(now - WINDOW_MS / 1000)
                count = requests.total
                if count >= policy.rpm:
                    return Decision(False, "requests", retry_ms=requests.wait_ms(count - policy.rpm + 1, now), used=count)
        return Decision(True)

    def _spent(self, bucket: str, period_start: int) -> int:
        current = self._spend.get(bucket)
        return current[1] if current is not None and current[0] == period_start else 0

    def _budget_spent(self, bucket: str, period_start: int) -> int:
        """This process's spend plus, on a shared ledger without Redis, the other hosts' (as last read)."""
        spent = self._spent(bucket, period_start)
        others = self._others.get(bucket)
        return spent + others[1] if others is not None and others[0] == period_start else spent

    def share_spend(self, key_id: str, period_start: int, nano: int) -> None:
        """What the other hosts have spent of ``key_id``'s period, read from the shared ledger."""
        self._others[key_bucket(key_id)] = (period_start, nano)

    async def spent(self, key_id: str, period_start: int) -> int:
        return self._budget_spent(key_bucket(key_id), period_start)

    async def seed_spend(self, key_id: str, period_start: int, period_end: float, nano: int) -> None:
        bucket = key_bucket(key_id)
        current = self._spend.get(bucket)
        if current is None or current[0] != period_start:
            self._spend[bucket] = (period_start, nano)

    def _sweep(self, now: float) -> None:
        """Forget buckets with nothing in their window (addresses seen once, say)."""
        cutoff = now - WINDOW_MS / 1000
        for name in list(self._buckets):
            bucket = self._buckets[name]
            bucket.requests.expire(cutoff)
            bucket.tokens.expire(cutoff)
            for rid in [r for r, expiry in bucket.slots.items() if expiry <= now]:
                del bucket.slots[rid]
            if bucket.idle():
                del self._buckets[name]
        for name in list(self._reserved):
            reservations = self._reserved[name]
            reservations.expire(now)
            if not reservations.held:
                del self._reserved[name]


def key_bucket(key_id: str) -> str:
    return "k:" + key_id


def ip_bucket(address: str) -> str:
    return "ip:" + address
