"""Several toolrelay processes sharing one Redis enforce one limit, not one each."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from fakes.admin import ADMIN_KEY, Admin
from fakes.clients import sdk
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

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
        _key_id, key = admin.create_key("shared-slots", max_parallel=1, budget_usd=20, budget_period="total")
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
    # $1 per token on fake-tools: admitted on its worst case (under $20), it really costs $25,
    # spent on the second server, refused by the first.
    fake.enqueue(Reply(usage={"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}))
    assert httpx.post(second.url("/v1/chat/completions"), json={**CHAT, "model": "fake-tools", "max_tokens": 5}, headers=headers, timeout=30).status_code == 200
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


def test_a_paused_agent_run_resumes_on_another_host(make_relay, redis_url: str, tmp_path: Path, fake: FakeUpstream) -> None:
    """Continuations live in Redis when it is configured: host B restores the built-in steps host A took."""
    redis = {"url": redis_url, "prefix": "c" + tmp_path.name[-8:]}
    host_a = make_relay(data_dir=tmp_path / "a", redis=redis)
    host_b = make_relay(data_dir=tmp_path / "b", redis=redis)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    fake.enqueue(
        Reply(tool_calls=[{"name": "current_time", "arguments": {}}]),
        Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}]),
        Reply(content="Cold in Oslo."),
    )
    question = {"role": "user", "content": "Weather in Oslo?"}
    with sdk(host_a, ADMIN_KEY) as a:
        paused = a.chat.completions.create(model="agent/fake-model", messages=[question], tools=tools)
    call = paused.choices[0].message.tool_calls[0]
    assert paused.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    with sdk(host_b, ADMIN_KEY) as b:
        resumed = b.chat.completions.create(
            model="agent/fake-model",
            messages=[question, paused.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "-3 C"}],
            tools=tools,
        )
    assert resumed.choices[0].message.content == "Cold in Oslo."
    sent = fake.chat_requests[-1].body["messages"]
    roles = [(m["role"], (m.get("tool_calls") or [{}])[0].get("function", {}).get("name")) for m in sent if m["role"] != "system"]
    assert roles == [("user", None), ("assistant", "current_time"), ("tool", None), ("assistant", "get_weather"), ("tool", None)]
    assert '"date"' in sent[-3]["content"]  # host A's current_time result, restored on host B
    assert not (tmp_path / "b" / "agent.db").exists()  # nothing of it in host B's SQLite
