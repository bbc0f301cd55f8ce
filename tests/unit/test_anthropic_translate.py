"""The Anthropic translation cores, over plain values: chat body -> Messages body, Messages replies -> events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolrelay.app.accumulate import CompletionAccumulator
from toolrelay.app.auth.pricing import PriceTable
from toolrelay.app.auth.settings import PricingSettings
from toolrelay.app.errors import OpenAIError
from toolrelay.app.events import Failure, KeepAlive, UsageReport
from toolrelay.app.providers.anthropic_reply import MessagesStreamReader, chat_usage, events_from_message, map_anthropic_error
from toolrelay.app.providers.anthropic_request import messages_request


def request(**fields: Any) -> dict[str, Any]:
    return messages_request({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}], **fields}, default_max_tokens=4096)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"max_tokens": 4096}),
        ({"max_tokens": 10}, {"max_tokens": 10}),
        ({"max_completion_tokens": 20, "max_tokens": 10}, {"max_tokens": 20}),
        ({"temperature": 1.7}, {"temperature": 1.0}),
        ({"temperature": 0.2, "top_p": 0.9}, {"temperature": 0.2, "top_p": 0.9}),
        ({"stop": "X"}, {"stop_sequences": ["X"]}),
        ({"stop": ["X", "Y"]}, {"stop_sequences": ["X", "Y"]}),
        ({"user": "u-1"}, {"metadata": {"user_id": "u-1"}}),
        ({"stream": True}, {"stream": True}),
        ({"reasoning_effort": "minimal"}, {"max_tokens": 4096 + 1024, "thinking": {"type": "enabled", "budget_tokens": 1024}}),
        ({"reasoning_effort": "medium"}, {"max_tokens": 4096 + 8192, "thinking": {"type": "enabled", "budget_tokens": 8192}}),
        ({"reasoning_effort": "high", "max_tokens": 3000}, {"max_tokens": 3000, "thinking": {"type": "enabled", "budget_tokens": 2999}}),
        ({"reasoning_effort": "none"}, {}),
        ({"seed": 3, "frequency_penalty": 0.5, "stream_options": {"include_usage": True}}, {}),
        ({"response_format": {"type": "text"}}, {}),
    ],
)
def test_request_fields(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    body = request(**fields)
    assert {k: v for k, v in body.items() if k not in ("model", "messages")} == {"max_tokens": 4096, **expected}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"reasoning_effort": "low", "max_tokens": 1000}, "max_tokens"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}, "messages[0].content[0].image_url"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:text/plain,hi"}}]}]}, "messages[0].content[0].image_url"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_untranslatable_requests_are_refused_naming_the_parameter(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(OpenAIError) as refused:
        request(**fields)
    assert (refused.value.status, refused.value.param) == (400, param)


def test_messages_merge_into_alternating_turns() -> None:
    body = request(
        messages=[
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "not json"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": [{"type": "text", "text": "r"}]},
            {"role": "system", "content": "late system"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": ""},
        ]
    )
    assert body["system"] == "late system"
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}]}, {"type": "text", "text": "c"}]},
    ]


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"input_tokens": 3, "output_tokens": 2}, (3, 2, 0)),
        ({"input_tokens": 3, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 50, "output_tokens": 2}, (153, 2, 100)),
        ({"input_tokens": None, "cache_read_input_tokens": -1, "output_tokens": True}, (0, 0, 0)),
    ],
)
def test_usage(usage: dict[str, Any], expected: tuple[int, int, int]) -> None:
    got = chat_usage(usage)
    assert (got["prompt_tokens"], got["completion_tokens"], got["prompt_tokens_details"]["cached_tokens"]) == expected
    assert got["total_tokens"] == expected[0] + expected[1]


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, {}, (503, "upstream_overloaded", "1")),
        (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}, {"retry-after": "30"}, (429, "rate_limit_exceeded", "30")),
        (
            400,
            {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 5 > 4"}},
            {},
            (400, "context_length_exceeded", None),
        ),
        (404, {"type": "error", "error": {"type": "not_found_error", "message": "model: x"}}, {}, (404, "model_not_found", None)),
        (401, {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}, {}, (502, "upstream_auth_error", None)),
        (529, "<html>overloaded</html>", {}, (503, "upstream_overloaded", "1")),
        (502, "Bad gateway", {}, (502, None, None)),
    ],
)
def test_error_mapping(status: int, body: Any, headers: dict[str, str], expected: tuple[int, str | None, str | None]) -> None:
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    error = map_anthropic_error(status, raw, headers, "claude")
    assert (error.status, error.code, error.headers.get("retry-after")) == expected


def test_a_non_streamed_message_with_everything() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
            {"type": "redacted_thinking", "data": "xx"},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 4, "output_tokens": 5},
    }
    choice, usage = events_from_message(orjson.dumps(message), "claude")
    assert choice.message == {  # type: ignore[union-attr]
        "role": "assistant",
        "content": "Calling.",
        "reasoning_content": "hmm",
        "reasoning": "hmm",
        "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
    }
    assert choice.finish_reason == "tool_calls"  # type: ignore[union-attr]
    assert isinstance(usage, UsageReport) and usage.usage["prompt_tokens"] == 4


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


STREAM = _sse(
    {
        "type": "message_start",
        "message": {"id": "m", "type": "message", "role": "assistant", "content": [], "model": "c", "usage": {"input_tokens": 7, "output_tokens": 1}},
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Plan: é"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi "}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "there"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"x":'}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": " 1}"}},
    {"type": "content_block_stop", "index": 2},
    {"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {}}},
    {"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
    {"type": "content_block_stop", "index": 3},
    {"type": "some_future_event", "detail": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 30}},
    {"type": "message_stop"},
)


def _merged(chunks: list[bytes]) -> tuple[dict[str, Any], list[Any]]:
    reader = MessagesStreamReader("claude")
    events: list[Any] = []
    for chunk in chunks:
        events.extend(reader.feed(chunk))
    events.extend(reader.end())
    accumulator = CompletionAccumulator()
    for event in events:
        accumulator.add(event)
    choice = accumulator.choice(0)
    return {"message": choice.merged_message(), "finish_reason": choice.finish_reason}, events


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_the_stream_reads_the_same_however_the_bytes_are_cut(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    choice, events = _merged(chunks)
    message = choice["message"]
    assert message["content"] == "Hi there"
    assert message["reasoning_content"] == "Plan: é"
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]] == [
        ("toolu_a", "f", '{"x": 1}'),
        ("toolu_b", "g", "{}"),
    ]
    assert choice["finish_reason"] == "tool_calls"
    assert sum(type(e) is KeepAlive for e in events) == 1
    usage = [e for e in events if type(e) is UsageReport][-1].usage
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (7, 30)
    assert not any(type(e) is Failure for e in events)


@pytest.mark.parametrize(
    ("tail", "failure_status"),
    [
        (_sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}), 503),
        (_sse({"type": "error", "error": {"type": "api_error", "message": "boom"}}), 500),
        (b"data: {not json\n\n", 502),
        (b"", 502),  # ended without message_delta or message_stop
    ],
)
def test_stream_failures(tail: bytes, failure_status: int) -> None:
    head = STREAM[: STREAM.index(b"event: content_block_stop")]
    reader = MessagesStreamReader("claude")
    events = reader.feed(head + tail)
    events += reader.end()
    failures = [e for e in events if type(e) is Failure]
    assert [f.error.status for f in failures] == [failure_status]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-sonnet-4-5-20250929", (3.0, 15.0, 0.3)),
        ("claude-opus-4-1-20250805", (15.0, 75.0, 1.5)),
        ("claude-opus-4-5", (5.0, 25.0, 0.5)),
        ("claude-opus-4-20250514", (15.0, 75.0, 1.5)),
        ("claude-haiku-4-5", (1.0, 5.0, 0.1)),
        ("claude-3-5-haiku-latest", (0.8, 4.0, 0.08)),
    ],
)
def test_builtin_claude_prices(model: str, expected: tuple[float, float, float]) -> None:
    price = PriceTable(PricingSettings()).lookup(model)
    assert (price.input / 1000, price.output / 1000, price.cached / 1000) == pytest.approx(expected)
