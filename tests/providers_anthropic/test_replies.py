"""How Anthropic's replies reach an OpenAI client: thinking, usage with cache tokens, stop reasons, errors."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from fakes.anthropic import FakeAnthropic, MessagesReply
from fakes.clients import rest
from fakes.server import RunningServer

from .conftest import MODEL

ASK: Any = [{"role": "user", "content": "Think first."}]


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_arrives_as_reasoning_content_and_reasoning_effort_sets_a_budget(claude: FakeAnthropic, cclient: openai.OpenAI, stream: bool) -> None:
    claude.enqueue(MessagesReply(blocks=[{"type": "thinking", "thinking": "Let me see. Two plus two."}, {"type": "text", "text": "4"}]))
    if stream:
        chunks = list(cclient.chat.completions.create(model=MODEL, messages=ASK, reasoning_effort="low", stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
        also = "".join(getattr(d, "reasoning", None) or "" for d in deltas)
        content = "".join(d.content or "" for d in deltas)
    else:
        message: Any = cclient.chat.completions.create(model=MODEL, messages=ASK, reasoning_effort="low").choices[0].message
        reasoning, also, content = message.reasoning_content, message.reasoning, message.content
    assert (reasoning, also, content) == ("Let me see. Two plus two.", "Let me see. Two plus two.", "4")
    body = claude.last_body
    # No client cap: the answer keeps its default 4096 and the thinking budget comes on top.
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 4096 + 2048


def test_a_client_cap_covers_thinking_too(claude: FakeAnthropic, cclient: openai.OpenAI) -> None:
    cclient.chat.completions.create(model=MODEL, messages=ASK, reasoning_effort="high", max_completion_tokens=5000, temperature=0.3)
    body = claude.last_body
    assert (body["max_tokens"], body["thinking"]["budget_tokens"]) == (5000, 4999)
    assert "temperature" not in body  # thinking requires the default temperature
    with pytest.raises(openai.BadRequestError) as refused:
        cclient.chat.completions.create(model=MODEL, messages=ASK, reasoning_effort="low", max_completion_tokens=500)
    assert refused.value.body["param"] == "max_tokens"  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True])
def test_cache_reads_and_writes_count_as_prompt_tokens_and_reads_as_cached(claude: FakeAnthropic, cclient: openai.OpenAI, stream: bool) -> None:
    usage = {"input_tokens": 10, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200, "output_tokens": 7}
    claude.enqueue(MessagesReply(usage=usage))
    if stream:
        chunks = list(cclient.chat.completions.create(model=MODEL, messages=ASK, stream=True, stream_options={"include_usage": True}))
        got = chunks[-1].usage
    else:
        got = cclient.chat.completions.create(model=MODEL, messages=ASK).usage
    assert got is not None
    assert (got.prompt_tokens, got.completion_tokens, got.total_tokens) == (1210, 7, 1217)
    assert got.prompt_tokens_details is not None and got.prompt_tokens_details.cached_tokens == 1000


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter"), ("pause_turn", "stop")],
)
@pytest.mark.parametrize("stream", [False, True])
def test_stop_reasons(claude: FakeAnthropic, cclient: openai.OpenAI, stop_reason: str, finish_reason: str, stream: bool) -> None:
    claude.enqueue(MessagesReply(stop_reason=stop_reason))
    if stream:
        chunks = list(cclient.chat.completions.create(model=MODEL, messages=ASK, stop=["END"], stream=True))
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        finishes = [cclient.chat.completions.create(model=MODEL, messages=ASK, stop="END").choices[0].finish_reason]
    assert finishes == [finish_reason]
    assert claude.last_body["stop_sequences"] == ["END"]


@pytest.mark.parametrize(
    ("status", "error_type", "message", "expected_status", "expected_code"),
    [
        (400, "invalid_request_error", "messages.0: bad", 400, None),
        (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum", 400, "context_length_exceeded"),
        (401, "authentication_error", "invalid x-api-key", 502, "upstream_auth_error"),
        (403, "permission_error", "no access", 502, "upstream_auth_error"),
        (404, "not_found_error", "model: claude-nope", 404, "model_not_found"),
        (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", 413, "request_too_large"),
        (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit", 429, "rate_limit_exceeded"),
        (500, "api_error", "Internal server error", 500, None),
        (529, "overloaded_error", "Overloaded", 503, "upstream_overloaded"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_errors_are_openai_shaped_with_the_right_status(
    claude: FakeAnthropic,
    claude_relay: RunningServer,
    status: int,
    error_type: str,
    message: str,
    expected_status: int,
    expected_code: str | None,
    stream: bool,
) -> None:
    headers = {"retry-after": "7"} if status == 429 else {}
    claude.enqueue(MessagesReply(status=status, error_type=error_type, message=message, headers=headers))
    with rest(claude_relay) as http:
        response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK, "stream": stream})
    assert response.status_code == expected_status
    error = response.json()["error"]
    assert error["code"] == expected_code
    if expected_status < 500 and expected_code != "upstream_auth_error":
        assert error["message"] == message
    if status == 429:
        assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("7", "7000")
    if status == 529:
        assert response.headers["retry-after"] == "1"
        assert response.headers["x-should-retry"] == "true"


def test_overloaded_is_retried_by_the_openai_sdk(claude: FakeAnthropic, claude_relay: RunningServer) -> None:
    claude.enqueue(MessagesReply(status=529, error_type="overloaded_error", message="Overloaded"))
    with openai.OpenAI(base_url=claude_relay.base_url, api_key="sk-test", max_retries=1) as client:
        completion = client.chat.completions.create(model=MODEL, messages=ASK)
    assert completion.choices[0].message.content == "Hello from Claude."
    assert len(claude.calls) == 2


def test_an_error_event_mid_stream_ends_the_stream_with_an_error(claude: FakeAnthropic, cclient: openai.OpenAI) -> None:
    claude.enqueue(
        MessagesReply(blocks=[{"type": "text", "text": "one two three four five"}], error_after=4, error_type="overloaded_error", message="Overloaded")
    )
    got: list[str] = []
    with pytest.raises(openai.APIError, match="Overloaded"):
        for chunk in cclient.chat.completions.create(model=MODEL, messages=ASK, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert got == ["one ", "two "]


def test_a_stream_cut_before_its_end_is_an_error_not_a_short_answer(claude: FakeAnthropic, claude_relay: RunningServer) -> None:
    claude.enqueue(MessagesReply(blocks=[{"type": "text", "text": "one two three"}], cut_after=4))
    with rest(claude_relay) as http, http.stream("POST", "/v1/chat/completions", json={"model": MODEL, "messages": ASK, "stream": True}) as response:
        raw = response.read().decode()
    assert response.status_code == 200
    assert '"error"' in raw and "[DONE]" not in raw


def test_embeddings_and_legacy_completions_say_the_endpoint_is_missing(claude: FakeAnthropic, claude_relay: RunningServer) -> None:
    with rest(claude_relay) as http:
        embeddings = http.post("/v1/embeddings", json={"model": MODEL, "input": "hi"})
        legacy = http.post("/v1/completions", json={"model": MODEL, "prompt": "hi"})
    for response in (embeddings, legacy):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "unsupported_endpoint"
    assert claude.calls == []


def test_unsupported_parameters_are_refused_not_dropped(claude: FakeAnthropic, claude_relay: RunningServer) -> None:
    with rest(claude_relay) as http:
        response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK, "n": 2})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "n"
    assert claude.calls == []


def test_ready_reports_the_anthropic_upstream_reachable_with_its_key(claude: FakeAnthropic, claude_relay: RunningServer) -> None:
    with rest(claude_relay) as http:
        ready = http.get("/ready")
    assert isinstance(ready, httpx.Response)
    upstreams = ready.json().get("upstreams")
    assert upstreams is not None
    entry = upstreams["claude"] if isinstance(upstreams, dict) else next(u for u in upstreams if u.get("name") == "claude")
    assert entry["ok"] is True, entry
    assert claude.calls[-1].path == "/v1/models" and claude.calls[-1].headers["anthropic-version"] == "2023-06-01"
