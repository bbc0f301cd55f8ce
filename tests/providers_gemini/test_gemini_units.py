"""The pure Gemini translation (request, answer, errors), table-driven and property-tested."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolrelay.app.auth.pricing import PriceTable
from toolrelay.app.auth.settings import PricingSettings
from toolrelay.app.errors import OpenAIError
from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Failure, UsageReport
from toolrelay.app.providers.gemini import embeddings_reply, embeddings_request
from toolrelay.app.providers.gemini_parser import GeminiReader, GeminiSSEParser, map_gemini_error, usage_from_metadata
from toolrelay.app.providers.gemini_request import join_call_id, model_path, split_call_id, to_gemini

USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini-2.5-flash", "models/gemini-2.5-flash"),
        ("models/gemini-2.5-pro", "models/gemini-2.5-pro"),
        ("tunedModels/my-model-1", "tunedModels/my-model-1"),
        ("gemini-1.5-flash-001", "models/gemini-1.5-flash-001"),
    ],
)
def test_model_path(model: str, path: str) -> None:
    assert model_path(model) == path


@pytest.mark.parametrize("model", ["", "../secret", "models/../x", "a/b", "gemini?key=1", "gemini:generateContent", "cachedContents/x"])
def test_model_path_refuses_what_could_walk_the_url(model: str) -> None:
    with pytest.raises(OpenAIError) as caught:
        model_path(model)
    assert caught.value.status == 404


@given(st.text(alphabet="abcdef0123456789_", min_size=1, max_size=30), st.one_of(st.none(), st.text(alphabet="ABCxyz0123+/=", min_size=1, max_size=80)))
def test_call_ids_carry_signatures_both_ways(call_id: str, signature: str | None) -> None:
    plain = "call_" + call_id
    assert split_call_id(join_call_id(plain, signature)) == (plain, signature)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_tokens": 5}, {"maxOutputTokens": 5}),
        ({"max_completion_tokens": 7, "max_tokens": 5}, {"maxOutputTokens": 7}),
        ({"stop": "x"}, {"stopSequences": ["x"]}),
        ({"n": 1}, None),
        ({"n": 3, "seed": 4}, {"candidateCount": 3, "seed": 4}),
        ({"presence_penalty": 0.5, "frequency_penalty": 0.1}, {"presencePenalty": 0.5, "frequencyPenalty": 0.1}),
        ({"reasoning_effort": "none"}, {"thinkingConfig": {"thinkingBudget": 0, "includeThoughts": False}}),
        ({"reasoning_effort": "minimal"}, {"thinkingConfig": {"thinkingBudget": 128, "includeThoughts": True}}),
        ({"reasoning_effort": "medium"}, {"thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": True}}),
        ({"reasoning_effort": "high"}, {"thinkingConfig": {"thinkingBudget": 24576, "includeThoughts": True}}),
        ({"response_format": {"type": "text"}}, None),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$schema": "x", "type": "object"}}}},
            {"responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}},
        ),
    ],
)
def test_generation_config(fields: dict[str, Any], expected: dict[str, Any] | None) -> None:
    body = to_gemini({"model": "g", "messages": USER, **fields}).body
    assert body.get("generationConfig") == expected


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (None, None),
        ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
        ("none", {"functionCallingConfig": {"mode": "NONE"}}),
        ("required", {"functionCallingConfig": {"mode": "ANY"}}),
        ({"type": "function", "function": {"name": "f"}}, {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}),
        (
            {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}},
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
        ),
        ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}, {"functionCallingConfig": {"mode": "AUTO"}}),
    ],
)
def test_tool_choice(choice: Any, config: dict[str, Any] | None) -> None:
    assert to_gemini({"model": "g", "messages": USER, "tool_choice": choice}).body.get("toolConfig") == config


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": [{"role": "critic", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]}, "messages[0].content[0]"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]},
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "1"}]}, "messages[0].tool_call_id"),
        ({"messages": USER, "tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        ({"messages": USER, "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": USER, "reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"messages": USER, "logprobs": True}, "logprobs"),
        ({"messages": USER, "top_logprobs": 2}, "top_logprobs"),
        ({"messages": USER, "logit_bias": {"1": 5}}, "logit_bias"),
        ({"messages": USER, "modalities": ["text", "audio"]}, "modalities"),
    ],
)
def test_untranslatable_requests_are_400s_with_param(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(OpenAIError) as caught:
        to_gemini({"model": "g", **fields})
    assert (caught.value.status, caught.value.param) == (400, param)


def test_audio_and_file_parts_become_inline_data() -> None:
    content = [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
    ]
    body = to_gemini({"model": "g", "messages": [{"role": "user", "content": content}]}).body
    assert body["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


@pytest.mark.parametrize(
    ("meta", "usage"),
    [
        (
            {"promptTokenCount": 10, "candidatesTokenCount": 3, "totalTokenCount": 13},
            {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13, "cached": 0, "reasoning": 0},
        ),
        (
            {"promptTokenCount": 10, "candidatesTokenCount": 3, "thoughtsTokenCount": 5, "cachedContentTokenCount": 8, "totalTokenCount": 18},
            {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18, "cached": 8, "reasoning": 5},
        ),
        ({"promptTokenCount": 4, "toolUsePromptTokenCount": 2}, {"prompt_tokens": 6, "completion_tokens": 0, "total_tokens": 6, "cached": 0, "reasoning": 0}),
        ({}, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached": 0, "reasoning": 0}),
    ],
)
def test_usage_mapping(meta: dict[str, Any], usage: dict[str, int]) -> None:
    got = usage_from_metadata(meta)
    assert {
        "prompt_tokens": got["prompt_tokens"],
        "completion_tokens": got["completion_tokens"],
        "total_tokens": got["total_tokens"],
        "cached": got["prompt_tokens_details"]["cached_tokens"],
        "reasoning": got["completion_tokens_details"]["reasoning_tokens"],
    } == usage


def _error(code: int, status: str, message: str = "m", details: list[Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return orjson.dumps({"error": error})


@pytest.mark.parametrize(
    ("http", "raw", "status", "code", "retry_after"),
    [
        (400, _error(400, "INVALID_ARGUMENT"), 400, None, None),
        (400, _error(400, "FAILED_PRECONDITION", "User location is not supported"), 400, None, None),
        (401, _error(401, "UNAUTHENTICATED"), 502, "upstream_auth_error", None),
        (403, _error(403, "PERMISSION_DENIED"), 502, "upstream_auth_error", None),
        (
            400,
            _error(400, "INVALID_ARGUMENT", "API key not valid.", [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]),
            502,
            "upstream_auth_error",
            None,
        ),
        (404, _error(404, "NOT_FOUND"), 404, "model_not_found", None),
        (
            429,
            _error(429, "RESOURCE_EXHAUSTED", details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"}]),
            429,
            "rate_limit_exceeded",
            "3",
        ),
        (429, _error(429, "RESOURCE_EXHAUSTED"), 429, "rate_limit_exceeded", "1"),
        (500, _error(500, "INTERNAL"), 500, None, None),
        (503, _error(503, "UNAVAILABLE"), 503, None, "1"),
        (504, _error(504, "DEADLINE_EXCEEDED"), 504, None, None),
        (500, _error(503, "UNAVAILABLE"), 503, None, "1"),  # the status name wins over the HTTP code
        (
            400,
            _error(400, "INVALID_ARGUMENT", "The input token count (2000001) exceeds the maximum number of tokens allowed (1048576)."),
            400,
            "context_length_exceeded",
            None,
        ),
        (502, b"<html>Bad Gateway</html>", 502, None, None),
        (500, orjson.dumps({"error": {"code": 429, "message": "quota"}}), 429, "rate_limit_exceeded", "1"),  # no status name: the body's code
        (503, b"[" + _error(503, "UNAVAILABLE") + b"]", 503, None, "1"),
    ],
)
def test_error_mapping(http: int, raw: bytes, status: int, code: str | None, retry_after: str | None) -> None:
    error = map_gemini_error(http, raw, {}, "gem")
    assert (error.status, error.code, error.headers.get("retry-after")) == (status, code, retry_after)


def test_retry_delay_beats_the_headers_default() -> None:
    raw = _error(429, "RESOURCE_EXHAUSTED", details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "40s"}])
    error = map_gemini_error(429, raw, {"Retry-After": "5"}, "gem")
    assert (error.headers["retry-after"], error.headers["retry-after-ms"]) == ("40", "40000")


def _chunk(*parts: dict[str, Any], finish: str | None = None, index: int = 0, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": index}
    if finish:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate]}
    if usage:
        out["usageMetadata"] = usage
    return out


STREAM = [
    _chunk({"text": "hmm", "thought": True}),
    _chunk({"text": "Hel"}),
    _chunk({"text": "lo"}, {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "U0lH"}),
    _chunk({"text": ""}, finish="STOP", usage={"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5}),
]
SSE_BODY = b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in STREAM)


def _summary(events: list[Any]) -> list[Any]:
    out: list[Any] = []
    for event in events:
        if isinstance(event, ChoiceDelta):
            delta = dict(event.delta)
            for call in delta.get("tool_calls", []):
                call["id"] = split_call_id(call["id"])[1]  # the minted part is random
            out.append(("delta", event.index, delta, event.finish_reason))
        elif isinstance(event, UsageReport):
            out.append(("usage", event.usage["total_tokens"]))
        else:
            out.append(type(event).__name__)
    return out


EXPECTED_STREAM = [
    ("delta", 0, {"reasoning_content": "hmm"}, None),
    ("delta", 0, {"content": "Hel"}, None),
    ("delta", 0, {"content": "lo", "tool_calls": [{"index": 0, "id": "U0lH", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]}, None),
    ("delta", 0, {"content": ""}, "tool_calls"),
    ("usage", 5),
]


@given(st.lists(st.integers(min_value=1, max_value=len(SSE_BODY) - 1), max_size=12, unique=True))
def test_sse_stream_reads_the_same_however_it_is_cut(cuts: list[int]) -> None:
    parser = GeminiSSEParser("gem")
    bounds = [0, *sorted(cuts), len(SSE_BODY)]
    events: list[Any] = []
    for start, end in itertools.pairwise(bounds):
        events += parser.feed(SSE_BODY[start:end])
    events += parser.end()
    assert _summary(events) == EXPECTED_STREAM


@pytest.mark.parametrize(
    ("body", "failure"),
    [
        (b'data: {"candidates": [{"content": {"parts": [{"text": "a"}]}}]}\r\n\r\n', "ended the stream"),
        (b"data: {not json\r\n\r\n", "malformed"),
        (b'data: {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}\r\n\r\n', "quota"),
        (b'data: {"promptFeedback": {"blockReason": "OTHER"}}\r\n\r\n', "blockReason OTHER"),
        (b'data: {"candidates": "nope"}\r\n\r\n', "malformed"),
    ],
)
def test_broken_streams_end_in_one_failure(body: bytes, failure: str) -> None:
    parser = GeminiSSEParser("gem")
    events = parser.feed(body) + parser.end()
    assert isinstance(events[-1], Failure)
    assert failure in events[-1].error.message
    assert sum(isinstance(e, Failure) for e in events) == 1


def test_plain_answer_with_two_candidates() -> None:
    response = {
        "candidates": [
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "MAX_TOKENS", "index": 0},
            {"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}, "finishReason": "STOP", "index": 1},
        ],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2, "totalTokenCount": 3},
    }
    first, second, usage = GeminiReader("gem").body_events(response)
    assert isinstance(first, ChoiceMessage) and isinstance(second, ChoiceMessage) and isinstance(usage, UsageReport)
    assert (first.message["content"], first.finish_reason) == ("a", "length")
    assert (second.message["content"], second.finish_reason) == (None, "tool_calls")
    assert second.message["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}


def test_embeddings_translation() -> None:
    model, body = embeddings_request({"model": "text-embedding-004", "input": "one"})
    assert (model, body) == ("models/text-embedding-004", {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "one"}]}}]})
    with pytest.raises(OpenAIError) as caught:
        embeddings_request({"model": "text-embedding-004", "input": [[1, 2, 3]]})
    assert caught.value.param == "input"
    reply = orjson.loads(embeddings_reply(b'{"embeddings": [{"values": [0.5, 1.0]}]}', "emb", "float", "gem"))
    assert reply == {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 1.0]}], "model": "emb"}
    encoded = orjson.loads(embeddings_reply(b'{"embeddings": [{"values": [0.5, 1.0]}]}', "emb", "base64", "gem"))
    assert encoded["data"][0]["embedding"] == "AAAAPwAAgD8="


@pytest.mark.parametrize(
    ("model", "prices"),
    [
        ("gemini-2.5-flash", (0.30, 2.50, 0.03)),
        ("gemini-2.5-flash-lite", (0.10, 0.40, 0.01)),  # the longer prefix wins over gemini-2.5-flash
        ("gemini-2.5-flash-preview-09-2025", (0.30, 2.50, 0.03)),
        ("gemini-2.5-pro", (1.25, 10.00, 0.125)),
        ("gemini-3-pro-preview", (2.00, 12.00, 0.20)),
    ],
)
def test_builtin_gemini_prices(model: str, prices: tuple[float, float, float]) -> None:
    price = PriceTable(PricingSettings()).lookup(model)
    assert (price.input, price.output, price.cached) == pytest.approx(tuple(p * 1000 for p in prices))
