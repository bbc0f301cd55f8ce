"""Issue 10 items 5 and 6: what a request can cost is what it is held to, and booked.

Item 6: ``n`` multiplied the completion but not the estimate (``n=128`` went
through a $0.05 cap), concurrent requests were all admitted while the spend
alone was under budget, and an agent run was checked once, at admission,
however many model calls it then made.

Item 5: a client that went away before the response started was booked as
499 with zero tokens and zero cost, though the upstream had run (an agent run
maybe several times).

Every test drives a real toolrelay over HTTP in front of the scripted fake
upstream, with priced models; the budget tests run on both limit backends
(in-process and Redis).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fakes.admin import Admin
from fakes.relays import auth_tree
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Tell me something."}]


def _relay(
    relay_factory: Callable[..., RunningServer], fake: FakeUpstream, data_dir: Path, *, prices: dict[str, Any], cap: float = 1000.0, **sections: Any
) -> RunningServer:
    tree = auth_tree(
        fake,
        data_dir,
        pricing={"models": prices},
        limits={"max_request_cost_usd": cap},
        agent={"builtin_tools": ["current_time"]},
        **sections,
    )
    return relay_factory(tree=tree)


def _post(relay: RunningServer, key: str, body: dict[str, Any], timeout: float = 30.0) -> httpx.Response:
    return httpx.post(relay.url(CHAT), json=body, headers={"authorization": f"Bearer {key}"}, timeout=timeout)


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Extra settings sections for the limit backend under test (Redis: its own namespace)."""
    if request.param == "memory":
        return {}
    url = request.getfixturevalue("redis_url")
    return {"redis": {"url": url, "prefix": "sec" + tmp_path.name[-8:]}}


# ------------------------------------------------------------------ item 6: n


def test_n_counts_against_the_cost_cap(relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path) -> None:
    # $30 per million output tokens: 1000 tokens are $0.03, under the $0.05 cap; 128 choices of them are $3.84.
    relay = _relay(relay_factory, fake, tmp_path / "data", prices={"fake-model": {"input": 10.0, "output": 30.0}}, cap=0.05)
    admin = Admin(relay)
    try:
        _, key = admin.create_key("n-cap")
    finally:
        admin.close()
    assert _post(relay, key, {"model": "fake-model", "messages": MESSAGES, "max_tokens": 1000}).status_code == 200
    sent = len(fake.chat_requests)
    refused = _post(relay, key, {"model": "fake-model", "messages": MESSAGES, "max_tokens": 1000, "n": 128})
    assert refused.status_code == 400, refused.text[:500]
    error = _error(refused)
    assert error["code"] == "cost_cap_exceeded" and error["type"] == "invalid_request_error"
    assert "n=128" in error["message"] and "$0.0500" in error["message"]
    # Without max_tokens, the assumed completion is multiplied too (256 x 128 tokens = $0.98).
    assert _post(relay, key, {"model": "fake-model", "messages": MESSAGES, "n": 128}).status_code == 400
    assert len(fake.chat_requests) == sent  # nothing reached the upstream


def test_n_counts_against_the_token_reservation(relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path) -> None:
    relay = _relay(relay_factory, fake, tmp_path / "data", prices={"fake-model": {"input": 1.0, "output": 2.0}})
    admin = Admin(relay)
    try:
        _, key = admin.create_key("n-tpm", tpm=5000)
    finally:
        admin.close()
    assert _post(relay, key, {"model": "fake-model", "messages": MESSAGES, "max_tokens": 1000}).status_code == 200
    refused = _post(relay, key, {"model": "fake-model", "messages": MESSAGES, "max_tokens": 1000, "n": 8})
    assert refused.status_code == 429, refused.text[:500]
    assert _error(refused)["code"] == "rate_limit_exceeded"
    assert refused.headers["x-should-retry"] == "false"  # 8 x 1000 tokens can never fit 5000 per minute


# ------------------------------------------------------------------ item 6: budget reservation


def test_concurrent_requests_cannot_all_start_under_a_small_budget(
    relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path, backend: dict[str, Any]
) -> None:
    # $1000 per million tokens: with max_tokens=380 each request could cost about $0.40; the budget is $1.
    relay = _relay(relay_factory, fake, tmp_path / "data", prices={"fake-model": {"input": 1000.0, "output": 1000.0}}, **backend)
    admin = Admin(relay)
    try:
        key_id, key = admin.create_key("small-budget", budget_usd=1, budget_period="daily")
        body = {"model": "fake-model", "messages": MESSAGES, "max_tokens": 380}
        fake.enqueue(Reply(content="first slow answer", delay=3.0), Reply(content="second slow answer", delay=3.0))
        statuses: list[int] = []
        threads = []
        for n in range(2):
            thread = threading.Thread(target=lambda: statuses.append(_post(relay, key, body).status_code))
            thread.start()
            threads.append(thread)
            fake.wait_for_requests(n + 1)
        # Two requests in flight hold about $0.80 of the $1; the spend alone is still $0.
        third = _post(relay, key, body)
        assert third.status_code == 429, third.text[:500]
        error = _error(third)
        assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
        assert third.headers["x-should-retry"] == "false"
        assert "in flight" in error["message"]
        for thread in threads:
            thread.join(30)
        assert statuses == [200, 200]
        assert len(fake.chat_requests) == 2
        # Settled: the reservations are gone and only the real cost (a few words each) is spent.
        rows = admin.usage_rows(key_id, count=3)
        real = sum(r["cost_usd"] for r in rows if r["status"] == 200)
        assert 0 < real < 0.1
        assert admin.http.get(f"/admin/keys/{key_id}").json()["spent_usd"] == pytest.approx(real)
        assert _post(relay, key, body).status_code == 200
    finally:
        admin.close()


def test_a_request_that_failed_upstream_gives_its_reservation_back(
    relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path, backend: dict[str, Any]
) -> None:
    relay = _relay(relay_factory, fake, tmp_path / "data", prices={"fake-model": {"input": 1000.0, "output": 1000.0}}, **backend)
    admin = Admin(relay)
    try:
        _, key = admin.create_key("failed-budget", budget_usd=1, budget_period="daily")
    finally:
        admin.close()
    body = {"model": "fake-model", "messages": MESSAGES, "max_tokens": 600}  # about $0.60 of the $1
    for _ in range(3):
        fake.enqueue(Reply(status=500))
        assert _post(relay, key, body).status_code >= 500
    fake.enqueue(Reply(content="fine now"))
    assert _post(relay, key, body).status_code == 200


# ------------------------------------------------------------------ item 6: agent steps

STEP_PRICES = {"fake-model": {"input": 10.0, "output": 10.0}}  # $0.00001 per token
# Every model call of the run may write 2000 tokens ($0.02 at most) on top of a prompt under 1000 tokens.
AGENT_BODY = {"model": "agent/fake-model", "messages": MESSAGES, "max_tokens": 2000}


def _three_step_script(fake: FakeUpstream) -> None:
    """Two tool calls reported as $0.03 and $0.055, then an answer the run must not ask for."""
    fake.enqueue(
        Reply(tool_calls=[{"name": "current_time", "arguments": {}}], usage={"prompt_tokens": 3000, "completion_tokens": 0, "total_tokens": 3000}),
        Reply(
            tool_calls=[{"name": "current_time", "arguments": {"timezone": "Europe/Paris"}}],
            usage={"prompt_tokens": 5500, "completion_tokens": 0, "total_tokens": 5500},
        ),
        Reply(content="This answer costs too much."),
    )


def test_agent_run_stops_before_the_call_that_would_pass_the_cost_cap(relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path) -> None:
    # Call 1: $0 + at most $0.03 fits $0.10; call 2: $0.03 + $0.03 fits; call 3: $0.085 + at least $0.02 does not.
    relay = _relay(relay_factory, fake, tmp_path / "data", prices=STEP_PRICES, cap=0.10)
    admin = Admin(relay)
    try:
        key_id, key = admin.create_key("agent-cap")
        _three_step_script(fake)
        response = _post(relay, key, AGENT_BODY)
        assert response.status_code == 400, response.text[:500]
        error = _error(response)
        assert error["code"] == "cost_cap_exceeded" and "agent run" in error["message"] and "$0.1000" in error["message"]
        assert len(fake.chat_requests) == 2
        [row] = admin.usage_rows(key_id, count=1)
        assert row["prompt_tokens"] == 8500 and row["cost_usd"] == pytest.approx(0.085)
        assert row["status"] == 400 and row["error_code"] == "cost_cap_exceeded"

        # Streamed: the steps already went out, so the stream ends with the error event.
        fake.reset()
        _three_step_script(fake)
        with httpx.stream("POST", relay.url(CHAT), json={**AGENT_BODY, "stream": True}, headers={"authorization": f"Bearer {key}"}, timeout=30) as stream:
            assert stream.status_code == 200
            events = [line[len("data: ") :] for line in stream.iter_lines() if line.startswith("data: ")]
        assert events[-1] != "[DONE]"
        assert orjson.loads(events[-1])["error"]["code"] == "cost_cap_exceeded"
        assert len(fake.chat_requests) == 2
        rows = admin.usage_rows(key_id, count=2)
        assert rows[-1]["prompt_tokens"] == 8500 and rows[-1]["cost_usd"] == pytest.approx(0.085)
    finally:
        admin.close()


def test_agent_run_stops_before_the_call_the_budget_cannot_cover(
    relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path, backend: dict[str, Any]
) -> None:
    relay = _relay(relay_factory, fake, tmp_path / "data", prices=STEP_PRICES, **backend)
    admin = Admin(relay)
    try:
        key_id, key = admin.create_key("agent-budget", budget_usd=0.10, budget_period="daily")
        _three_step_script(fake)
        response = _post(relay, key, AGENT_BODY)
        assert response.status_code == 429, response.text[:500]
        error = _error(response)
        assert error["code"] == "insufficient_quota" and response.headers["x-should-retry"] == "false"
        assert len(fake.chat_requests) == 2
        [row] = admin.usage_rows(key_id, count=1)
        assert row["prompt_tokens"] == 8500 and row["cost_usd"] == pytest.approx(0.085)
        # The run's reservation became its real cost.
        assert admin.http.get(f"/admin/keys/{key_id}").json()["spent_usd"] == pytest.approx(0.085)
    finally:
        admin.close()


# ------------------------------------------------------------------ item 5: disconnect before the response


def _send_and_abandon(relay: RunningServer, key: str, body: dict[str, Any], wait: Callable[[], Any]) -> None:
    """Send a chat request on a raw socket, wait for ``wait()`` (the upstream is busy), then hang up."""
    raw = orjson.dumps(body)
    host, port = relay.root_url.split("//", 1)[1].rstrip("/").split(":")
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + raw)
        wait()
        time.sleep(0.2)  # past the handler's disconnect-watch delay
    # Closed without reading anything: the response had not started.


@pytest.fixture
def priced(relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path) -> Iterator[tuple[RunningServer, Admin]]:
    relay = _relay(relay_factory, fake, tmp_path / "data", prices=STEP_PRICES)
    admin = Admin(relay)
    yield relay, admin
    admin.close()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_proxy_request_abandoned_before_the_response_is_booked(priced: tuple[RunningServer, Admin], fake: FakeUpstream, stream: bool) -> None:
    relay, admin = priced
    key_id, key = admin.create_key(f"abandon-proxy-{stream}")
    fake.enqueue(Reply(content="an answer nobody waits for", delay=5.0))
    _send_and_abandon(relay, key, {"model": "fake-model", "messages": MESSAGES, "max_tokens": 100, "stream": stream}, lambda: fake.wait_for_requests(1))
    [row] = admin.usage_rows(key_id, count=1)
    assert row["status"] == 499 and row["error_code"] == "client_disconnected"
    assert row["prompt_tokens"] > 0 and row["cost_usd"] > 0 and row["estimated"] is True
    if not stream:
        # A non-streamed upstream call writes its whole answer anyway: the completion assumed at admission.
        assert row["completion_tokens"] == 100


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_agent_run_abandoned_before_the_response_books_every_model_call(priced: tuple[RunningServer, Admin], fake: FakeUpstream, stream: bool) -> None:
    relay, admin = priced
    key_id, key = admin.create_key(f"abandon-agent-{stream}")
    fake.enqueue(
        Reply(tool_calls=[{"name": "current_time", "arguments": {}}], usage={"prompt_tokens": 3000, "completion_tokens": 20, "total_tokens": 3020}),
        Reply(content="an answer nobody waits for", delay=5.0),
    )
    body = {"model": "agent/fake-model", "messages": MESSAGES, "max_tokens": 100, "stream": stream}
    if stream:
        # A streamed run starts its response with the first step; abandon it during the first call.
        fake.reset()
        fake.enqueue(Reply(content="an answer nobody waits for", delay=5.0))
        _send_and_abandon(relay, key, body, lambda: fake.wait_for_requests(1))
        [row] = admin.usage_rows(key_id, count=1)
        assert row["status"] == 499 and row["mode"] == "agent"
        assert row["prompt_tokens"] > 0 and row["cost_usd"] > 0  # the prompt of the call in flight
        return
    _send_and_abandon(relay, key, body, lambda: fake.wait_for_requests(2))
    [row] = admin.usage_rows(key_id, count=1)
    assert row["status"] == 499 and row["error_code"] == "client_disconnected" and row["mode"] == "agent"
    # The first call's reported usage plus the prompt of the call in flight.
    assert row["prompt_tokens"] > 3000 and row["completion_tokens"] == 20
    assert row["cost_usd"] > 0.0302
