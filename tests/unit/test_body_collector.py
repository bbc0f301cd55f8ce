"""BodyCollector folds a stream's events into the body the OpenAI SDK would have accumulated.

A non-streamed answer is collected from the same events a stream is made of,
so it must equal what a client gets by streaming and accumulating. The
reference is the installed ``openai`` package's own accumulator
(``openai.lib.streaming.chat._completions.ChatCompletionStreamState``), fed
the chunks :class:`SSEEncoder` writes for the same events, on random
interleavings of content, refusal, reasoning and tool-call fragments over
several choices.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat._completions import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from fakes.sse import json_chunks
from toolrelay.app.encoder import BodyCollector, SSEEncoder
from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Event, UsageReport

_piece = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
_name = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)


@st.composite
def streams(draw: st.DrawFn) -> list[ChoiceDelta]:
    """Deltas as upstreams send them: choices and tool calls open in index order, a call's
    ``id``/``type`` only on its first fragment, then name and argument pieces in any order."""
    choices = draw(st.integers(1, 3))
    opened = 0  # choices that have sent something
    calls = [0] * choices  # tool calls opened per choice
    events: list[ChoiceDelta] = []
    for _ in range(draw(st.integers(0, 25))):
        index = draw(st.integers(0, min(opened, choices - 1)))
        opened = max(opened, index + 1)
        kind = draw(
            st.sampled_from(
                [
                    "content",
                    "refusal",
                    "reasoning_content",
                    "open_call",
                    "arguments",
                    "name",
                ]
            )
        )
        if kind in ("arguments", "name") and calls[index] == 0:
            kind = "open_call"
        if kind == "open_call":
            call = {
                "index": calls[index],
                "id": f"call_{index}_{calls[index]}",
                "type": "function",
                "function": {"name": draw(_name), "arguments": draw(_piece)},
            }
            calls[index] += 1
            delta: dict[str, Any] = {"tool_calls": [call]}
        elif kind in ("arguments", "name"):
            delta = {
                "tool_calls": [
                    {
                        "index": draw(st.integers(0, calls[index] - 1)),
                        "function": {kind: draw(_piece)},
                    }
                ]
            }
        else:
            delta = {kind: draw(_piece)}
        events.append(ChoiceDelta(index, delta))
    for index in range(opened):
        events.append(ChoiceDelta(index, {}, draw(st.sampled_from(["stop", "length", "tool_calls"]))))
    return events


def sdk_accumulated(events: list[Event]) -> dict[int, dict[str, Any]]:
    """What the OpenAI SDK accumulates from the stream :class:`SSEEncoder` writes for ``events``."""
    encoder = SSEEncoder(model="m", include_usage=False)
    raw = b"".join(encoder.encode(e) for e in events) + encoder.close()
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in json_chunks(raw):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    snapshot = state.current_completion_snapshot
    return {c.index: {"message": c.message.to_dict(), "finish_reason": c.finish_reason} for c in snapshot.choices}


def collected(events: list[Event]) -> dict[int, dict[str, Any]]:
    collector = BodyCollector()
    for event in events:
        collector.add(event)
    body = collector.body(model="m")
    return {c["index"]: {"message": c["message"], "finish_reason": c["finish_reason"]} for c in body["choices"]}


def comparable(message: dict[str, Any]) -> dict[str, Any]:
    """The fields both sides state: text fields that were sent, and the tool calls."""
    out = {k: v for k, v in message.items() if k not in ("tool_calls", "parsed") and v is not None}
    calls = message.get("tool_calls") or []
    out["tool_calls"] = [(c["id"], c["type"], c["function"]["name"], c["function"]["arguments"]) for c in calls]
    return out


@settings(max_examples=300, deadline=None)
@given(events=streams())
def test_collector_matches_the_sdk_accumulator(events: list[ChoiceDelta]) -> None:
    if not events:
        return
    ours = collected(events)
    theirs = sdk_accumulated(events)
    assert sorted(ours) == sorted(theirs)
    for index, choice in theirs.items():
        assert ours[index]["finish_reason"] == choice["finish_reason"]
        assert comparable(ours[index]["message"]) == comparable(choice["message"])


def test_a_whole_message_replaces_what_was_collected() -> None:
    collector = BodyCollector()
    collector.add(ChoiceDelta(0, {"content": "partial"}))
    collector.add(ChoiceMessage(0, {"content": "whole"}, "stop"))
    collector.add(UsageReport({"prompt_tokens": 2, "completion_tokens": 3}))
    body = collector.body(model="m", completion_id="chatcmpl-x", created=1)
    assert body == {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "whole", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
    }


def test_logprobs_content_lists_are_concatenated() -> None:
    collector = BodyCollector()
    collector.add(ChoiceDelta(0, {"content": "a"}, logprobs={"content": [{"token": "a"}], "refusal": None}))
    collector.add(ChoiceDelta(0, {"content": "b"}, "stop", logprobs={"content": [{"token": "b"}]}))
    (choice,) = collector.body(model="m")["choices"]
    assert choice["logprobs"] == {
        "content": [{"token": "a"}, {"token": "b"}],
        "refusal": None,
    }
    assert choice["message"]["content"] == "ab"
