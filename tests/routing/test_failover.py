"""Two deployments of one model over real HTTP with the official SDK: retries before the first byte, fallbacks, and what is never retried."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from fakes.clients import rest, sdk
from fakes.server import RunningServer, closed_port
from fakes.upstream import FakeUpstream, Reply
from fakes.waiting import wait_until

from .conftest import POOL

MESSAGES = [{"role": "user", "content": "hi"}]


def _chat(relay: RunningServer, **extra: object) -> tuple[openai.types.chat.ChatCompletion, httpx.Headers]:
    with sdk(relay) as client:
        raw = client.chat.completions.with_raw_response.create(model=POOL, messages=MESSAGES, **extra)  # type: ignore[arg-type]
        return raw.parse(), raw.headers


@pytest.mark.parametrize("status", [500, 503, 429, 502])
def test_an_error_status_goes_to_the_other_deployment(relay: RunningServer, ups: dict[str, FakeUpstream], status: int) -> None:
    ups["a"].enqueue(Reply(status=status, headers={"retry-after": "30"} if status == 429 else {}))
    completion, headers = _chat(relay)
    assert completion.model == POOL  # the id the client asked for
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert headers["x-toolrelay-deployment"] == "b" and headers["x-toolrelay-model"] == POOL
    assert [r.body["model"] for r in ups["a"].chat_requests] == ["m-a"]
    assert [r.body["model"] for r in ups["b"].chat_requests] == ["m-b"]


def test_a_429_rests_the_deployment_for_its_retry_after(relay: RunningServer, ups: dict[str, FakeUpstream]) -> None:
    ups["a"].enqueue(Reply(status=429, headers={"retry-after": "30"}))
    _chat(relay)
    _, headers = _chat(relay)
    assert headers["x-toolrelay-deployment"] == "b"
    assert len(ups["a"].chat_requests) == 1  # resting: not asked again
    assert len(ups["b"].chat_requests) == 2


def test_streaming_fails_over_before_the_first_byte(relay: RunningServer, ups: dict[str, FakeUpstream]) -> None:
    ups["a"].enqueue(Reply(status=500))
    with sdk(relay) as client, client.chat.completions.with_streaming_response.create(model=POOL, messages=MESSAGES, stream=True) as response:  # type: ignore[arg-type]
        assert response.headers["x-toolrelay-deployment"] == "b"
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the fake upstream."
    assert all(c.model == POOL for c in chunks)
    assert ups["b"].chat_requests[0].is_stream


def test_a_refused_connection_goes_to_the_other_deployment(start: Callable[..., RunningServer], ups: dict[str, FakeUpstream]) -> None:
    port, sock = closed_port()
    try:
        relay = start(a_url=f"http://127.0.0.1:{port}/v1")
        completion, headers = _chat(relay)
    finally:
        sock.close()
    assert headers["x-toolrelay-deployment"] == "b"
    assert completion.choices[0].message.content
    with rest(relay) as http:
        assert f'toolrelay_upstream_attempts_total{{model="{POOL}",deployment="a",outcome="error"}} 1' in http.get("/metrics").text


def test_every_deployment_down_the_fallback_model_answers(relay: RunningServer, ups: dict[str, FakeUpstream]) -> None:
    ups["a"].default_reply = Reply(status=500)
    ups["b"].default_reply = Reply(status=503)
    completion, headers = _chat(relay)
    assert completion.model == POOL
    assert headers["x-toolrelay-model"] == "backup-model" and headers["x-toolrelay-deployment"] == "fake"
    assert [r.body["model"] for r in ups["c"].chat_requests] == ["backup-model"]


def test_every_deployment_and_fallback_down_is_the_last_error(relay: RunningServer, ups: dict[str, FakeUpstream]) -> None:
    for up in ups.values():
        up.default_reply = Reply(status=500)
    with sdk(relay) as client, pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=POOL, messages=MESSAGES)  # type: ignore[arg-type]
    assert len(ups["a"].chat_requests) == len(ups["b"].chat_requests) == 1
    assert len(ups["c"].chat_requests) == 1


def test_a_request_too_large_goes_to_the_context_fallback_unsent(relay: RunningServer, ups: dict[str, FakeUpstream]) -> None:
    long = " ".join(["word"] * 3000)  # well past the 2000-token window
    with sdk(relay) as client:
        raw = client.chat.completions.with_raw_response.create(model=POOL, messages=[{"role": "user", "content": long}])
    assert raw.headers["x-toolrelay-model"] == "big-model"
    assert raw.parse().model == POOL
    assert ups["a"].chat_requests == [] and ups["b"].chat_requests == []
    assert [r.body["model"] for r in ups["c"].chat_requests] == ["big-model"]


def test_an_upstream_context_error_goes_to_the_context_fallback(relay: RunningServer, ups: dict[str, FakeUpstream]) -> None:
    ups["a"].enqueue(
        Reply(status=400, error={"error": {"message": "too long", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
    )
    _, headers = _chat(relay)
    assert headers["x-toolrelay-model"] == "big-model"
    assert ups["b"].chat_requests == []  # the same window: no point trying the sibling


def test_a_client_error_is_not_retried(relay: RunningServer, ups: dict[str, FakeUpstream]) -> None:
    ups["a"].enqueue(Reply(status=400))
    with sdk(relay) as client, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=POOL, messages=MESSAGES)  # type: ignore[arg-type]
    assert ups["b"].chat_requests == [] and ups["c"].chat_requests == []


def test_a_stream_that_started_is_never_retried(relay: RunningServer, ups: dict[str, FakeUpstream]) -> None:
    ups["a"].enqueue(Reply(content="one two three four five six", break_after=3))
    with sdk(relay) as client:
        stream = client.chat.completions.create(model=POOL, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        got: list[str] = []
        with pytest.raises(openai.APIError):
            for chunk in stream:
                got.extend(c.delta.content or "" for c in chunk.choices)
    assert got  # the client had bytes from a
    assert ups["b"].chat_requests == [] and ups["c"].chat_requests == []


def test_a_connection_dropped_after_sending_is_not_retried(relay: RunningServer, ups: dict[str, FakeUpstream]) -> None:
    ups["a"].enqueue(Reply(drop=True))
    with sdk(relay) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=POOL, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    assert len(ups["a"].chat_requests) == 1
    assert ups["b"].chat_requests == [] and ups["c"].chat_requests == []


def test_retry_after_send_lets_the_operator_retry_dropped_connections(start: Callable[..., RunningServer], ups: dict[str, FakeUpstream]) -> None:
    relay = start(routing={"retry_after_send": True})
    ups["a"].enqueue(Reply(drop=True))
    _, headers = _chat(relay)
    assert headers["x-toolrelay-deployment"] == "b"


def test_embeddings_fail_over_too(relay: RunningServer, ups: dict[str, FakeUpstream]) -> None:
    ups["a"].enqueue(Reply(status=500))
    with sdk(relay) as client:
        raw = client.embeddings.with_raw_response.create(model=POOL, input="hello")
    assert raw.headers["x-toolrelay-deployment"] == "b"
    assert len(raw.parse().data) == 1
    assert [r.body["model"] for r in ups["b"].requests_to("embeddings")] == ["m-b"]


def test_responses_api_fails_over_too(relay: RunningServer, ups: dict[str, FakeUpstream]) -> None:
    ups["a"].enqueue(Reply(status=500))
    with sdk(relay) as client:
        raw = client.responses.with_raw_response.create(model=POOL, input="hi", store=False)
    assert raw.headers["x-toolrelay-deployment"] == "b"
    assert raw.parse().output_text == "Hello from the fake upstream."


def test_attempts_are_counted_and_the_ledger_names_the_deployment_that_answered(relay: RunningServer, ups: dict[str, FakeUpstream]) -> None:
    ups["a"].enqueue(Reply(status=500))
    _chat(relay)
    with rest(relay) as http:
        metrics = http.get("/metrics").text
    assert f'toolrelay_upstream_attempts_total{{model="{POOL}",deployment="a",outcome="error"}} 1' in metrics
    assert f'toolrelay_upstream_attempts_total{{model="{POOL}",deployment="b",outcome="ok"}} 1' in metrics
    assert f'toolrelay_deployment_state{{model="{POOL}",deployment="a"}} 0' in metrics
    usage_db = Path(relay.settings.server.data_dir) / "usage.db"

    def rows() -> list[tuple[str, str]]:
        if not usage_db.exists():
            return []
        with sqlite3.connect(usage_db) as db:
            return db.execute("SELECT model, upstream FROM usage").fetchall()

    assert wait_until(rows, what="the ledger row") == [(POOL, "b/b")]  # <upstream>/<deployment>


def test_legacy_completions_fail_over_too(relay: RunningServer, ups: dict[str, FakeUpstream]) -> None:
    ups["a"].enqueue(Reply(status=503))
    with sdk(relay) as client:
        raw = client.completions.with_raw_response.create(model=POOL, prompt="Say hi")
    assert raw.headers["x-toolrelay-deployment"] == "b"
    assert raw.parse().model == POOL
    assert [r.body["model"] for r in ups["b"].requests_to("completions")] == ["m-b"]


def test_agent_model_calls_fail_over_too(start: Callable[..., RunningServer], ups: dict[str, FakeUpstream]) -> None:
    relay = start(agent={"builtin_tools": ["current_time"]})
    ups["a"].enqueue(Reply(status=500))
    with sdk(relay) as client:
        completion = client.chat.completions.create(model=f"agent/{POOL}", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert len(ups["a"].chat_requests) == 1
    assert [r.body["model"] for r in ups["b"].chat_requests] == ["m-b"]
