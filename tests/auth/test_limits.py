"""Per-key limits over real HTTP: RPM, TPM, parallel slots, budgets, the cost cap, per-address limits."""

from __future__ import annotations

import re
import threading
import time

import httpx
import openai
import pytest

from fakes.admin import Admin
from fakes.clients import sdk
from fakes.relays import COST_CAP_USD
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply, word_count
from toolrelay.app.auth.durations import go_duration

MESSAGES = [{"role": "user", "content": "hello there"}]
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


def chat(relay: RunningServer, key: str | None, **body: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(relay.url("/v1/chat/completions"), json={"model": "fake-model", "messages": MESSAGES, **body}, headers=headers, timeout=30.0)


def test_go_duration_format() -> None:
    assert go_duration(0) == "0s"
    assert go_duration(20) == "20ms"
    assert go_duration(999.2) == "1000ms"
    assert go_duration(1000) == "1s"
    assert go_duration(1500) == "1.5s"
    assert go_duration(59_001) == "59.001s"
    assert go_duration(60_000) == "1m0s"
    assert go_duration(360_000) == "6m0s"
    assert go_duration(3_723_500) == "1h2m3.5s"


def test_rpm_headers_and_rate_limit_error(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("rpm", rpm=3)
    remaining = []
    for _ in range(3):
        response = chat(auth_relay, key)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(response.headers["x-ratelimit-remaining-requests"])
        reset = response.headers["x-ratelimit-reset-requests"]
        assert GO_DURATION.match(reset), reset
        assert "x-ratelimit-limit-tokens" not in response.headers  # no TPM limit on this key
    assert remaining == ["2", "1", "0"]
    with sdk(auth_relay, key) as client, pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="fake-model", messages=MESSAGES)
    err = info.value
    assert err.status_code == 429 and err.code == "rate_limit_exceeded" and err.type == "rate_limit_error"
    assert "Limit 3, Used 3, Requested 1" in err.message
    headers = err.response.headers
    retry_ms = int(headers["retry-after-ms"])
    assert 55_000 < retry_ms <= 60_000
    assert int(headers["retry-after"]) == -(-retry_ms // 1000)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert GO_DURATION.match(headers["x-ratelimit-reset-requests"])
    assert len(fake.chat_requests) == 3  # the refused request never reached the upstream


def test_rpm_counts_streams_too(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("rpm-stream", rpm=2)
    with sdk(auth_relay, key) as client:
        for _ in range(2):
            chunks = list(client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True))
            assert chunks
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)


def test_stream_carries_rate_headers(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("stream-headers", rpm=10, tpm=5000)
    with httpx.stream(
        "POST",
        auth_relay.url("/v1/chat/completions"),
        json={"model": "fake-model", "messages": MESSAGES, "stream": True},
        headers={"authorization": f"Bearer {key}"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-requests"] == "10"
        assert response.headers["x-ratelimit-remaining-requests"] == "9"
        assert response.headers["x-ratelimit-limit-tokens"] == "5000"
        assert int(response.headers["x-ratelimit-remaining-tokens"]) < 5000
        body = response.read()
    assert body.endswith(b"data: [DONE]\n\n")


def test_tpm_reserves_the_estimate_and_books_real_usage(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("tpm", tpm=300)
    tokens = auth_relay.services.tokens
    prompt_estimate = tokens.count_messages(MESSAGES, "fake-model")
    first = chat(auth_relay, key, max_tokens=100)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "300"
    # Before the call: prompt (tiktoken) + max_tokens is reserved.
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == 300 - (prompt_estimate + 100)
    used = first.json()["usage"]["total_tokens"]
    assert used == word_count("hello there") + word_count("Hello from the fake upstream.")
    # After it: the reservation became the real usage, so the next request sees it.
    second = chat(auth_relay, key, max_tokens=100)
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 300 - used - (prompt_estimate + 100)
    # This one does not fit in what is left of the minute.
    third = chat(auth_relay, key, max_tokens=300 - 2 * used - prompt_estimate + 1)
    assert third.status_code == 429, third.text
    error = third.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "tokens per min (TPM)" in error["message"]
    assert int(third.headers["retry-after-ms"]) > 50_000
    assert third.headers["x-ratelimit-limit-tokens"] == "300"
    # One that would fit after one more correction still gets in.
    fits = chat(auth_relay, key, max_tokens=300 - 2 * used - prompt_estimate)
    assert fits.status_code == 200, fits.text


def test_tpm_request_larger_than_the_limit_is_not_retried(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("tpm-small", tpm=50)
    with sdk(auth_relay, key, max_retries=2) as client, pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="fake-model", messages=MESSAGES, max_tokens=1000)
    assert info.value.response.headers["x-should-retry"] == "false"
    assert "Request too large" in info.value.message
    assert fake.chat_requests == []


def _hold(relay: RunningServer, key: str, results: list[int], **body: object) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(chat(relay, key, **body).status_code))
    thread.start()
    return thread


def test_parallel_limit_holds_a_slot_for_a_slow_reply(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("parallel", max_parallel=1)
    fake.enqueue(Reply(content="slow", delay=1.0))
    results: list[int] = []
    thread = _hold(auth_relay, key, results)
    fake.wait_for_requests(1)
    refused = chat(auth_relay, key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "parallel" in refused.json()["error"]["message"]
    assert refused.headers["retry-after"] and refused.headers["retry-after-ms"]
    thread.join(10)
    assert results == [200]
    assert chat(auth_relay, key).status_code == 200  # the slot came back


def test_parallel_slot_is_held_until_the_stream_ends(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("parallel-stream", max_parallel=1)
    fake.enqueue(Reply(content="one two three four five six", chunk_delay=0.15))
    with sdk(auth_relay, key) as client:
        stream = client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
        # Headers are sent, the stream is running: the slot is still taken.
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="fake-model", messages=MESSAGES)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text.strip() == "one two three four five six"
        deadline = time.monotonic() + 5
        while True:  # the slot frees when the server's stream generator finishes, just after [DONE]
            response = chat(auth_relay, key)
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert response.status_code == 200


def test_parallel_slot_is_freed_when_the_client_goes_away(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("parallel-abort", max_parallel=1)
    fake.enqueue(Reply(content="one two three four five six seven eight", chunk_delay=0.3))
    with httpx.stream(
        "POST",
        auth_relay.url("/v1/chat/completions"),
        json={"model": "fake-model", "messages": MESSAGES, "stream": True},
        headers={"authorization": f"Bearer {key}"},
    ) as response:
        next(response.iter_bytes())
    deadline = time.monotonic() + 5
    while chat(auth_relay, key).status_code != 200:
        assert time.monotonic() < deadline, "the slot of an abandoned stream was not freed"
        time.sleep(0.1)


def test_budget_exhaustion_is_insufficient_quota_without_retry(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("budget", budget_usd=20, budget_period="daily")
    with sdk(auth_relay, key, max_retries=2) as client:
        # fake-tools costs $1 per token: the worst case (a ~10-token prompt + 5) fits the $20, so it
        # is admitted; the upstream then reports 25 tokens, and the spend passes the budget.
        fake.enqueue(Reply(content="five words of an answer", usage={"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}))
        reply = client.chat.completions.create(model="fake-tools", messages=MESSAGES, max_tokens=5)
        assert reply.usage.total_tokens == 25
        deadline = time.monotonic() + 5
        while admin.http.get(f"/admin/keys/{key_id}").json()["spent_usd"] < 25 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert admin.http.get(f"/admin/keys/{key_id}").json()["spent_usd"] == pytest.approx(25.0)
        sent = len(fake.chat_requests)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="fake-model", messages=MESSAGES)
    err = info.value
    assert err.code == "insufficient_quota" and err.type == "insufficient_quota"
    assert err.response.headers["x-should-retry"] == "false"
    assert "quota" in err.message and "$20.00" in err.message
    assert len(fake.chat_requests) == sent  # refused up front, and the SDK did not retry


def test_budget_survives_a_restart(make_relay, fake: FakeUpstream, tmp_path) -> None:
    relay = make_relay(data_dir=tmp_path / "shared")
    admin = Admin(relay)
    try:
        _, key = admin.create_key("persisted", budget_usd=20, budget_period="monthly")
        # Admitted on its worst case (under $20), it really costs $25 (fake-tools: $1 per token).
        fake.enqueue(Reply(usage={"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}))
        assert chat(relay, key, model="fake-tools", max_tokens=5).status_code == 200
    finally:
        admin.close()
    relay.stop()  # a clean shutdown writes the ledger
    again = make_relay(data_dir=tmp_path / "shared")
    response = chat(again, key)
    assert response.status_code == 429 and response.json()["error"]["code"] == "insufficient_quota"


def test_per_request_cost_cap(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("capped")
    # fake-tools costs $1 per token; the cap is $1000.
    response = chat(auth_relay, key, model="fake-tools", max_tokens=5000)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "cost_cap_exceeded" and error["param"] == "max_tokens"
    assert f"${COST_CAP_USD:.4f}" in error["message"] and "at most" in error["message"]
    response = chat(auth_relay, key, model="fake-tools", max_completion_tokens=5000)
    assert response.json()["error"]["param"] == "max_completion_tokens"
    long_prompt = [{"role": "user", "content": "word " * 1200}]
    response = chat(auth_relay, key, model="fake-tools", messages=long_prompt, max_tokens=1)
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
    assert fake.chat_requests == []
    assert chat(auth_relay, key, model="fake-tools", max_tokens=10).status_code == 200


def test_per_address_limit_when_auth_is_off(make_relay, fake: FakeUpstream) -> None:
    relay = make_relay(auth={}, limits={"ip_rpm": 2, "ip_max_parallel": 5})
    assert relay.services.gate.enabled is False
    statuses = [chat(relay, None).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    response = chat(relay, None)
    assert response.headers["x-ratelimit-limit-requests"] == "2"
    assert "address 127.0.0.1" in response.json()["error"]["message"]
