"""Unit tests of the pure upstream parser: SSE framing, chunk events, quirk repair, error mapping.

No server, no sockets: bytes and JSON values in, events out.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolrelay.app.errors import OpenAIError
from toolrelay.app.events import (
    ChoiceDelta,
    ChoiceMessage,
    Failure,
    ResponseMeta,
    UsageReport,
)
from toolrelay.app.providers.openai_parser import (
    MAX_EVENT_BYTES,
    MalformedUpstream,
    SSEChunkParser,
    events_from_body,
    events_from_chunk,
    events_from_completion,
    map_upstream_error,
    repair_tool_calls,
)

SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def sse(*chunks: Any, done: bool = True) -> bytes:
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0, **top: Any) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": index, "delta": delta, "finish_reason": finish}], **top}


def parse_all(body: bytes, piece: int | None = None) -> tuple[list[Any], SSEChunkParser]:
    parser = SSEChunkParser("up")
    events: list[Any] = []
    pieces = [body] if piece is None else [body[i : i + piece] for i in range(0, len(body), piece)]
    for raw in pieces:
        events += parser.feed(raw)
        if parser.failed:
            return events, parser
    return events + parser.end(), parser


# -- quirk repair: table of (streamed tool_calls, expected) ------------------------

REPAIR_CASES = [
    pytest.param(
        [{"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}],
        [{"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}, "index": 0}],
        id="missing-index-gets-position",
    ),
    pytest.param(
        [{"function": {"arguments": "{}"}}, {"function": {"arguments": "[]"}}],
        [{"function": {"arguments": "{}"}, "index": 0}, {"function": {"arguments": "[]"}, "index": 1}],
        id="missing-index-several",
    ),
    pytest.param(
        [{"index": "1", "function": {"arguments": "x"}}],
        [{"index": 0, "function": {"arguments": "x"}}],
        id="non-integer-index-replaced",
    ),
    pytest.param(
        [{"index": 3, "function": {"name": "f", "arguments": {"a": 1}}}],
        [{"index": 3, "function": {"name": "f", "arguments": '{"a":1}'}}],
        id="object-arguments-as-json-text",
    ),
    pytest.param(
        [{"index": 0, "function": {"arguments": None}}],
        [{"index": 0, "function": {"arguments": None}}],
        id="null-arguments-kept",
    ),
]


@pytest.mark.parametrize(("calls", "expected"), REPAIR_CASES)
def test_repair_streamed_calls(calls: list[Any], expected: list[Any]) -> None:
    assert repair_tool_calls(calls, streaming=True, seen=set()) == expected


@pytest.mark.parametrize(
    "calls",
    [
        pytest.param({"index": 0}, id="not-a-list"),
        pytest.param(["call"], id="call-not-object"),
        pytest.param([{"function": "f"}], id="function-not-object"),
    ],
)
def test_repair_refuses_malformed(calls: Any) -> None:
    with pytest.raises(MalformedUpstream):
        repair_tool_calls(calls, streaming=True, seen=set())


def test_repeated_id_type_name_sent_once() -> None:
    seen: set[tuple[int, int]] = set()
    first = {"index": 0, "id": "call_x", "type": "function", "function": {"name": "get", "arguments": '{"a"'}}
    again = {"index": 0, "id": "call_x", "type": "function", "function": {"name": "get", "arguments": ":1}"}}
    assert repair_tool_calls([first], True, seen, 0) == [first]
    assert repair_tool_calls([again], True, seen, 0) == [{"index": 0, "function": {"arguments": ":1}"}}]
    # Another choice's call 0 is another call.
    assert repair_tool_calls([again], True, seen, 1) == [again]


def test_input_is_not_mutated() -> None:
    call = {"function": {"name": "f", "arguments": {"a": 1}}}
    calls = [call]
    repair_tool_calls(calls, True, set())
    assert call == {"function": {"name": "f", "arguments": {"a": 1}}}


def test_non_streamed_calls_get_id_and_type() -> None:
    (call,) = repair_tool_calls([{"function": {"name": "f", "arguments": "{}"}}], streaming=False)
    assert call["type"] == "function"
    assert call["id"].startswith("call_") and len(call["id"]) == 29
    assert "index" not in call


@SETTINGS
@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "index": st.one_of(st.integers(0, 5), st.text(max_size=2), st.none()),
                "id": st.text(max_size=5),
                "type": st.just("function"),
                "function": st.fixed_dictionaries(
                    {},
                    optional={
                        "name": st.text(max_size=5),
                        "arguments": st.one_of(st.text(max_size=10), st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1))),
                    },
                ),
            },
        ),
        max_size=4,
    ),
    st.integers(0, 3),
)
def test_repaired_streamed_calls_are_well_formed(calls: list[dict[str, Any]], choice: int) -> None:
    """Whatever the upstream sends: integer index, string arguments, identity sent once per call."""
    seen: set[tuple[int, int]] = set()
    for call in repair_tool_calls(calls, True, seen, choice):
        assert isinstance(call["index"], int)
        assert isinstance((call.get("function") or {}).get("arguments"), (str, type(None)))
    identified = set(seen)
    # The same delta again, as a re-chunker would send it: no identity twice.
    for call in repair_tool_calls(calls, True, seen, choice):
        if (choice, call["index"]) in identified:
            assert "id" not in call and "type" not in call and "name" not in (call.get("function") or {})


# -- chunks ---------------------------------------------------------------------


def test_chunk_events() -> None:
    events = events_from_chunk(
        {"choices": [{"index": 1, "delta": {"content": "hi"}, "finish_reason": "stop", "logprobs": {"x": 1}}], "usage": {"total_tokens": 3}}
    )
    assert events == [ChoiceDelta(1, {"content": "hi"}, "stop", {"x": 1}), UsageReport({"total_tokens": 3})]


@pytest.mark.parametrize(
    ("value", "events"),
    [
        pytest.param({"choices": []}, [], id="no-choices"),
        pytest.param({"choices": None, "usage": None}, [], id="null-choices"),
        pytest.param({"choices": [{"delta": None}]}, [ChoiceDelta(0, {}, None, None)], id="null-delta-index-default"),
        pytest.param({"choices": [], "usage": {}}, [], id="empty-usage-ignored"),
        pytest.param({"choices": [], "usage": 7}, [], id="usage-not-object-ignored"),
    ],
)
def test_chunk_shapes_accepted(value: Any, events: list[Any]) -> None:
    assert events_from_chunk(value) == events


@pytest.mark.parametrize(
    "value",
    [
        pytest.param([], id="chunk-is-list"),
        pytest.param({"choices": {}}, id="choices-not-list"),
        pytest.param({"choices": [1]}, id="choice-not-object"),
        pytest.param({"choices": [{"delta": "x"}]}, id="delta-not-object"),
        pytest.param({"choices": [{"index": "0", "delta": {}}]}, id="index-not-int"),
        pytest.param({"choices": [{"delta": {"tool_calls": [3]}}]}, id="tool-call-not-object"),
    ],
)
def test_malformed_chunks_raise(value: Any) -> None:
    with pytest.raises(MalformedUpstream):
        events_from_chunk(value)


# -- the SSE stream -------------------------------------------------------------


def test_stream_events_and_meta() -> None:
    body = sse(chunk({"role": "assistant", "content": ""}, system_fingerprint="fp"), chunk({"content": "hi"}), chunk({}, "stop"))
    events, parser = parse_all(body)
    assert events == [
        ResponseMeta({"system_fingerprint": "fp"}),
        ChoiceDelta(0, {"role": "assistant", "content": ""}),
        ChoiceDelta(0, {"content": "hi"}),
        ChoiceDelta(0, {}, "stop"),
    ]
    assert parser.saw_finish and parser.saw_done and not parser.failed


@pytest.mark.parametrize(
    ("body", "complete"),
    [
        pytest.param(sse(chunk({"content": "a"}), chunk({}, "stop"), done=False), True, id="finish-without-done"),
        pytest.param(sse(chunk({"content": "a"})), True, id="done-without-finish"),
        pytest.param(sse(chunk({"content": "a"}), done=False), False, id="finish-reason-missing-and-no-done"),
        pytest.param(b"", False, id="empty-body"),
    ],
)
def test_stream_end(body: bytes, complete: bool) -> None:
    events, _ = parse_all(body)
    failures = [e for e in events if isinstance(e, Failure)]
    assert (not failures) is complete
    if not complete:
        assert failures[0].error.status == 502
        assert "ended the stream" in failures[0].error.message


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b"data: {not json\n\n", "bad_upstream_response", id="unreadable-json"),
        pytest.param(b"data: [1, 2]\n\n", "bad_upstream_response", id="chunk-not-object"),
        pytest.param(b'data: {"choices": [{"delta": 5}]}\n\n', "bad_upstream_response", id="delta-not-object"),
        pytest.param(b'data: {"error": {"message": "overloaded", "code": "busy"}}\n\n', "busy", id="error-event"),
    ],
)
def test_stream_failures_end_the_stream(body: bytes, code: str) -> None:
    before = sse(chunk({"content": "a"}), done=False)
    after = sse(chunk({"content": "never"}))
    events, parser = parse_all(before + body + after)
    assert parser.failed
    assert events[0] == ChoiceDelta(0, {"content": "a"})
    assert isinstance(events[-1], Failure) and events[-1].error.code == code
    assert len(events) == 2
    assert parser.end() == []


def test_sse_framing_details() -> None:
    body = (
        b": comment\r\n"
        b"event: message\r\n"
        b'data:{"choices":[{"delta":\r\n'
        b'data: {"content":"x"}}]}\r\n'
        b"\r\n"
        b"\n\n"  # blank lines without data
        b"data: [DONE]\n\n"
    )
    events, parser = parse_all(body)
    assert events == [ChoiceDelta(0, {"content": "x"})]
    assert parser.saw_done


@SETTINGS
@given(st.lists(st.text(max_size=20), min_size=1, max_size=8), st.integers(1, 64))
def test_split_anywhere_gives_the_same_events(texts: list[str], piece: int) -> None:
    """Reads can cut the byte stream anywhere (inside a line, inside UTF-8): same events."""
    body = sse(*[chunk({"content": t}) for t in texts], chunk({}, "stop"))
    whole, _ = parse_all(body)
    split, _ = parse_all(body, piece)
    assert split == whole
    assert [e.delta.get("content") for e in whole if isinstance(e, ChoiceDelta)][:-1] == texts


@SETTINGS
@given(st.binary(max_size=300), st.integers(1, 50))
def test_arbitrary_bytes_never_raise(body: bytes, piece: int) -> None:
    events, _ = parse_all(body, piece)
    assert all(isinstance(e, (ChoiceDelta, UsageReport, ResponseMeta, Failure)) for e in events)
    assert sum(isinstance(e, Failure) for e in events) <= 1


def test_streamed_repeated_identity_across_chunks() -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{"}}
    body = sse(chunk({"tool_calls": [call]}), chunk({"tool_calls": [{**call, "function": {"name": "f", "arguments": "}"}}]}), chunk({}, "tool_calls"))
    events, _ = parse_all(body)
    deltas = [e.delta["tool_calls"][0] for e in events if isinstance(e, ChoiceDelta) and "tool_calls" in e.delta]
    assert deltas == [call, {"index": 0, "function": {"arguments": "}"}}]


# -- non-streamed bodies ----------------------------------------------------------


def test_completion_events() -> None:
    payload = {
        "system_fingerprint": "fp",
        "service_tier": None,
        "choices": [
            {"message": {"role": "assistant", "content": "hi"}},
            {"index": "x", "message": {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}, "finish_reason": "tool_calls"},
        ],
        "usage": {"total_tokens": 1},
    }
    events = events_from_completion(payload, "up")
    assert events[0] == ResponseMeta({"system_fingerprint": "fp"})
    assert events[1] == ChoiceMessage(0, {"role": "assistant", "content": "hi"}, "stop")
    assert isinstance(events[2], ChoiceMessage) and events[2].index == 1 and events[2].finish_reason == "tool_calls"
    (call,) = events[2].message["tool_calls"]
    assert call["function"]["arguments"] == "{}" and call["type"] == "function" and call["id"].startswith("call_")
    assert events[3] == UsageReport({"total_tokens": 1})


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[]", id="not-object"),
        pytest.param(b'{"choices": {}}', id="choices-not-list"),
        pytest.param(b'{"choices": [1]}', id="choice-not-object"),
        pytest.param(b'{"choices": [{"message": [1]}]}', id="message-not-object"),
        pytest.param(b'{"choices": [{"message": {"tool_calls": {}}}]}', id="tool-calls-not-list"),
    ],
)
def test_malformed_bodies_are_502(raw: bytes) -> None:
    with pytest.raises(OpenAIError) as caught:
        events_from_body(raw, "up")
    assert caught.value.status == 502 and caught.value.code == "bad_upstream_response"


# -- error mapping ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "raw", "headers", "expect"),
    [
        pytest.param(
            400,
            b'{"error": {"message": "bad", "type": "invalid_request_error", "param": "x", "code": null}}',
            {},
            (400, "bad", "invalid_request_error", "x", None),
            id="openai-shape",
        ),
        pytest.param(401, b"{}", {}, (502, None, "upstream_error", None, "upstream_auth_error"), id="our-credentials"),
        pytest.param(403, b"{}", {}, (502, None, "upstream_error", None, "upstream_auth_error"), id="forbidden-credentials"),
        pytest.param(404, b"{}", {}, (404, None, None, None, "model_not_found"), id="not-found"),
        pytest.param(429, b"{}", {}, (429, None, "rate_limit_error", None, None), id="rate-limited"),
        pytest.param(500, b'{"error": "boom"}', {}, (500, "boom", "server_error", None, None), id="string-error"),
        pytest.param(503, b"<html>", {}, (503, "The upstream provider 'up' returned HTTP 503.", "server_error", None, None), id="html-body"),
        pytest.param(302, b"", {}, (502, None, None, None, None), id="odd-status"),
        pytest.param(400, b'{"error": {"code": 42}}', {}, (400, None, None, None, "42"), id="numeric-code"),
    ],
)
def test_map_upstream_error(status: int, raw: bytes, headers: dict[str, str], expect: tuple[Any, ...]) -> None:
    err = map_upstream_error(status, raw, headers, "up")
    want_status, message, err_type, param, code = expect
    assert err.status == want_status
    if message is not None:
        assert err.message == message
    assert (err.param, err.code) == (param, code)
    if err_type is not None:
        assert err.type == err_type


@pytest.mark.parametrize(
    ("status", "headers", "kept"),
    [
        pytest.param(429, {}, {"retry-after": "1", "retry-after-ms": "1000"}, id="defaults"),
        pytest.param(503, {"retry-after": "2.5"}, {"retry-after": "2.5", "retry-after-ms": "2500"}, id="seconds-to-ms"),
        pytest.param(429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, id="http-date"),
        pytest.param(400, {"x-should-retry": "false", "x-other": "1"}, {"x-should-retry": "false"}, id="only-retry-headers"),
    ],
)
def test_retry_headers(status: int, headers: dict[str, str], kept: dict[str, str]) -> None:
    assert map_upstream_error(status, b"{}", headers, "up").headers == kept


# -- bounds --------------------------------------------------------------------------


@pytest.mark.parametrize("framing", [b'data: {"a": "', b": a comment that never ends "], ids=["data-line", "comment-line"])
def test_a_line_that_never_ends_fails_the_stream_at_the_event_bound(framing: bytes) -> None:
    parser = SSEChunkParser("up")
    events: list[Any] = parser.feed(sse(chunk({"role": "assistant", "content": "hi"}), done=False) + framing)
    piece = b"x" * (1024 * 1024)
    fed = len(framing)
    while not parser.failed and fed < 2 * MAX_EVENT_BYTES:
        events += parser.feed(piece)
        fed += len(piece)
    assert parser.failed and fed <= MAX_EVENT_BYTES + len(piece)
    assert isinstance(events[0], ChoiceDelta)  # what came before the endless line is kept
    failure = events[-1]
    assert isinstance(failure, Failure) and failure.error.status == 502 and "larger than" in failure.error.message


def test_many_events_in_one_read_and_split_anywhere_give_the_same_events() -> None:
    body = sse(*(chunk({"content": f"t{i} "}) for i in range(200)), chunk({}, "stop"))
    whole, _ = parse_all(body)
    assert [e.delta.get("content") for e in whole if isinstance(e, ChoiceDelta)][:3] == ["t0 ", "t1 ", "t2 "]
    for piece in (1, 7, 64, 4096):
        assert parse_all(body, piece)[0] == whole
    crlf, _ = parse_all(body.replace(b"\n", b"\r\n"))
    assert crlf == whole
