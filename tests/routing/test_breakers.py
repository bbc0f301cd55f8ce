"""Circuit breakers over real HTTP: a failing deployment is taken out, probed after its cooldown, and the state is shared through Redis."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from fakes.clients import rest, sdk
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from fakes.waiting import wait_until

from .conftest import POOL

MESSAGES = [{"role": "user", "content": "hi"}]


def _deployment(relay: RunningServer) -> str:
    with sdk(relay) as client:
        raw = client.chat.completions.with_raw_response.create(model=POOL, messages=MESSAGES)  # type: ignore[arg-type]
        return raw.headers["x-toolrelay-deployment"]


def _state(relay: RunningServer, deployment: str) -> int | None:
    with rest(relay) as http:
        text = http.get("/metrics").text
    marker = f'toolrelay_deployment_state{{model="{POOL}",deployment="{deployment}"}} '
    for line in text.splitlines():
        if line.startswith(marker):
            return int(line[len(marker) :])
    return None


def _ready(relay: RunningServer) -> httpx.Response:
    with rest(relay) as http:
        return http.get("/ready")


def test_a_breaker_opens_then_a_probe_closes_it(start: Callable[..., RunningServer], ups: dict[str, FakeUpstream]) -> None:
    relay = start(routing={"breaker_failures": 2, "breaker_cooldown_seconds": 1.0})
    ups["a"].default_reply = Reply(status=500)
    assert [_deployment(relay), _deployment(relay)] == ["b", "b"]
    assert _state(relay, "a") == 2  # open
    assert _ready(relay).json()["status"] == "degraded"
    assert _deployment(relay) == "b"
    assert len(ups["a"].chat_requests) == 2  # taken out: the third request never reached it
    ups["a"].default_reply = Reply()
    wait_until(lambda: _state(relay, "a") == 1, timeout=5.0, what="the cooldown to end (half-open)")
    assert _deployment(relay) == "a"  # the probe
    assert _state(relay, "a") == 0
    assert _ready(relay).json()["status"] == "ready"
    assert len(ups["a"].chat_requests) == 3


def test_a_failed_probe_reopens_the_breaker(start: Callable[..., RunningServer], ups: dict[str, FakeUpstream]) -> None:
    relay = start(routing={"breaker_failures": 1, "breaker_cooldown_seconds": 0.5})
    ups["a"].default_reply = Reply(status=500)
    assert _deployment(relay) == "b"
    wait_until(lambda: _state(relay, "a") == 1, timeout=5.0, what="half-open")
    assert _deployment(relay) == "b"  # the probe failed over, too
    assert _state(relay, "a") == 2
    assert len(ups["a"].chat_requests) == 2


def test_every_deployment_out_is_a_503_with_retry_after(start: Callable[..., RunningServer], ups: dict[str, FakeUpstream]) -> None:
    relay = start(routing={"breaker_failures": 1, "breaker_cooldown_seconds": 30.0})
    for up in ups.values():  # the fallback model too
        up.default_reply = Reply(status=500)
    with rest(relay) as http:
        first = http.post("/v1/chat/completions", json={"model": POOL, "messages": MESSAGES})
        assert first.status_code == 500  # all failed: the last upstream error
        second = http.post("/v1/chat/completions", json={"model": POOL, "messages": MESSAGES})
    assert second.status_code == 503
    assert second.json()["error"]["code"] == "deployments_unavailable"
    assert int(second.headers["retry-after"]) >= 1
    assert len(ups["a"].chat_requests) == len(ups["b"].chat_requests) == len(ups["c"].chat_requests) == 1


def test_two_relays_share_breakers_through_redis(start: Callable[..., RunningServer], ups: dict[str, FakeUpstream], redis_url: str) -> None:
    shared = {"breaker_failures": 2, "breaker_cooldown_seconds": 30.0, "breaker_sync_seconds": 0.1}
    first = start(routing=shared, redis={"url": redis_url, "prefix": "routing-test"})
    second = start(routing=shared, redis={"url": redis_url, "prefix": "routing-test"})
    ups["a"].default_reply = Reply(status=500)
    assert [_deployment(first), _deployment(first)] == ["b", "b"]
    # The second relay never saw a fail: it learns of the open breaker from Redis.
    wait_until(lambda: _state(second, "a") == 2, timeout=5.0, what="the second relay to see the breaker open")
    assert _deployment(second) == "b"
    assert len(ups["a"].chat_requests) == 2
