"""Upstream failures become the right status (before a stream) or one error event (during one); the server keeps serving."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from fakes.sse import data_events
from fakes.upstream import FakeUpstream, Reply

from .helpers import USER, assert_openai_error, assert_still_serving, chat_body, content_of, stream_raw

LONG = " ".join(f"word{i}" for i in range(40))


def assert_single_error_event(raw: bytes, *, code: Any = None) -> dict[str, Any]:
    """A stream that started and then failed: chunks, then exactly one error event, no [DONE]."""
    events = data_events(raw)
    assert b"[DONE]" not in raw, raw[-300:]
    errors = [e for e in events if "error" in (e.json or {})]
    assert len(errors) == 1, raw[-500:]
    assert events[-1] is errors[0], "the error event must be the last event"
    err = errors[0].json["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code, err
    assert raw.endswith(b"\n\n")
    return err


# --------------------------------------------------------------------------- HTTP errors from the upstream


def test_upstream_429_keeps_status_and_retry_headers(client: openai.OpenAI, fake: FakeUpstream) -> None:
    headers = {"retry-after": "7", "retry-after-ms": "7000", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "7s"}
    fake.enqueue(
        Reply(
            status=429,
            headers=headers,
            error={"error": {"message": "Rate limit reached for requests", "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
        )
    )
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="fake-model", messages=USER)
    err = caught.value
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "7"
    assert err.response.headers["retry-after-ms"] == "7000"
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.response.headers["x-ratelimit-reset-requests"] == "7s"
    assert err.response.headers["x-request-id"].startswith("req_")
    assert err.code == "rate_limit_exceeded"
    assert "Rate limit reached" in err.message
    assert_still_serving(client, fake)


def test_upstream_429_on_streaming_request_fails_before_the_stream(client: openai.OpenAI, http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(status=429, headers={"retry-after": "2"}))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="fake-model", messages=USER, stream=True)
    assert caught.value.response.headers["retry-after"] == "2"
    fake.enqueue(Reply(status=429))
    response, raw = stream_raw(http, chat_body(stream=True))
    assert_openai_error(response, 429, type="rate_limit_error")
    assert response.headers["retry-after"]  # a default when the upstream gave none
    assert b"data:" not in raw
    assert_still_serving(client, fake)


def test_upstream_500_is_internal_server_error(client: openai.OpenAI, http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(status=500))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="fake-model", messages=USER)
    assert caught.value.status_code == 500
    fake.enqueue(Reply(status=500))
    response, raw = stream_raw(http, chat_body(stream=True))
    assert_openai_error(response, 500, type="server_error")
    assert b"data:" not in raw
    assert_still_serving(client, fake)


def test_upstream_503_keeps_retry_after(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(status=503, headers={"retry-after": "3"}))
    response = http.post("/v1/chat/completions", json=chat_body())
    assert_openai_error(response, 503)
    assert response.headers["retry-after"] == "3"
    assert_still_serving(client, fake)


def test_upstream_400_keeps_param_and_code(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(
        Reply(
            status=400,
            error={
                "error": {
                    "message": "Unsupported parameter: 'parallel_tool_calls' is not supported with this model.",
                    "type": "invalid_request_error",
                    "param": "parallel_tool_calls",
                    "code": "unsupported_parameter",
                }
            },
        )
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fake-model", messages=USER)
    assert caught.value.param == "parallel_tool_calls"
    assert caught.value.code == "unsupported_parameter"
    assert "parallel_tool_calls" in caught.value.message


def test_upstream_auth_failure_is_not_blamed_on_the_client(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(status=401))
    response = http.post("/v1/chat/completions", json=chat_body())
    err = assert_openai_error(response, 502, code="upstream_auth_error")
    assert "sk-upstream-secret" not in response.text
    assert err["type"] != "authentication_error"
    assert_still_serving(client, fake)


def test_upstream_404_is_model_not_found(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(status=404, error={"error": {"message": "The model does not exist", "type": "invalid_request_error", "param": None, "code": None}}))
    response = http.post("/v1/chat/completions", json=chat_body())
    assert_openai_error(response, 404, code="model_not_found")


def test_upstream_error_with_non_json_body(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(status=502, raw_body=b"<html>Bad Gateway</html>", content_type="text/html"))
    response = http.post("/v1/chat/completions", json=chat_body())
    err = assert_openai_error(response, 502)
    assert "<html>" not in err["message"]
    assert_still_serving(client, fake)


# --------------------------------------------------------------------------- timeouts and connection failures


def test_upstream_timeout_is_504_and_the_upstream_call_is_dropped(client: openai.OpenAI, http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(delay=8))
    response = http.post("/v1/chat/completions", json=chat_body("slow-model"))
    assert_openai_error(response, 504, code="upstream_timeout")
    assert fake.last_body["model"] == "slow-model"
    assert fake.wait_for_disconnect(1, timeout=5), "the relay kept the timed-out upstream request open"
    assert_still_serving(client, fake)


def test_upstream_timeout_streaming_before_first_byte(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(delay=8))
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="slow-model", messages=USER, stream=True)
    assert caught.value.status_code == 504
    assert_still_serving(client, fake)


def test_upstream_stalls_mid_stream(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream) -> None:
    # Three chunks arrive, then the upstream goes quiet for longer than the read timeout.
    events = [
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        },
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "partial "}, "finish_reason": None}],
        },
        b": still thinking\n\n",
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "never"}, "finish_reason": "stop"}],
        },
    ]
    # A slow but steady stream outlives the 1.5 s timeout in total: the timeout is per read...
    fake.enqueue(Reply(chunks=events, chunk_delay=0.6))
    response, raw = stream_raw(http, chat_body("slow-model", stream=True))
    assert response.status_code == 200
    assert raw.endswith(b"data: [DONE]\n\n")

    # ...but a silence longer than it ends the stream with a timeout error event.
    fake.enqueue(Reply(chunks=events[:2] + events[3:], chunk_delay=4))
    response, raw = stream_raw(http, chat_body("slow-model", stream=True))
    assert response.status_code == 200
    assert_single_error_event(raw, code="upstream_timeout")
    assert content_of([e.json for e in data_events(raw) if "error" not in e.json]) == ""
    assert fake.wait_for_disconnect(1, timeout=8)
    assert_still_serving(client, fake)


def test_connection_refused_is_502(client: openai.OpenAI, http: httpx.Client, fake: FakeUpstream) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="dead-model", messages=USER)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_connection_error"
    response, raw = stream_raw(http, chat_body("dead-model", stream=True))
    assert_openai_error(response, 502, code="upstream_connection_error")
    assert b"data:" not in raw
    assert_still_serving(client, fake)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_that_drops_the_connection_is_not_sent_the_request_twice(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream, stream: bool) -> None:
    fake.enqueue(Reply(drop=True), Reply(content="second copy"))
    response, _ = stream_raw(http, chat_body(stream=stream))
    assert len(fake.chat_requests) == 1, "the upstream received the same request twice"
    assert_openai_error(response, 502)


def test_upstream_that_drops_the_connection_does_not_break_the_server(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(drop=True), Reply(drop=True), Reply(drop=True))
    response, _ = stream_raw(http, chat_body())
    assert_openai_error(response, 502, code="upstream_connection_error")
    fake.reset()
    assert_still_serving(client, fake)


# --------------------------------------------------------------------------- broken streams


def test_reset_mid_stream_gives_one_error_event_and_no_done(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content=LONG, break_after=4))
    response, raw = stream_raw(http, chat_body(stream=True, stream_options={"include_usage": True}))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    err = assert_single_error_event(raw)
    assert err["type"] in ("upstream_error", "server_error")
    chunks = [e.json for e in data_events(raw)[:-1]]
    assert chunks and all("choices" in c for c in chunks)
    # No usage chunk for an interrupted stream.
    assert all(c.get("usage") is None for c in chunks)
    assert fake.last_request.outcome == "aborted"
    assert_still_serving(client, fake)


def test_reset_mid_stream_raises_in_the_sdk(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content=LONG, break_after=3))
    received = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="fake-model", messages=USER, stream=True):
            received.append(chunk)
    assert received, "the chunks before the failure reach the client"
    assert_still_serving(client, fake)


def test_upstream_error_event_mid_stream(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream) -> None:
    envelope = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    fake.enqueue(
        Reply(
            chunks=[
                {**envelope, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]},
                {"error": {"message": "The server is overloaded", "type": "server_error", "param": None, "code": "overloaded"}},
            ]
        )
    )
    response, raw = stream_raw(http, chat_body(stream=True))
    assert response.status_code == 200
    err = assert_single_error_event(raw)
    assert err["message"] == "The server is overloaded"
    assert_still_serving(client, fake)


def test_stream_that_ends_without_finish_or_done(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream) -> None:
    envelope = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    fake.enqueue(
        Reply(chunks=[{**envelope, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "cut"}, "finish_reason": None}]}], send_done=False)
    )
    response, raw = stream_raw(http, chat_body(stream=True))
    assert response.status_code == 200
    assert_single_error_event(raw)
    # An SSE answer to a non-streaming request is not a chat.completion body: 502, not a half answer.
    fake.enqueue(Reply(content="streamed anyway", stream=True))
    response = http.post("/v1/chat/completions", json=chat_body())
    assert_openai_error(response, 502, code="bad_upstream_response")
    assert_still_serving(client, fake)


def test_garbage_event_mid_stream(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream) -> None:
    envelope = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    fake.enqueue(
        Reply(
            chunks=[
                {**envelope, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": None}]},
                b"data: {this is not json\n\n",
            ]
        )
    )
    response, raw = stream_raw(http, chat_body(stream=True))
    assert response.status_code == 200
    assert_single_error_event(raw, code="bad_upstream_response")
    assert_still_serving(client, fake)


def test_garbage_first_event_is_502_before_the_stream(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(chunks=[b"data: <html>oops</html>\n\n"]))
    response, raw = stream_raw(http, chat_body(stream=True))
    assert_openai_error(response, 502, code="bad_upstream_response")
    assert b"data:" not in raw
    assert_still_serving(client, fake)


@pytest.mark.parametrize(
    "raw_body",
    [b"this is not json", b'{"no": "choices"}', b"[]", b'{"choices": "nope"}', b""],
    ids=["not-json", "no-choices", "array", "choices-not-list", "empty"],
)
def test_malformed_upstream_body_is_502(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream, raw_body: bytes) -> None:
    fake.enqueue(Reply(raw_body=raw_body))
    response = http.post("/v1/chat/completions", json=chat_body())
    assert_openai_error(response, 502, code="bad_upstream_response")
    assert_still_serving(client, fake)


# --------------------------------------------------------------------------- client disconnects


def test_client_disconnect_mid_stream_cancels_the_upstream_request(relay: Any, fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.enqueue(Reply(content=LONG, chunk_delay=0.25))
    with httpx.Client(timeout=30) as http, http.stream("POST", relay.url("/v1/chat/completions"), json=chat_body(stream=True)) as response:
        assert response.status_code == 200
        seen = b""
        for piece in response.iter_raw():
            seen += piece
            if seen.count(b"data: ") >= 2:
                break
    # The client is gone; the relay must drop its upstream request well before the answer would end (~10 s).
    started = time.monotonic()
    assert fake.wait_for_disconnect(1, timeout=5), "the upstream stream was not cancelled after the client disconnected"
    assert time.monotonic() - started < 5
    rec = fake.last_request
    assert rec.outcome == "disconnected"
    assert rec.chunks_sent < 40
    assert_still_serving(client, fake)


async def test_async_client_closing_stream_cancels_upstream(aclient: openai.AsyncOpenAI, fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.enqueue(Reply(content=LONG, chunk_delay=0.25))
    stream = await aclient.chat.completions.create(model="fake-model", messages=USER, stream=True)
    count = 0
    async for _ in stream:
        count += 1
        if count == 2:
            break
    await stream.close()
    assert fake.wait_for_disconnect(1, timeout=5)
    assert fake.last_request.outcome == "disconnected"


def test_client_disconnect_non_streaming_cancels_the_upstream_request(relay: Any, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="late", delay=6))
    with httpx.Client(timeout=httpx.Timeout(30, read=0.7)) as http, pytest.raises(httpx.ReadTimeout):
        http.post(relay.url("/v1/chat/completions"), json=chat_body())
    assert fake.wait_for_disconnect(1, timeout=3), "the upstream request outlived its client"


def test_client_disconnect_before_first_chunk_cancels_the_upstream_request(relay: Any, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="late", delay=6))
    with (
        httpx.Client(timeout=httpx.Timeout(30, read=0.7)) as http,
        pytest.raises(httpx.ReadTimeout),
        http.stream("POST", relay.url("/v1/chat/completions"), json=chat_body(stream=True)) as response,
    ):
        response.read()
    assert fake.wait_for_disconnect(1, timeout=3), "the upstream request outlived its client"


# --------------------------------------------------------------------------- usage estimation


def test_usage_estimated_when_upstream_sends_none(client: openai.OpenAI, fake: FakeUpstream, relay: Any) -> None:
    from toolrelay.app.tokens import TokenCounter

    counter = TokenCounter()
    content = "The quick brown fox jumps over the lazy dog, twice over."
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me a pangram please."}]
    fake.enqueue(Reply(content=content, send_usage=False))
    completion = client.chat.completions.create(model="fake-model", messages=messages)
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == counter.count_text(content, "fake-model")
    assert 10 <= usage.prompt_tokens <= 40
    assert usage.prompt_tokens == counter.count_messages(messages, "fake-model")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_usage_estimated_in_stream_when_upstream_sends_none(client: openai.OpenAI, fake: FakeUpstream) -> None:
    content = "one two three four five six seven"
    fake.enqueue(Reply(content=content, send_usage=False))
    chunks = list(client.chat.completions.create(model="fake-model", messages=USER, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens >= 7
    assert usage.prompt_tokens >= 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_usage_estimated_for_tool_calls(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"name": "lookup", "arguments": {"query": "weather in Paris tomorrow"}}], send_usage=False))
    completion = client.chat.completions.create(model="fake-tools", messages=USER)
    assert completion.usage is not None and completion.usage.completion_tokens >= 5
