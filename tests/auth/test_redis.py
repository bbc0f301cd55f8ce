"""Several toolrelay processes sharing one Redis enforce one limit, not one each."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

from .conftest import Admin

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def pair(make_relay, redis_url: str, tmp_path: Path) -> tuple[RunningServer, RunningServer]:
    """Two servers, one data directory (same keys), one Redis; each its own event loop and counters."""
    prefix = "t" + tmp_path.name[-8:]  # a namespace per test: no leftovers from the previous one
    redis = {"url": redis_url, "prefix": prefix}
    return make_relay(data_dir=tmp_path / "shared", redis=redis), make_relay(data_dir=tmp_path / "shared", redis=redis)


def test_two_servers_hold_60_rpm_to_60_requests_in_total(pair: tuple[RunningServer, RunningServer], fake: FakeUpstream) -> None:
    first, second = pair
    admin = Admin(first)
    try:
        _, key = admin.create_key("shared-rpm", rpm=60)
    finally:
        admin.close()
    headers = {"authorization": f"Bearer {key}"}
    statuses = []
    remaining = []
    with httpx.Client(timeout=30.0, headers=headers) as http:
        for n in range(90):
            server = (first, second)[n % 2]
            response = http.post(server.url("/v1/chat/completions"), json=CHAT)
            statuses.append(response.status_code)
            if response.status_code == 200:
                remaining.append(int(response.headers["x-ratelimit-remaining-requests"]))
            else:
                assert response.json()["error"]["code"] == "rate_limit_exceeded"
                assert int(response.headers["retry-after-ms"]) > 0
    assert statuses.count(200) == 60 and statuses.count(429) == 30
    assert statuses[:60] == [200] * 60
    assert remaining == list(range(59, -1, -1))  # one counter, whichever server answered
    assert len(fake.chat_requests) == 60


def test_parallel_slots_and_budget_are_shared(pair: tuple[RunningServer, RunningServer], fake: FakeUpstream) -> None:
    first, second = pair
    admin = Admin(first)
    try:
        key_id, key = admin.create_key("shared-slots", max_parallel=1, budget_usd=5, budget_period="total")
    finally:
        admin.close()
    headers = {"authorization": f"Bearer {key}"}
    fake.enqueue(Reply(content="slow", delay=1.0))
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(httpx.post(first.url("/v1/chat/completions"), json=CHAT, headers=headers, timeout=30).status_code))
    thread.start()
    fake.wait_for_requests(1)
    busy = httpx.post(second.url("/v1/chat/completions"), json=CHAT, headers=headers, timeout=30)
    assert busy.status_code == 429 and "parallel" in busy.json()["error"]["message"]
    thread.join(10)
    assert results == [200]
    # $1 per token on fake-tools: spent on the second server, refused by the first.
    assert httpx.post(second.url("/v1/chat/completions"), json={**CHAT, "model": "fake-tools"}, headers=headers, timeout=30).status_code == 200
    refused = httpx.post(first.url("/v1/chat/completions"), json=CHAT, headers=headers, timeout=30)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"


def test_unreachable_redis_fails_closed_with_503(make_relay, fake: FakeUpstream, tmp_path: Path, dead_port: int) -> None:
    relay = make_relay(redis={"url": f"redis://127.0.0.1:{dead_port}/0", "connect_timeout": 0.5, "socket_timeout": 0.5})
    admin = Admin(relay)
    try:
        _, limited = admin.create_key("limited", rpm=10)
        _, free = admin.create_key("unlimited")
    finally:
        admin.close()
    response = httpx.post(relay.url("/v1/chat/completions"), json=CHAT, headers={"authorization": f"Bearer {limited}"}, timeout=30)
    assert response.status_code == 503 and response.json()["error"]["code"] == "limiter_unavailable"
    assert response.headers["retry-after"] == "1"
    # Keys without limits never touch Redis.
    assert httpx.post(relay.url("/v1/chat/completions"), json=CHAT, headers={"authorization": f"Bearer {free}"}, timeout=30).status_code == 200
