"""Which deployment an attempt goes to: pure functions over the candidates' numbers.

Priority tiers come first for every strategy (the lowest tier with a free
deployment is used); within a tier the strategy decides. Random choices take
the caller's ``random`` function, so tests can pin them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from toolrelay.app.settings import RoutingStrategy

__all__ = ["Candidate", "pick"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a strategy knows of one available deployment."""

    index: int
    weight: float
    priority: int
    inflight: int = 0
    # Smoothed time to the first byte, seconds; None: never measured (tried first by "latency").
    latency: float | None = None


def pick(strategy: RoutingStrategy, candidates: Sequence[Candidate], random: Callable[[], float]) -> int | None:
    """The ``index`` of the chosen candidate, or None when there is none."""
    if not candidates:
        return None
    tier = min(c.priority for c in candidates)
    pool = [c for c in candidates if c.priority == tier]
    if len(pool) == 1:
        return pool[0].index
    if strategy == "priority":
        return pool[0].index  # declared order
    if strategy == "least_busy":
        return min(pool, key=lambda c: c.inflight).index
    if strategy == "latency":
        return min(pool, key=lambda c: -1.0 if c.latency is None else c.latency).index
    total = sum(c.weight for c in pool)
    point = random() * total
    for c in pool:
        point -= c.weight
        if point < 0:
            return c.index
    return pool[-1].index  # float rounding at the top end
