"""Upstreams that are almost OpenAI: what the relay smooths over so strict clients still get the spec."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from fakes.sse import data_events as data_events_of
from fakes.upstream import FakeUpstream, Reply

from .helpers import USER, assert_openai_error, assert_still_serving, chat_body, content_of, stream_events, stream_raw

ENV = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "fake-model"}


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0, **extra: Any) -> dict[str, Any]:
    return {**ENV, "choices": [{"index": index, "delta": delta, "finish_reason": finish}], **extra}


def test_first_delta_without_role_gets_one(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(chunks=[chunk({"content": "no "}), chunk({"content": "role"}), chunk({}, "stop")]))
    _, events, _ = stream_events(http, chat_body(stream=True))
    chunks = [e.json for e in events if not e.is_done]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert sum("role" in c["choices"][0]["delta"] for c in chunks) == 1
    assert content_of(chunks) == "no role"


def test_repeated_tool_call_ids_from_upstream_are_not_repeated_downstream(client: openai.OpenAI, fake: FakeUpstream) -> None:
    def call(args: str) -> dict[str, Any]:
        return {"tool_calls": [{"index": 0, "id": "call_r", "type": "function", "function": {"name": "lookup", "arguments": args}}]}

    fake.enqueue(Reply(chunks=[chunk({"role": "assistant", **call("")}), chunk(call('{"q": ')), chunk(call('"x"}')), chunk({}, "tool_calls")]))
    with client.chat.completions.stream(model="fake-model", messages=USER) as stream:
        final = stream.get_final_completion()
    got = (final.choices[0].message.tool_calls or [])[0]
    assert got.id == "call_r"
    assert got.function.name == "lookup"
    assert json.loads(got.function.arguments) == {"q": "x"}


def test_crlf_line_endings_and_sse_fields(http: httpx.Client, fake: FakeUpstream) -> None:
    def crlf(c: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(c).encode() + b"\r\n\r\n"

    fake.enqueue(
        Reply(
            chunks=[
                b": comment first\r\n\r\n",
                b"event: message\r\nid: 1\r\nretry: 1000\r\n" + crlf(chunk({"role": "assistant", "content": "crlf "})),
                crlf(chunk({"content": "works"})),
                b"data:" + json.dumps(chunk({}, "stop")).encode() + b"\n\n",  # no space after the colon
            ]
        )
    )
    _, events, raw = stream_events(http, chat_body(stream=True))
    chunks = [e.json for e in events if not e.is_done]
    assert content_of(chunks) == "crlf works"
    assert b"\r" not in raw and b"event:" not in raw


def test_multi_line_data_event(http: httpx.Client, fake: FakeUpstream) -> None:
    pretty = json.dumps(chunk({"role": "assistant", "content": "multi line"}), indent=1).encode()
    event = b"".join(b"data: " + line + b"\n" for line in pretty.split(b"\n")) + b"\n"
    fake.enqueue(Reply(chunks=[event, chunk({}, "stop")]))
    _, events, _ = stream_events(http, chat_body(stream=True))
    assert content_of([e.json for e in events if not e.is_done]) == "multi line"


def test_usage_details_pass_through(client: openai.OpenAI, fake: FakeUpstream) -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 12, "accepted_prediction_tokens": 0},
    }
    fake.enqueue(Reply(content="cached", usage=usage))
    completion = client.chat.completions.create(model="fake-model", messages=USER)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None and completion.usage.prompt_tokens_details.cached_tokens == 64
    assert completion.usage.completion_tokens_details is not None and completion.usage.completion_tokens_details.reasoning_tokens == 12
    fake.enqueue(Reply(content="cached", usage=usage))
    chunks = list(client.chat.completions.create(model="fake-model", messages=USER, stream=True, stream_options={"include_usage": True}))
    last = chunks[-1].usage
    assert last is not None and last.prompt_tokens_details is not None and last.prompt_tokens_details.cached_tokens == 64
    assert last.total_tokens == 120


def test_usage_on_every_upstream_chunk_is_reported_once(http: httpx.Client, fake: FakeUpstream) -> None:
    """vLLM's continuous usage stats: usage on each chunk upstream; downstream only the one usage chunk."""
    fake.enqueue(
        Reply(
            chunks=[
                chunk({"role": "assistant", "content": "a"}, usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}),
                chunk({"content": "b"}, usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
                chunk({}, "stop", usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
            ]
        )
    )
    _, events, _ = stream_events(http, chat_body(stream=True, stream_options={"include_usage": True}))
    chunks = [e.json for e in events if not e.is_done]
    assert [c["usage"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 7
    fake.enqueue(
        Reply(chunks=[chunk({"role": "assistant", "content": "a"}, usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}), chunk({}, "stop")])
    )
    _, events, _ = stream_events(http, chat_body(stream=True))
    assert all("usage" not in e.json for e in events if not e.is_done)


def test_system_fingerprint_and_service_tier_on_every_chunk(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(
        Reply(
            chunks=[
                chunk({"role": "assistant", "content": "x"}, system_fingerprint="fp_1", service_tier="default", provider_specific={"junk": 1}),
                chunk({}, "stop", system_fingerprint="fp_1", service_tier="default"),
            ]
        )
    )
    _, events, _ = stream_events(http, chat_body(stream=True))
    chunks = [e.json for e in events if not e.is_done]
    assert {c.get("system_fingerprint") for c in chunks} == {"fp_1"}
    assert {c.get("service_tier") for c in chunks} == {"default"}
    assert all("provider_specific" not in c for c in chunks)


def test_vllm_style_error_object(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(
        Reply(
            status=400,
            error={"object": "error", "message": "This model's maximum context length is 4096 tokens.", "type": "BadRequestError", "param": None, "code": 400},
        )
    )
    err = assert_openai_error(http.post("/v1/chat/completions", json=chat_body()), 400)
    assert err["message"] == "This model's maximum context length is 4096 tokens."
    assert err["code"] is None or isinstance(err["code"], str)


def test_string_error_body(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(status=500, error={"error": "model not loaded"}))
    err = assert_openai_error(http.post("/v1/chat/completions", json=chat_body()), 500)
    assert err["message"] == "model not loaded"


def test_error_as_first_stream_event_is_an_http_error(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(chunks=[{"error": {"message": "Upstream is warming up", "type": "server_error", "param": None, "code": None}}]))
    response, raw = stream_raw(http, chat_body(stream=True))
    err = assert_openai_error(response, 500)
    assert err["message"] == "Upstream is warming up"
    assert b"data:" not in raw


def test_unicode_line_separators_survive_streaming(client: openai.OpenAI, fake: FakeUpstream) -> None:
    text = "héllo wörld 🌍 ✓ a\u2028b\u2029c\x85d\re\nf\tg"
    fake.enqueue(Reply(content=text, chunk_tokens=[text[:5], text[5:13], text[13:]]))
    chunks = list(client.chat.completions.create(model="fake-model", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    fake.enqueue(Reply(content=text))
    assert client.chat.completions.create(model="fake-model", messages=USER).choices[0].message.content == text


def test_missing_finish_reason_is_filled_in_when_streaming(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(chunks=[chunk({"role": "assistant", "content": "no finish"})]))
    _, events, _ = stream_events(http, chat_body(stream=True))
    chunks = [e.json for e in events if not e.is_done]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"


def test_missing_finish_reason_is_filled_in_non_streaming(client: openai.OpenAI, fake: FakeUpstream) -> None:
    body = {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}
    fake.enqueue(Reply(raw_body=json.dumps(body).encode()))
    completion = client.chat.completions.create(model="fake-model", messages=USER)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.refusal is None


def test_finish_reason_length_and_content_filter_pass_through(client: openai.OpenAI, fake: FakeUpstream) -> None:
    for reason in ("length", "content_filter"):
        fake.enqueue(Reply(content="cut", finish_reason=reason))
        assert client.chat.completions.create(model="fake-model", messages=USER).choices[0].finish_reason == reason
        fake.enqueue(Reply(content="cut", finish_reason=reason))
        chunks = list(client.chat.completions.create(model="fake-model", messages=USER, stream=True))
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reason


def test_extra_message_fields_pass_through(client: openai.OpenAI, fake: FakeUpstream) -> None:
    annotations = [{"type": "url_citation", "url_citation": {"start_index": 0, "end_index": 4, "url": "https://example.org", "title": "Ex"}}]
    fake.enqueue(Reply(content="Cite this", extra_message={"annotations": annotations}))
    completion = client.chat.completions.create(model="fake-model", messages=USER)
    got = completion.choices[0].message.annotations
    assert got is not None and got[0].url_citation.url == "https://example.org"


# --------------------------------------------------------------------------- malformed chunk and body shapes

GOOD_FIRST = chunk({"role": "assistant", "content": "ok"})
BAD_CHUNKS = {
    "choice-not-object": {**ENV, "choices": ["garbage"]},
    "choices-is-object": {**ENV, "choices": {"a": 1}},
    "delta-is-string": {**ENV, "choices": [{"index": 0, "delta": "text", "finish_reason": None}]},
}


def test_nonsense_usage_is_ignored_and_estimated(http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream) -> None:
    """A usage that is not an object is dropped, not fatal: the answer arrives and usage is estimated with tiktoken."""
    fake.enqueue(Reply(chunks=[GOOD_FIRST, {**ENV, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": 5}]))
    response, raw = stream_raw(http, chat_body(stream=True, stream_options={"include_usage": True}))
    assert response.status_code == 200
    events = data_events_of(raw)
    assert raw.endswith(b"data: [DONE]\n\n")
    usage = events[-2].json["usage"]
    assert usage["completion_tokens"] == 1 and usage["prompt_tokens"] > 0
    assert_still_serving(client, fake)


@pytest.mark.parametrize("bad", list(BAD_CHUNKS.values()), ids=list(BAD_CHUNKS))
def test_malformed_chunk_mid_stream_ends_with_one_error_event(http: httpx.Client, fake: FakeUpstream, bad: dict[str, Any]) -> None:
    fake.enqueue(Reply(chunks=[GOOD_FIRST, bad]))
    try:
        response, raw = stream_raw(http, chat_body(stream=True, stream_options={"include_usage": True}))
    except httpx.HTTPError as exc:
        pytest.fail(f"the relay cut the stream instead of ending it with an error event: {exc!r}")
    assert response.status_code == 200
    events = data_events_of(raw)
    assert b"[DONE]" not in raw
    assert "error" in events[-1].json and sum("error" in (e.json or {}) for e in events) == 1


@pytest.mark.parametrize("bad", list(BAD_CHUNKS.values()), ids=list(BAD_CHUNKS))
def test_malformed_chunk_mid_stream_does_not_hang_or_kill_the_server(
    http: httpx.Client, client: openai.OpenAI, fake: FakeUpstream, bad: dict[str, Any]
) -> None:
    fake.enqueue(Reply(chunks=[GOOD_FIRST, bad]))
    try:
        response, _ = stream_raw(http, chat_body(stream=True))
        assert response.status_code == 200
    except httpx.HTTPError:
        pass  # a cut connection is wrong (see the xfail above) but must not hang or take the server down
    assert_still_serving(client, fake)


@pytest.mark.parametrize(
    "choice",
    [
        {"index": 0, "message": "hi", "finish_reason": "stop"},
        {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": "lookup"}]}, "finish_reason": "tool_calls"},
    ],
    ids=["message-is-string", "function-is-string"],
)
def test_malformed_choice_in_non_streamed_body_is_502(http: httpx.Client, fake: FakeUpstream, choice: dict[str, Any]) -> None:
    body = {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [choice]}
    fake.enqueue(Reply(raw_body=json.dumps(body).encode()))
    assert_openai_error(http.post("/v1/chat/completions", json=chat_body()), 502, code="bad_upstream_response")
