"""The pieces on their own: sliding windows, prices, periods, model patterns, durations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from toolrelay.app.auth.access import ModelAccess
from toolrelay.app.auth.durations import parse_duration, parse_when
from toolrelay.app.auth.limiter import Ask, MemoryBackend, Policy
from toolrelay.app.auth.periods import PeriodClock, period_bounds
from toolrelay.app.auth.pricing import PriceTable
from toolrelay.app.auth.settings import ModelPrice, PricingSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_admits_exactly_the_limit_per_60_seconds() -> None:
    clock = Clock()
    backend = MemoryBackend(clock=clock)
    policy = Policy(rpm=60)
    admitted = 0
    for n in range(90):  # a burst over 9 seconds
        clock.now = 1000 + n * 0.1
        admitted += backend.acquire_now(Ask("k:a", f"r{n}", policy, 0)).ok
    assert admitted == 60
    refused = backend.acquire_now(Ask("k:a", "x", policy, 0))
    assert refused.reason == "requests" and refused.used == 60
    assert refused.retry_ms == pytest.approx(60_000 - (clock.now - 1000) * 1000, abs=2)
    clock.now = 1060.05  # the first entry (t=1000.0) has left the window, the second (1000.1) not yet
    assert backend.acquire_now(Ask("k:a", "y", policy, 0)).ok
    assert not backend.acquire_now(Ask("k:a", "z", policy, 0)).ok


def test_token_window_books_real_usage_and_refuses_too_large() -> None:
    clock = Clock()
    backend = MemoryBackend(clock=clock)
    policy = Policy(tpm=1000)
    first = backend.acquire_now(Ask("k:t", "1", policy, 800))
    assert first.ok and first.tokens_remaining == 200 and first.tokens_reset_ms == 60_000
    assert not backend.acquire_now(Ask("k:t", "2", policy, 300)).ok
    backend.settle_now(Ask("k:t", "1", policy, 800), first, 100, 0)  # it used 100, not 800
    second = backend.acquire_now(Ask("k:t", "2", policy, 300))
    assert second.ok and second.tokens_remaining == 600
    assert backend.acquire_now(Ask("k:t", "3", policy, 1001)).reason == "too_large"
    clock.now += 61
    assert backend.acquire_now(Ask("k:t", "4", policy, 1000)).ok


def test_slots_budget_and_sweep() -> None:
    clock = Clock()
    backend = MemoryBackend(clock=clock, slot_ttl_seconds=30)
    policy = Policy(max_parallel=2, budget_nano=1000, budget_period="daily")
    a = backend.acquire_now(Ask("k:s", "a", policy, 0, 0))
    b = backend.acquire_now(Ask("k:s", "b", policy, 0, 0))
    assert a.ok and b.ok
    assert backend.acquire_now(Ask("k:s", "c", policy, 0, 0)).reason == "parallel"
    backend.settle_now(Ask("k:s", "a", policy, 0, 0), a, 0, 999)
    assert backend.acquire_now(Ask("k:s", "c", policy, 0, 0)).ok
    backend.settle_now(Ask("k:s", "b", policy, 0, 0), b, 0, 1)
    assert backend.acquire_now(Ask("k:s", "d", policy, 0, 0)).reason == "budget"
    assert backend.acquire_now(Ask("k:s", "d", policy, 0, 86400)).ok  # a new period starts at zero
    clock.now += 31  # a slot whose release never came expires
    assert backend.acquire_now(Ask("k:s", "e", policy, 0, 86400)).ok
    assert asyncio.run(backend.spent("s", 0)) == 1000


def test_budget_reservations_hold_settle_and_lapse() -> None:
    clock = Clock()
    backend = MemoryBackend(clock=clock, slot_ttl_seconds=30)
    policy = Policy(budget_nano=1000, budget_period="daily")
    asks = {rid: Ask("k:r", rid, policy, 0, 0, cost_nano=400) for rid in "abc"}
    a = backend.acquire_now(asks["a"])
    assert a.ok and backend.acquire_now(asks["b"]).ok
    refused = backend.acquire_now(asks["c"])  # 800 held + 400 > 1000, though nothing is spent yet
    assert refused.reason == "budget" and refused.used == 800
    backend.settle_now(asks["a"], a, 0, 10)  # a really cost 10: its 400 are free again
    assert backend.acquire_now(asks["c"]).ok
    # b's agent run wants 600 for its next call: 10 spent + 400 (c) + 600 > 1000.
    assert backend.reserve_now(asks["b"], 600) == 410 and asks["b"].cost_nano == 400
    assert backend.reserve_now(asks["b"], 590) is None and asks["b"].cost_nano == 590
    clock.now += 31  # reservations whose release never came lapse with the slot TTL
    assert backend.acquire_now(Ask("k:r", "d", policy, 0, 0, cost_nano=990)).ok


def test_prices() -> None:
    table = PriceTable(
        PricingSettings(models={"mine": ModelPrice(input=1, output=2), "corp/*": ModelPrice(input=3, output=4), "corp/big*": ModelPrice(input=5, output=6)}),
        local_upstreams=frozenset({"local"}),
    )

    def cost(model: str, upstream: str | None = None, local: bool = False, **usage: int) -> float:
        return table.lookup(model, upstream, local=local).cost_nano(usage) / 1e9

    assert cost("mine", prompt_tokens=1_000_000, completion_tokens=1_000_000) == 3.0
    assert cost("corp/small", prompt_tokens=1_000_000) == 3.0
    assert cost("corp/big-1", prompt_tokens=1_000_000) == 5.0  # the longer pattern wins
    assert cost("gpt-4o", prompt_tokens=1_000_000, completion_tokens=1_000_000) == 12.5
    assert cost("gpt-4o-mini-2024-07-18", prompt_tokens=1_000_000) == 0.15
    assert cost("openai/gpt-4.1-nano", completion_tokens=1_000_000) == 0.40
    assert cost("o3", prompt_tokens=1_000_000) == 2.0 and cost("o3-mini", prompt_tokens=1_000_000) == 1.1
    assert cost("gpt-5", prompt_tokens=1_000_000) == 1.25 and cost("gpt-5-mini-2025-08-07", prompt_tokens=1_000_000) == 0.25
    assert cost("alias", "gpt-4o", prompt_tokens=1_000_000) == 2.5  # priced by what it routes to
    assert cost("gpt-4o", local=True, prompt_tokens=1_000_000) == 0.0  # a local upstream is free
    assert cost("unknown-model", prompt_tokens=10**9) == 0.0
    cached = table.lookup("gpt-4o").cost_nano({"prompt_tokens": 1_000_000, "prompt_tokens_details": {"cached_tokens": 500_000}})
    assert cached / 1e9 == pytest.approx(0.5 * 2.5 + 0.5 * 1.25)
    assert PriceTable(PricingSettings(builtin=False)).lookup("gpt-4o").free


def test_periods() -> None:
    ts = datetime(2025, 3, 13, 15, 30, tzinfo=UTC).timestamp()  # a Thursday
    day = period_bounds("daily", ts)
    assert datetime.fromtimestamp(day[0], UTC) == datetime(2025, 3, 13, tzinfo=UTC) and day[1] - day[0] == 86400
    week = period_bounds("weekly", ts)
    assert datetime.fromtimestamp(week[0], UTC) == datetime(2025, 3, 10, tzinfo=UTC)
    month = period_bounds("monthly", ts)
    assert datetime.fromtimestamp(month[1], UTC) == datetime(2025, 4, 1, tzinfo=UTC)
    assert period_bounds("total", ts) == (0, float("inf"))
    clock = PeriodClock()
    assert clock.bounds("daily", ts) == day and clock.bounds("daily", day[1]) == (int(day[1]), day[1] + 86400)


def test_model_patterns() -> None:
    access = ModelAccess(["fake-model", "agent/*", "org/*-mini"])
    assert access.allows("fake-model") and access.allows("agent/anything/at/all") and access.allows("org/gpt-mini")
    assert not access.allows("fake-model-2") and not access.allows("agentx/y") and not access.allows("org/gpt-mini-2")
    assert ModelAccess([]).allows("x") and ModelAccess(["*"]).allows("agent/x")
    assert not ModelAccess(["a.b"]).allows("axb")  # dots are literal


def test_durations() -> None:
    assert parse_duration("90s") == 90 and parse_duration("2w") == 14 * 86400
    assert parse_when("1d", now=1000.0, future=True) == 1000 + 86400
    assert parse_when("1h", now=10_000.0, future=False) == 10_000 - 3600
    assert parse_when("2025-01-31", now=0, future=True) == datetime(2025, 1, 31, tzinfo=UTC).timestamp()
    with pytest.raises(ValueError):
        parse_when("soon", now=0, future=True)
