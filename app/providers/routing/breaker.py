"""A deployment's circuit breaker and 429 rest, in this process: a small state machine over a clock.

``closed`` (serving) -> ``open`` after ``failures`` failures within
``window`` seconds (or a shared store saying another process opened it) ->
``half_open`` once ``cooldown`` passed, where one request is let through as a
probe: its success closes the breaker, its failure opens it again. Times are
``time.monotonic()`` seconds passed in by the caller, so the unit tests need
no sleeping.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum

__all__ = ["Breaker", "BreakerState"]


class BreakerState(IntEnum):
    """The values of ``toolrelay_deployment_state``."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Breaker:
    __slots__ = ("_failures", "cooldown", "limit", "open_until", "probe_until", "window")

    def __init__(self, *, limit: int, window: float, cooldown: float) -> None:
        self.limit = limit
        self.window = window
        self.cooldown = cooldown
        self._failures: deque[float] = deque()
        # 0.0: closed; otherwise open until then, half-open after.
        self.open_until = 0.0
        # A probe is out until then (bounded, so a probe that never reports back frees the slot).
        self.probe_until = 0.0

    def state(self, now: float) -> BreakerState:
        if not self.open_until:
            return BreakerState.CLOSED
        return BreakerState.OPEN if now < self.open_until else BreakerState.HALF_OPEN

    def usable(self, now: float) -> bool:
        """Closed, or half-open with no probe out."""
        open_until = self.open_until
        return not open_until or (now >= open_until and now >= self.probe_until)

    def claim_probe(self, now: float) -> None:
        self.probe_until = now + self.cooldown

    def failed(self, now: float) -> bool:
        """Count a failure; True when it opened the breaker (a failed probe reopens it at once)."""
        if self.open_until:
            if now >= self.open_until:
                self.trip(now, self.cooldown)
                return True
            return False
        failures = self._failures
        failures.append(now)
        cutoff = now - self.window
        while failures and failures[0] < cutoff:
            failures.popleft()
        if len(failures) >= self.limit:
            self.trip(now, self.cooldown)
            return True
        return False

    def trip(self, now: float, seconds: float) -> None:
        self.open_until = now + seconds
        self.probe_until = 0.0
        self._failures.clear()

    def succeeded(self) -> bool:
        """Record a success; True when it closed an open (half-open) breaker."""
        if self._failures:
            self._failures.clear()
        if self.open_until:
            self.open_until = self.probe_until = 0.0
            return True
        return False

    @property
    def failures(self) -> int:
        return len(self._failures)
