"""Budgets across hosts that share a PostgreSQL ledger but no Redis.

With Redis, the spend counter is one number every host adds to. Without it,
each host's :class:`~toolrelay.app.auth.limiter.MemoryBackend` counts only
its own spend, so N hosts could spend N budgets. :class:`SharedSpend` closes
that: every :data:`REFRESH_SECONDS` it reads, for each budgeted key, what the
*other* hosts have spent in the key's current period (the ledger's
``usage_spend`` table: one row per key, UTC day and host, kept by a trigger,
so a monthly budget is a sum over at most 31 rows per host) and hands it to
the backend, which adds it to its own exact count at admission. The request
path is unchanged: one more dict lookup for a budgeted key.

A key's budget is therefore enforced once across hosts up to what the other
hosts spent in the last refresh interval plus their ledger flush interval
(about 1.25 s by default); a lone host is exact as before.

The split is by the ledger's ``host`` column: this process's own rows are
counted in memory (seeded from the ledger at start-up), everyone else's are
read. Two processes must therefore not share a ``[database] host_name``
without Redis (the default, ``<hostname>:<pid>``, never does).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio

from toolrelay.app.auth.periods import PeriodClock

__all__ = ["REFRESH_SECONDS", "SharedSpend", "SpendLedger", "SpendSink"]

log = logging.getLogger("toolrelay.auth")

# How stale another host's spend may be at this host's admission. A second
# keeps the read to one small indexed query per second per host whatever the
# request rate; the ledger's own flush interval (0.25 s) comes on top.
REFRESH_SECONDS = 1.0


class SpendLedger(Protocol):
    def spend_by_host(self, wanted: Sequence[tuple[str, int]]) -> dict[str, tuple[int, int]]:
        """(this host's, other hosts') spend per key id since each period start."""
        ...


class SpendSink(Protocol):
    def share_spend(self, key_id: str, period_start: int, nano: int) -> None: ...

    async def seed_spend(self, key_id: str, period_start: int, period_end: float, nano: int) -> None: ...


class SharedSpend:
    """Keeps ``sink``'s view of the other hosts' spend current for every budgeted key.

    ``budgeted()`` lists (key id, budget period) of the keys with a budget
    (read each round, so a budget set on another host is followed).
    """

    def __init__(
        self, ledger: SpendLedger, sink: SpendSink, budgeted: Callable[[], list[tuple[str, str]]], *, refresh_seconds: float = REFRESH_SECONDS
    ) -> None:
        self._ledger = ledger
        self._sink = sink
        self._budgeted = budgeted
        self._refresh = refresh_seconds
        self._periods = PeriodClock()
        self._error_logged = -math.inf
        self.rounds = 0

    async def seed(self) -> None:
        """This host's own spend (rows under its host name from before a restart) and the others'."""
        await self._round(seed=True)

    async def run(self) -> None:
        """Refresh until cancelled; an unreachable database keeps the last figures (logged at most every minute)."""
        while True:
            await anyio.sleep(self._refresh)
            try:
                await self._round(seed=False)
            except Exception as exc:  # noqa: BLE001 - the ledger keeps its own rows; only staleness grows
                now = time.monotonic()
                if now - self._error_logged > 60:
                    self._error_logged = now
                    log.warning("budgets: cannot read the other hosts' spend (%s: %s); using the last figures", type(exc).__name__, exc)

    async def _round(self, *, seed: bool) -> None:
        now = time.time()
        wanted: list[tuple[str, int, float]] = []
        for key_id, period in self._budgeted():
            start, end = self._periods.bounds(period, now)
            wanted.append((key_id, start, end))
        if not wanted:
            return
        ledger = self._ledger
        spend = await anyio.to_thread.run_sync(ledger.spend_by_host, [(k, s) for k, s, _ in wanted])
        for key_id, start, end in wanted:
            own, others = spend.get(key_id, (0, 0))
            if seed:
                await self._sink.seed_spend(key_id, start, end, own)
            self._sink.share_spend(key_id, start, others)
        self.rounds += 1
