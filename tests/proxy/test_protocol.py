"""app.protocol is the wire contract: the encoder's output, the OpenAPI document,
the error builder and the id helper all agree with it."""

from __future__ import annotations

import re
from typing import Any

import httpx
import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolrelay.app import ids, protocol
from toolrelay.app.encoder import BodyCollector, SSEEncoder
from toolrelay.app.errors import OpenAIError, error_messages, error_response, invalid_request, server_error
from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Failure, KeepAlive, ResponseMeta, UsageReport
from toolrelay.app.routes.openapi_docs import protocol_schemas

# ---------------------------------------------------------------------------
# events as providers and the agent produce them

_text = st.text(max_size=12)
_finish = st.sampled_from(["stop", "length", "tool_calls", "content_filter"])
_logprobs = st.one_of(
    st.none(),
    st.builds(
        lambda token, lp: {
            "content": [{"token": token, "logprob": lp, "bytes": list(token.encode()), "top_logprobs": [{"token": token, "logprob": lp, "bytes": None}]}],
            "refusal": None,
        },
        _text,
        st.floats(min_value=-100, max_value=0),
    ),
)
_step = st.fixed_dictionaries(
    {"index": st.integers(0, 50), "type": st.sampled_from(["tool_call", "tool_result", "limit"])},
    optional={
        "step": st.integers(1, 9),
        "call_id": _text,
        "tool": _text,
        "arguments": st.dictionaries(_text, _text, max_size=2),
        "status": st.just("ok"),
        "summary": _text,
        "duration_ms": st.floats(0, 1e4),
        "message": _text,
    },
)
_annotation = st.builds(lambda url: {"type": "url_citation", "url_citation": {"start_index": 0, "end_index": 3, "url": url, "title": "t"}}, _text)
_usage = st.fixed_dictionaries(
    {"prompt_tokens": st.integers(0, 10**6), "completion_tokens": st.integers(0, 10**6)},
    optional={
        "prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": st.integers(0, 10)}),
        "completion_tokens_details": st.fixed_dictionaries({"reasoning_tokens": st.integers(0, 10)}),
    },
)


def _tool_call_pieces(index: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    first = st.builds(lambda i, name, args: {"index": index, "id": i, "type": "function", "function": {"name": name, "arguments": args}}, _text, _text, _text)
    more = st.lists(st.builds(lambda args: {"index": index, "function": {"arguments": args}}, _text), max_size=3)
    return st.tuples(first, more).map(lambda t: [t[0], *t[1]])


def _deltas(streaming: bool) -> st.SearchStrategy[dict[str, Any]]:
    steps_field = "agent_steps_delta" if streaming else "agent_steps"
    return st.fixed_dictionaries(
        {},
        optional={
            "content": _text,
            "reasoning_content": _text,
            "reasoning": _text,
            "refusal": _text,
            steps_field: st.lists(_step, min_size=1, max_size=1),
            "annotations": st.lists(_annotation, max_size=1),
        },
    )


def _choice_events(streaming: bool) -> st.SearchStrategy[list[Any]]:
    index = st.integers(0, 2)
    plain = st.builds(ChoiceDelta, index, _deltas(streaming), st.one_of(st.none(), _finish), _logprobs)
    calls = st.builds(lambda i, pieces: [ChoiceDelta(i, {"tool_calls": [p]}) for p in pieces], index, st.integers(0, 1).flatmap(_tool_call_pieces))
    message = st.builds(
        lambda i, content, calls, finish: ChoiceMessage(i, {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}, finish),
        index,
        st.one_of(st.none(), _text),
        st.lists(st.builds(lambda i, n, a: {"id": i, "type": "function", "function": {"name": n, "arguments": a}}, _text, _text, _text), max_size=2),
        _finish,
    )
    other = st.one_of(
        st.builds(UsageReport, _usage, st.booleans()),
        st.builds(ResponseMeta, st.just({"system_fingerprint": "fp_1", "service_tier": "default", "other": 1})),
        st.just(KeepAlive()),
    )
    return st.lists(st.one_of(plain.map(lambda e: [e]), calls, message.map(lambda e: [e]), other.map(lambda e: [e])), max_size=8).map(
        lambda xs: [e for x in xs for e in x]
    )


def _roundtrip(raw: bytes, cls: type) -> None:
    """``raw`` decodes as ``cls`` and encodes back to the same JSON: nothing missing, nothing undeclared."""
    decoded = msgspec.json.decode(raw, type=cls)
    assert msgspec.to_builtins(decoded) == orjson.loads(raw)


def _sse_data(stream: bytes) -> list[bytes]:
    return [event[len(b"data: ") :] for event in stream.split(b"\n\n") if event.startswith(b"data: ")]


@settings(max_examples=150, deadline=None)
@given(events=_choice_events(streaming=True), include_usage=st.booleans(), fail=st.booleans())
def test_sse_encoder_writes_protocol_chunks(events: list[Any], include_usage: bool, fail: bool) -> None:
    encoder = SSEEncoder(model="m", include_usage=include_usage)
    out = b"".join(encoder.encode(e) for e in events)
    out += encoder.encode(Failure(invalid_request("bad", param="x"))) if fail else encoder.close()
    lines = _sse_data(out)
    assert lines[-1] == (b'{"error":{"message":"bad","type":"invalid_request_error","param":"x","code":null}}' if fail else b"[DONE]")
    for line in lines[:-1]:
        _roundtrip(line, protocol.ChatCompletionChunk)
    if fail:
        _roundtrip(lines[-1], protocol.ErrorResponse)


@settings(max_examples=150, deadline=None)
@given(events=_choice_events(streaming=False))
def test_body_collector_writes_a_protocol_completion(events: list[Any]) -> None:
    collector = BodyCollector()
    for event in events:
        collector.add(event)
    _roundtrip(orjson.dumps(collector.body(model="m")), protocol.ChatCompletion)


# ---------------------------------------------------------------------------
# the OpenAPI document is generated from the Structs


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rpartition("/")[2]] if ref else schema


def test_openapi_schemas_are_the_protocol_structs(http: httpx.Client) -> None:
    spec = http.get("/docs/openapi.json").json()
    components = spec["components"]["schemas"]
    for name, schema in protocol_schemas().items():
        assert components[name] == orjson.loads(orjson.dumps(schema)), name

    chat = spec["paths"]["/v1/chat/completions"]["post"]
    request = _resolve(spec, chat["requestBody"]["content"]["application/json"]["schema"])
    assert request == components["ChatCompletionRequest"]
    assert set(request["properties"]) == set(protocol.ChatCompletionRequest.__struct_fields__)
    roles = request["properties"]["messages"]["items"]["discriminator"]["mapping"]
    assert set(roles) == {"system", "developer", "user", "assistant", "tool", "function"}
    tool = _resolve(spec, request["properties"]["tools"]["items"])
    assert _resolve(spec, tool["properties"]["function"])["required"] == ["name"]

    ok = chat["responses"]["200"]["content"]
    completion = _resolve(spec, ok["application/json"]["schema"])
    choice = _resolve(spec, completion["properties"]["choices"]["items"])
    message = _resolve(spec, choice["properties"]["message"])
    tool_call = _resolve(spec, message["properties"]["tool_calls"]["items"])
    assert set(tool_call["required"]) == {"id", "type", "function"}
    assert {"agent_steps", "reasoning_content", "annotations"} <= set(message["properties"])
    chunk = _resolve(spec, ok["text/event-stream"]["schema"])
    delta = _resolve(spec, _resolve(spec, chunk["properties"]["choices"]["items"])["properties"]["delta"])
    assert {"tool_calls", "agent_steps_delta", "agent_steps", "reasoning_content"} <= set(delta["properties"])
    assert _resolve(spec, delta["properties"]["tool_calls"]["items"])["required"] == ["index"]
    usage = components["Usage"]
    assert {"prompt_tokens_details", "completion_tokens_details"} <= set(usage["properties"])

    for status in ("400", "401", "404", "429", "500", "502"):
        error = _resolve(spec, chat["responses"][status]["content"]["application/json"]["schema"])
        assert _resolve(spec, error["properties"]["error"])["required"] == ["message", "type", "param", "code"]

    listing = _resolve(spec, spec["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"])
    assert _resolve(spec, listing["properties"]["data"]["items"])["required"] == ["id", "object", "created", "owned_by"]
    assert "404" in spec["paths"]["/v1/models/{model_id}"]["get"]["responses"]


def test_models_endpoint_writes_the_protocol_shape(http: httpx.Client) -> None:
    raw = http.get("/v1/models")
    _roundtrip(raw.content, protocol.ModelList)
    first = msgspec.json.decode(raw.content, type=protocol.ModelList).data[0]
    _roundtrip(http.get(f"/v1/models/{first.id}").content, protocol.Model)
    _roundtrip(http.get("/v1/models/no-such-model").content, protocol.ErrorResponse)


def test_request_struct_reads_an_sdk_request() -> None:
    payload = {
        "model": "agent/m",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:,"}}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": None,
        "agent_options": {"max_steps": 3, "builtin_tools": []},
    }
    assert msgspec.to_builtins(msgspec.convert(payload, protocol.ChatCompletionRequest)) == payload
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**payload, "temperature": 3}, protocol.ChatCompletionRequest)


# ---------------------------------------------------------------------------
# the error builder


class _Info:
    error_code: str | None = None


@pytest.mark.parametrize(
    ("err", "recorded"),
    [
        (invalid_request("bad", param="n"), "invalid_request_error"),
        (OpenAIError(429, "slow down", code="rate_limit_exceeded", headers={"retry-after": "1"}), "rate_limit_exceeded"),
        (server_error(), "internal_error"),
    ],
)
def test_error_response_and_messages_agree(err: OpenAIError, recorded: str) -> None:
    info = _Info()
    response = error_response(err, info)
    assert info.error_code == recorded
    assert response.status_code == err.status and response.content == err.body() and response.media_type == "application/json"
    _roundtrip(err.body(), protocol.ErrorResponse)
    start, body = error_messages(err, (b"x-request-id", b"req_1"))
    assert start["status"] == err.status and body["body"] == err.body()
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json" and headers[b"x-request-id"] == b"req_1"
    assert {k.encode(): v.encode() for k, v in err.headers.items()}.items() <= headers.items()


# ---------------------------------------------------------------------------
# the id helper: formats are part of the contract


@pytest.mark.parametrize(
    ("mint", "pattern"),
    [
        (ids.new_request_id, r"req_[0-9a-f]{24}"),
        (ids.new_completion_id, r"chatcmpl-[0-9a-f]{24}"),
        (ids.new_tool_call_id, r"call_[A-Za-z0-9_-]{24}"),
        (ids.new_repaired_tool_call_id, r"call_[0-9a-f]{24}"),
        (ids.new_run_key, r"run_[0-9a-f]{24}"),
        (ids.new_key_id, r"[0-9a-f]{12}"),
        (ids.new_memory_id, r"mem_[0-9a-hjkmnp-tv-z]{26}"),
    ],
)
def test_id_formats_and_uniqueness(mint: Any, pattern: str) -> None:
    minted = [mint() for _ in range(500)]
    assert all(re.fullmatch(pattern, m) for m in minted), minted[:3]
    assert len(set(minted)) == len(minted)


def test_memory_ids_sort_in_creation_order() -> None:
    minted = [ids.new_memory_id() for _ in range(2000)]
    assert minted == sorted(minted)
