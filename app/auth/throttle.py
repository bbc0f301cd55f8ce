"""Throttle failed authentication per client address (issue 10, item 21).

After ``max_failures`` wrong credentials (admin key or API key) from one
address within ``window_seconds``, that address gets 429 for
``window_seconds`` without its credential being looked at, so guessing the
admin key runs at a few attempts a minute. IPv6 clients are counted per /64
(one host usually holds a whole /64). Memory is bounded: at most
``max_tracked`` addresses, expired entries swept first, then the oldest
dropped.

Successful requests pay one ``if`` while no address has failed recently, and
one dict lookup otherwise. Counters live in this process: with N workers an
address gets N times the attempts, still a few a minute.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from typing import Any

from toolrelay.app.auth.errors import retry_headers
from toolrelay.app.errors import OpenAIError

_SWEEP_EVERY = 1.0


class _Entry:
    __slots__ = ("blocked_until", "failures", "first")

    def __init__(self, now: float) -> None:
        self.first = now
        self.failures = 0
        self.blocked_until = 0.0


def throttled(retry_seconds: float) -> OpenAIError:
    retry_ms = max(1, math.ceil(retry_seconds * 1000))
    return OpenAIError(
        429,
        f"Too many failed authentication attempts from this address. Try again in {math.ceil(retry_ms / 1000)} s with a valid key.",
        type="rate_limit_error",
        code="too_many_failed_attempts",
        headers={**retry_headers(retry_ms), "x-should-retry": "false"},
    )


class FailedAuthThrottle:
    def __init__(
        self,
        *,
        max_failures: int,
        window_seconds: float,
        address_of: Callable[[dict[str, Any]], str],
        max_tracked: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window = window_seconds
        self._address_of = address_of
        self._max_tracked = max_tracked
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._swept = 0.0

    @property
    def enabled(self) -> bool:
        return self._max > 0

    def refusal(self, scope: dict[str, Any]) -> OpenAIError | None:
        """The 429 for an address that is blocked now, else None (checked before the credential)."""
        if not self._entries:
            return None
        key = self._key(scope)
        entry = self._entries.get(key)
        if entry is None or not entry.blocked_until:
            return None
        left = entry.blocked_until - self._clock()
        if left > 0:
            return throttled(left)
        del self._entries[key]  # served its time: a fresh start
        return None

    def failed(self, scope: dict[str, Any]) -> None:
        """Count one wrong credential from this request's address."""
        if self._max <= 0:
            return
        now = self._clock()
        key = self._key(scope)
        entries = self._entries
        entry = entries.get(key)
        if entry is None or (not entry.blocked_until and now - entry.first > self._window):
            if entry is None and len(entries) >= self._max_tracked:
                self._make_room(now)
            entry = entries[key] = _Entry(now)
        entry.failures += 1
        if entry.failures >= self._max and not entry.blocked_until:
            entry.blocked_until = now + self._window

    def _key(self, scope: dict[str, Any]) -> str:
        address = self._address_of(scope)
        if ":" in address:
            try:
                return str(ipaddress.IPv6Network((address.partition("%")[0], 64), strict=False))
            except ValueError:
                return address
        return address

    def _make_room(self, now: float) -> None:
        entries = self._entries
        if now - self._swept > _SWEEP_EVERY:
            # A sweep is O(n); once a second at most, however fast failures come.
            self._swept = now
            window = self._window
            for key in [k for k, e in entries.items() if (e.blocked_until and e.blocked_until <= now) or (not e.blocked_until and now - e.first > window)]:
                del entries[key]
        while len(entries) >= self._max_tracked:
            del entries[next(iter(entries))]  # the oldest
