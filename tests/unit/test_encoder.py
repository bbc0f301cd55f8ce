"""SSEEncoder: the chunk rules strict clients depend on, over tables and random event sequences.

The rules (OpenAI's stream as the SDKs read it): one ``id`` and ``created``
for the whole stream; ``role: "assistant"`` in the first delta of each choice
and only there; a ``finish_reason`` (and ``logprobs``) key on every choice; a
``usage: null`` key on every chunk only when ``stream_options.include_usage``
was asked for, then one usage-only chunk with ``choices: []``; ``[DONE]``
exactly once, last; a failure is one ``{"error": ...}`` event, after which the
handler stops (``failed``), so no ``[DONE]`` follows.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakes.sse import parse_sse
from toolrelay.app.encoder import DONE, KEEPALIVE, SSEEncoder
from toolrelay.app.errors import OpenAIError
from toolrelay.app.events import (
    ChoiceDelta,
    ChoiceMessage,
    Event,
    Failure,
    KeepAlive,
    ResponseMeta,
    UsageReport,
)


def run(events: list[Event], *, include_usage: bool = False, model: str = "m") -> tuple[SSEEncoder, bytes]:
    encoder = SSEEncoder(
        model=model,
        include_usage=include_usage,
        completion_id="chatcmpl-test",
        created=1700000000,
    )
    raw = b"".join(encoder.encode(e) for e in events)
    if not encoder.failed:
        raw += encoder.close()
    return encoder, raw


def chunks(raw: bytes) -> list[dict[str, Any]]:
    return [e.json for e in parse_sse(raw) if e.data is not None and not e.is_done]


# ---------------------------------------------------------------------- tables


def test_role_comes_first_once_per_choice() -> None:
    _, raw = run(
        [
            ChoiceDelta(0, {"content": "a"}),
            ChoiceDelta(0, {"content": "b"}),
            ChoiceDelta(1, {"content": "c"}),
        ]
    )
    deltas = [(c["choices"][0]["index"], c["choices"][0]["delta"]) for c in chunks(raw)]
    assert deltas[:3] == [
        (0, {"role": "assistant", "content": "a"}),
        (0, {"content": "b"}),
        (1, {"role": "assistant", "content": "c"}),
    ]


def test_a_role_the_upstream_sent_is_not_doubled() -> None:
    _, raw = run([ChoiceDelta(0, {"role": "assistant", "content": ""})])
    assert chunks(raw)[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize(
    ("events", "finishes"),
    [
        ([ChoiceDelta(0, {"content": "x"}, "length")], ["length"]),
        # An upstream that ends with [DONE] alone still closes every choice (a normal stop).
        ([ChoiceDelta(0, {"content": "x"})], ["stop"]),
        (
            [
                ChoiceDelta(0, {"content": "x"}),
                ChoiceDelta(1, {"content": "y"}, "stop"),
            ],
            ["stop", "stop"],
        ),
        (
            [ChoiceMessage(0, {"role": "assistant", "content": "whole"}, "tool_calls")],
            ["tool_calls"],
        ),
    ],
)
def test_every_choice_ends_with_a_finish_reason(events: list[Event], finishes: list[str]) -> None:
    _, raw = run(events)
    got = [c["choices"][0]["finish_reason"] for c in chunks(raw) if c["choices"][0]["finish_reason"]]
    assert got == finishes


def test_a_whole_message_streams_as_one_delta_then_its_finish() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "f", "arguments": "{}"},
            }
        ],
    }
    _, raw = run([ChoiceMessage(0, message, "tool_calls")])
    first, last = chunks(raw)
    assert first["choices"][0]["delta"] == {
        "role": "assistant",
        "tool_calls": [{"index": 0, **message["tool_calls"][0]}],
    }
    assert first["choices"][0]["finish_reason"] is None
    assert last["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }


@pytest.mark.parametrize(
    ("include_usage", "usage", "tail"),
    [
        (False, {"prompt_tokens": 3, "completion_tokens": 4}, None),
        (True, None, None),
        (
            True,
            {"prompt_tokens": 3, "completion_tokens": 4},
            {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        ),
        (
            True,
            {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 9},
            {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 9},
        ),
        (
            True,
            {"prompt_tokens": None, "completion_tokens": 2},
            {"prompt_tokens": 0, "completion_tokens": 2, "total_tokens": 2},
        ),
    ],
)
def test_usage_chunk_only_when_asked(include_usage: bool, usage: dict[str, Any] | None, tail: dict[str, Any] | None) -> None:
    events: list[Event] = [ChoiceDelta(0, {"content": "x"}, "stop")]
    if usage is not None:
        events.append(UsageReport(usage))
    _, raw = run(events, include_usage=include_usage)
    out = chunks(raw)
    if include_usage:
        assert all("usage" in c for c in out)
    else:
        assert all("usage" not in c for c in out)
    usage_chunks = [c for c in out if c["choices"] == []]
    if tail is None:
        assert usage_chunks == []
    else:
        assert usage_chunks == [out[-1]] and out[-1]["usage"] == tail


def test_keepalive_is_a_comment_and_meta_goes_on_later_chunks() -> None:
    encoder = SSEEncoder(model="m", include_usage=False)
    assert encoder.encode(KeepAlive()) == KEEPALIVE
    assert encoder.encode(ResponseMeta({"system_fingerprint": "fp_1", "invented": 1, "service_tier": None})) == b""
    chunk = orjson.loads(encoder.encode(ChoiceDelta(0, {"content": "x"}))[len(b"data: ") :])
    assert chunk["system_fingerprint"] == "fp_1" and "invented" not in chunk and "service_tier" not in chunk


def test_failure_is_one_error_event_and_no_done() -> None:
    error = OpenAIError(502, "upstream broke", code="upstream_error")
    encoder, raw = run([ChoiceDelta(0, {"content": "partial"}), Failure(error)])
    assert encoder.failed
    events = parse_sse(raw)
    assert events[-1].json == {
        "error": {
            "message": "upstream broke",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    assert not any(e.is_done for e in events)


def test_unknown_events_are_refused() -> None:
    with pytest.raises(TypeError):
        SSEEncoder(model="m", include_usage=False).encode(object())  # type: ignore[arg-type]


# ---------------------------------------------------------------------- properties

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
_delta = st.one_of(
    st.builds(lambda s: {"content": s}, _text),
    st.builds(lambda s: {"reasoning_content": s}, _text),
    st.builds(lambda s: {"refusal": s}, _text),
    st.builds(
        lambda i, s: {"tool_calls": [{"index": i, "function": {"arguments": s}}]},
        st.integers(0, 2),
        _text,
    ),
)
_event = st.one_of(
    st.builds(
        ChoiceDelta,
        index=st.integers(0, 2),
        delta=_delta,
        finish_reason=st.sampled_from([None, None, None, "stop", "length", "tool_calls"]),
    ),
    st.builds(
        UsageReport,
        usage=st.fixed_dictionaries(
            {
                "prompt_tokens": st.integers(0, 10**6),
                "completion_tokens": st.integers(0, 10**6),
            }
        ),
    ),
    st.builds(KeepAlive),
    st.builds(
        ResponseMeta,
        fields=st.fixed_dictionaries({"system_fingerprint": st.sampled_from(["fp_a", "fp_b", None])}),
    ),
)


@settings(max_examples=200, deadline=None)
@given(events=st.lists(_event, max_size=20), include_usage=st.booleans())
def test_any_stream_keeps_the_rules(events: list[Event], include_usage: bool) -> None:
    _, raw = run(events, include_usage=include_usage)
    parsed = parse_sse(raw)
    assert all(e.event is None for e in parsed)
    data = [e for e in parsed if e.data is not None]
    assert raw.endswith(DONE) and sum(e.is_done for e in data) == 1
    out = [e.json for e in data[:-1]]
    assert {(c["id"], c["created"], c["object"], c["model"]) for c in out} <= {("chatcmpl-test", 1700000000, "chat.completion.chunk", "m")}
    started: set[int] = set()
    finished: set[int] = set()
    for chunk in out:
        assert ("usage" in chunk) is include_usage
        for choice in chunk["choices"]:
            assert set(choice) == {"index", "delta", "logprobs", "finish_reason"}
            index = choice["index"]
            assert (choice["delta"].get("role") == "assistant") is (index not in started)
            started.add(index)
            if choice["finish_reason"] is not None:
                finished.add(index)
    assert finished == started  # close() finishes what the upstream left open
    usage_only = [c for c in out if c["choices"] == []]
    asked_and_known = include_usage and any(isinstance(e, UsageReport) for e in events)
    assert len(usage_only) == (1 if asked_and_known else 0)
    if usage_only:
        assert usage_only[0] is out[-1]
        last_report = [e for e in events if isinstance(e, UsageReport)][-1].usage
        assert out[-1]["usage"] == {
            **last_report,
            "total_tokens": last_report["prompt_tokens"] + last_report["completion_tokens"],
        }
