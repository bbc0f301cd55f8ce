"""The pure cores of routing: strategies, the breaker's state machine, error classification (table-driven and Hypothesis)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolrelay.app.errors import OpenAIError, upstream_disconnected, upstream_timeout, upstream_unreachable
from toolrelay.app.providers.routing import Breaker, BreakerState, Candidate, classify, pick


def _c(index: int, *, weight: float = 1.0, priority: int = 0, inflight: int = 0, latency: float | None = None) -> Candidate:
    return Candidate(index, weight, priority, inflight, latency)


@pytest.mark.parametrize(
    ("strategy", "candidates", "expected"),
    [
        ("priority", [_c(0), _c(1)], 0),
        ("priority", [_c(0, priority=1), _c(1, priority=0)], 1),
        ("least_busy", [_c(0, inflight=3), _c(1, inflight=1), _c(2, inflight=2)], 1),
        ("least_busy", [_c(0, inflight=0, priority=1), _c(1, inflight=9)], 1),  # tiers before load
        ("latency", [_c(0, latency=0.2), _c(1, latency=0.1)], 1),
        ("latency", [_c(0, latency=0.2), _c(1, latency=None)], 1),  # never measured: tried first
        ("weighted", [_c(0, weight=1.0), _c(1, weight=0.0001)], 0),
        ("weighted", [_c(5)], 5),
    ],
)
def test_strategies(strategy: str, candidates: list[Candidate], expected: int) -> None:
    assert pick(strategy, candidates, lambda: 0.5) == expected  # type: ignore[arg-type]


def test_no_candidate_is_none() -> None:
    assert pick("weighted", [], random.random) is None


@given(st.lists(st.tuples(st.floats(0.01, 100), st.integers(0, 3)), min_size=1, max_size=6), st.floats(0, 0.999999))
def test_weighted_always_picks_from_the_lowest_tier(spec: list[tuple[float, int]], point: float) -> None:
    candidates = [_c(i, weight=w, priority=p) for i, (w, p) in enumerate(spec)]
    chosen = pick("weighted", candidates, lambda: point)
    tier = min(p for _, p in spec)
    assert chosen is not None and spec[chosen][1] == tier


def test_weighted_follows_the_weights() -> None:
    rng = random.Random(7)
    candidates = [_c(0, weight=3.0), _c(1, weight=1.0)]
    counts = [0, 0]
    for _ in range(4000):
        counts[pick("weighted", candidates, rng.random) or 0] += 1
    assert 0.70 < counts[0] / 4000 < 0.80


def test_breaker_opens_after_failures_within_the_window() -> None:
    b = Breaker(limit=3, window=10.0, cooldown=5.0)
    assert not b.failed(0.0) and not b.failed(1.0)
    assert not b.failed(12.0)  # the first two fell out of the window
    assert not b.failed(13.0)
    assert b.failed(14.0)
    assert b.state(15.0) is BreakerState.OPEN and not b.usable(15.0)


def test_breaker_half_open_lets_one_probe_through() -> None:
    b = Breaker(limit=1, window=10.0, cooldown=5.0)
    assert b.failed(0.0)
    assert b.state(5.0) is BreakerState.HALF_OPEN and b.usable(5.0)
    b.claim_probe(5.0)
    assert not b.usable(6.0)  # the probe is out
    assert b.succeeded()
    assert b.state(6.0) is BreakerState.CLOSED and b.usable(6.0)


def test_a_failed_probe_reopens_at_once() -> None:
    b = Breaker(limit=5, window=10.0, cooldown=5.0)
    b.trip(0.0, 5.0)
    b.claim_probe(6.0)
    assert b.failed(6.5)
    assert b.state(7.0) is BreakerState.OPEN and b.open_until == 11.5


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (OpenAIError(429, "slow down"), "rate_limited"),
        (OpenAIError(500, "boom"), "error"),
        (OpenAIError(503, "overloaded"), "error"),
        (upstream_unreachable("refused"), "error"),
        (upstream_timeout(), "error"),
        (upstream_disconnected("reset"), "dropped"),
        (OpenAIError(502, "garbage", code="bad_upstream_response"), "bad_response"),
        (OpenAIError(400, "too long", code="context_length_exceeded"), "context_length"),
        (OpenAIError(400, "bad"), "refused"),
        (OpenAIError(404, "no model", code="model_not_found"), "refused"),
    ],
)
def test_classify(error: OpenAIError, outcome: str) -> None:
    assert classify(error) == outcome
