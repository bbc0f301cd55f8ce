"""Budget periods in UTC: the day, the ISO week (from Monday), the calendar month, or all time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

FOREVER = float("inf")


def period_bounds(period: str, now: float) -> tuple[int, float]:
    """(start, end) in Unix seconds of the ``period`` containing ``now``."""
    if period == "total":
        return 0, FOREVER
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        start = day
        end = start + timedelta(days=1)
    elif period == "weekly":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period == "monthly":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return int(start.timestamp()), end.timestamp()


class PeriodClock:
    """Current bounds per period name, recomputed only when a period ends (so a datetime call is rare)."""

    __slots__ = ("_bounds",)

    def __init__(self) -> None:
        self._bounds: dict[str, tuple[int, float]] = {}

    def bounds(self, period: str, now: float) -> tuple[int, float]:
        current = self._bounds.get(period)
        if current is None or now >= current[1] or now < current[0]:
            current = self._bounds[period] = period_bounds(period, now)
        return current
