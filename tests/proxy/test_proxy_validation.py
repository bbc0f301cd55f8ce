"""Requests OpenAI would refuse get OpenAI's 400 (with `param`), before any upstream call."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from fakes.upstream import FakeUpstream

from .helpers import USER, assert_openai_error, stream_raw

GOOD_TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}


def with_(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "fake-model", "messages": USER}
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


_DROP: Any = object()

CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("missing messages", with_(messages=_DROP), "messages"),
    ("messages null", with_(messages=None), "messages"),
    ("empty messages", with_(messages=[]), "messages"),
    ("messages not a list", with_(messages={"role": "user", "content": "hi"}), "messages"),
    ("message not an object", with_(messages=["hello"]), "messages[0]"),
    ("temperature string", with_(temperature="hot"), "temperature"),
    ("temperature too high", with_(temperature=2.5), "temperature"),
    ("temperature negative", with_(temperature=-0.1), "temperature"),
    ("temperature bool", with_(temperature=True), "temperature"),
    ("top_p too high", with_(top_p=1.5), "top_p"),
    ("n zero", with_(n=0), "n"),
    ("n too big", with_(n=129), "n"),
    ("n float", with_(n=1.5), "n"),
    ("presence_penalty range", with_(presence_penalty=2.5), "presence_penalty"),
    ("frequency_penalty range", with_(frequency_penalty=-3), "frequency_penalty"),
    ("max_tokens zero", with_(max_tokens=0), "max_tokens"),
    ("max_completion_tokens string", with_(max_completion_tokens="10"), "max_completion_tokens"),
    ("top_logprobs too big", with_(logprobs=True, top_logprobs=21), "top_logprobs"),
    ("top_logprobs without logprobs", with_(top_logprobs=2), "top_logprobs"),
    ("seed float", with_(seed=1.5), "seed"),
    ("logprobs string", with_(logprobs="yes"), "logprobs"),
    ("user not string", with_(user=42), "user"),
    ("model not string", with_(model=42), "model"),
    ("stream not bool", with_(stream="yes"), "stream"),
    ("bad role", with_(messages=[{"role": "robot", "content": "beep"}]), "messages[0].role"),
    ("missing role", with_(messages=[{"content": "hi"}]), "messages[0].role"),
    ("user message without content", with_(messages=[{"role": "user"}]), "messages[0].content"),
    ("system content wrong type", with_(messages=[{"role": "system", "content": 5}]), "messages[0].content"),
    ("bad content part type", with_(messages=[{"role": "user", "content": [{"type": "video", "video": "x"}]}]), "messages[0].content[0].type"),
    ("image part without url", with_(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]), "messages[0].content[0].image_url.url"),
    ("assistant without content or calls", with_(messages=[*USER, {"role": "assistant"}]), "messages[1].content"),
    (
        "assistant tool_calls missing id",
        with_(messages=[*USER, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]),
        "messages[1].tool_calls[0].id",
    ),
    (
        "assistant tool_calls dict arguments",
        with_(messages=[*USER, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}]}]),
        "messages[1].tool_calls[0].function.arguments",
    ),
    ("tool message without tool_call_id", with_(messages=[*USER, {"role": "tool", "content": "42"}]), "messages[1].tool_call_id"),
    ("tool message without content", with_(messages=[*USER, {"role": "tool", "tool_call_id": "c1"}]), "messages[1].content"),
    ("tools not a list", with_(tools={"type": "function"}), "tools"),
    ("invalid tool schema", with_(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]), "tools[0].function.parameters"),
    ("tool parameters not an object", with_(tools=[{"type": "function", "function": {"name": "f", "parameters": "object"}}]), "tools[0].function.parameters"),
    ("bad function name", with_(tools=[{"type": "function", "function": {"name": "get weather!"}}]), "tools[0].function.name"),
    ("function name too long", with_(tools=[{"type": "function", "function": {"name": "f" * 65}}]), "tools[0].function.name"),
    ("tool without function", with_(tools=[{"type": "function"}]), "tools[0].function"),
    ("duplicate tool names", with_(tools=[GOOD_TOOL, GOOD_TOOL]), "tools[1].function.name"),
    ("tool_choice names a missing function", with_(tools=[GOOD_TOOL], tool_choice={"type": "function", "function": {"name": "missing"}}), "tool_choice"),
    ("tool_choice bad string", with_(tools=[GOOD_TOOL], tool_choice="always"), "tool_choice"),
    ("tool_choice without tools", with_(tool_choice="auto"), "tool_choice"),
    ("stream_options without stream", with_(stream_options={"include_usage": True}), "stream_options"),
    ("stream_options with stream false", with_(stream=False, stream_options={"include_usage": True}), "stream_options"),
    ("include_usage not bool", with_(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
    ("stop with 5 items", with_(stop=["a", "b", "c", "d", "e"]), "stop"),
    ("stop item not string", with_(stop=["a", 1]), "stop[1]"),
    ("logit_bias out of range", with_(logit_bias={"50256": 150}), "logit_bias"),
    ("logit_bias not number", with_(logit_bias={"50256": "high"}), "logit_bias.50256"),
    ("response_format bad type", with_(response_format={"type": "yaml"}), "response_format.type"),
    (
        "json_schema missing name",
        with_(response_format={"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}),
        "response_format.json_schema.name",
    ),
    (
        "json_schema invalid schema",
        with_(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}),
        "response_format.json_schema.schema",
    ),
    ("metadata not object", with_(metadata=["a"]), "metadata"),
]


@pytest.mark.parametrize("body,param", [(b, p) for _, b, p in CASES], ids=[name for name, _, _ in CASES])
def test_invalid_request_is_400_with_param(http: httpx.Client, fake: FakeUpstream, body: dict[str, Any], param: str) -> None:
    response = http.post("/v1/chat/completions", json=body)
    assert_openai_error(response, 400, param=param, type="invalid_request_error")
    assert fake.chat_requests == []


STREAM_CASES = [c for c in CASES if c[0] in ("missing messages", "empty messages", "bad role", "invalid tool schema", "n too big")]


@pytest.mark.parametrize("body,param", [(b, p) for _, b, p in STREAM_CASES], ids=[n for n, _, _ in STREAM_CASES])
def test_invalid_streaming_request_is_400_before_any_stream(http: httpx.Client, fake: FakeUpstream, body: dict[str, Any], param: str) -> None:
    response, raw = stream_raw(http, {**body, "stream": True})
    assert response.status_code == 400, raw
    assert b"data:" not in raw
    assert fake.chat_requests == []


def test_sdk_raises_bad_request_error_with_param(client: openai.OpenAI, fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fake-model", messages=USER, temperature=2.5)
    err = caught.value
    assert err.status_code == 400
    assert err.param == "temperature"
    assert err.type == "invalid_request_error"
    assert err.code == "decimal_above_max_value"
    assert err.request_id and err.request_id.startswith("req_")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fake-model", messages=USER, stream=True, n=0)
    assert caught.value.param == "n"
    assert fake.chat_requests == []


def test_malformed_json(http: httpx.Client, fake: FakeUpstream) -> None:
    response = http.post("/v1/chat/completions", content=b'{"model": "fake-model", "messages": [', headers={"content-type": "application/json"})
    assert_openai_error(response, 400, code="invalid_json", type="invalid_request_error")
    response = http.post("/v1/chat/completions", content=b"\xff\xfe not utf-8", headers={"content-type": "application/json"})
    assert_openai_error(response, 400, type="invalid_request_error")
    response = http.post("/v1/chat/completions", content=b"", headers={"content-type": "application/json"})
    assert_openai_error(response, 400, type="invalid_request_error")
    assert fake.chat_requests == []


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"a string"', b"42", b"null", b"true"])
def test_body_not_an_object(http: httpx.Client, fake: FakeUpstream, raw: bytes) -> None:
    response = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert_openai_error(response, 400, type="invalid_request_error")
    assert fake.chat_requests == []


def test_too_many_messages(http: httpx.Client, fake: FakeUpstream, relay: Any) -> None:
    limit = relay.settings.server.max_messages
    messages = [{"role": "user", "content": "m"}] * (limit + 1)
    response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages})
    err = assert_openai_error(response, 400, param="messages")
    assert str(limit) in err["message"]
    ok = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages[:limit]})
    assert ok.status_code == 200
    assert len(fake.last_body["messages"]) == limit


def test_too_many_tools(http: httpx.Client, fake: FakeUpstream, relay: Any) -> None:
    limit = relay.settings.server.max_tools
    tools = [{"type": "function", "function": {"name": f"t{i}"}} for i in range(limit + 1)]
    response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER, "tools": tools})
    assert_openai_error(response, 400, param="tools")
    assert fake.chat_requests == []


def test_body_over_size_limit_is_413(http: httpx.Client, fake: FakeUpstream, relay: Any) -> None:
    limit = relay.settings.server.max_body_bytes
    big = {"model": "fake-model", "messages": [{"role": "user", "content": "x" * (limit + 1024)}]}
    response = http.post("/v1/chat/completions", json=big)
    assert_openai_error(response, 413, type="invalid_request_error")
    assert fake.chat_requests == []


def test_body_over_size_limit_chunked_is_413(http: httpx.Client, fake: FakeUpstream, relay: Any) -> None:
    """Same limit when the body arrives chunked, without a content-length to check up front."""
    limit = relay.settings.server.max_body_bytes

    def body() -> Any:
        yield b'{"model": "fake-model", "messages": [{"role": "user", "content": "'
        piece = b"y" * 65536
        for _ in range(limit // len(piece) + 2):
            yield piece
        yield b'"}]}'

    response = http.post("/v1/chat/completions", content=body(), headers={"content-type": "application/json"})
    assert_openai_error(response, 413, type="invalid_request_error")
    assert fake.chat_requests == []


def test_body_just_under_limit_is_accepted(http: httpx.Client, fake: FakeUpstream, relay: Any) -> None:
    limit = relay.settings.server.max_body_bytes
    skeleton = len(b'{"model":"fake-model","messages":[{"role":"user","content":""}]}')
    body = b'{"model":"fake-model","messages":[{"role":"user","content":"' + b"z" * (limit - skeleton - 16) + b'"}]}'
    response = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text[:300]
    assert len(fake.last_request.raw) > limit - 100


# --------------------------------------------------------------------------- unknown model


def test_unknown_model_non_streaming(client: openai.OpenAI, http: httpx.Client, fake: FakeUpstream) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=USER)
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    err = assert_openai_error(http.post("/v1/chat/completions", json=with_(model="no-such-model")), 404, code="model_not_found", param="model")
    assert "no-such-model" in err["message"]
    assert fake.chat_requests == []


def test_unknown_model_streaming_fails_before_the_stream(client: openai.OpenAI, http: httpx.Client, fake: FakeUpstream) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=USER, stream=True)
    assert caught.value.code == "model_not_found"
    response, raw = stream_raw(http, with_(model="no-such-model", stream=True))
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert b"data:" not in raw
    assert fake.chat_requests == []


def test_model_lookalikes_are_not_models(http: httpx.Client, fake: FakeUpstream) -> None:
    for model in ("GPT-4", "fake-model ", "org/", "fake", "agent/no-such-model", "gpt-4/x"):
        response = http.post("/v1/chat/completions", json=with_(model=model))
        err = assert_openai_error(response, 404, code="model_not_found", param="model")
        assert model in err["message"]
    assert fake.chat_requests == []


def test_missing_model_uses_the_default_model(http: httpx.Client, fake: FakeUpstream, relay: Any) -> None:
    response = http.post("/v1/chat/completions", json=with_(model=_DROP))
    assert response.status_code == 200, response.text
    assert relay.settings.default_model == "fake-model"
    assert fake.last_body["model"] == "fake-model"
    assert response.json()["model"] == "fake-model"
