"""The turn readers (agent/turns.py) over plain lists of events: no server, no upstream."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from toolrelay.agent.request import ToolOffer
from toolrelay.agent.turns import ConstrainedTurnReader, NativeTurnReader, read_events
from toolrelay.app.errors import OpenAIError
from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Event, Failure, UsageReport

TIME_TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def offer(*, tools: list[dict[str, Any]] | None = None, builtins: tuple[str, ...] = ("current_time",), **payload: Any) -> ToolOffer:
    return ToolOffer.for_request({"tools": tools or [], **payload}, list(builtins))


def ids() -> Any:
    counter = itertools.count()
    return lambda: f"id{next(counter)}"


def text(*pieces: str, finish: str = "stop") -> list[Event]:
    return [ChoiceDelta(0, {"role": "assistant", "content": ""}), *(ChoiceDelta(0, {"content": p}) for p in pieces), ChoiceDelta(0, {}, finish_reason=finish)]


def fragment(index: int, *, id: str | None = None, name: str | None = None, arguments: str | None = None) -> ChoiceDelta:
    function = {k: v for k, v in (("name", name), ("arguments", arguments)) if v is not None}
    call: dict[str, Any] = {"index": index, "function": function}
    if id is not None:
        call |= {"id": id, "type": "function"}
    return ChoiceDelta(0, {"tool_calls": [call]})


def contents(out: list[ChoiceDelta]) -> str:
    return "".join(d.delta.get("content") or "" for d in out)


def client_calls(out: list[ChoiceDelta]) -> list[dict[str, Any]]:
    return [c for d in out for c in d.delta.get("tool_calls") or ()]


@dataclass
class NativeCase:
    name: str
    events: list[Event]
    offer: ToolOffer = field(default_factory=offer)
    streaming: bool = True
    final: bool = False
    # Expected:
    streamed: str = ""
    content: str = ""
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, arguments)
    client_deltas: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = "stop"
    usage: dict[str, Any] | None = None
    reasoning: str = ""


NATIVE_CASES = [
    NativeCase("text streamed as it comes", text("Hello", ", world"), streamed="Hello, world", content="Hello, world"),
    NativeCase("text not streamed comes once at the end", text("Hello", ", world"), streaming=False, streamed="Hello, world", content="Hello, world"),
    NativeCase("usage is read", [*text("ok"), UsageReport(USAGE)], streamed="ok", content="ok", usage=USAGE),
    NativeCase("other choices are ignored", [ChoiceDelta(1, {"content": "other"}), *text("mine")], streamed="mine", content="mine"),
    NativeCase(
        "built-in call split across chunks",
        [
            fragment(0, id="up_1", name="current_"),
            fragment(0, name="time"),
            fragment(0, arguments='{"timezone": '),
            fragment(0, arguments='"UTC"}'),
            ChoiceDelta(0, {}, finish_reason="tool_calls"),
        ],
        calls=[("builtin", "current_time", '{"timezone": "UTC"}')],
        finish_reason="tool_calls",
    ),
    NativeCase(
        "client calls streamed once named, re-indexed from 0, arguments as they come",
        [
            fragment(3, id="up_a", name="current_time", arguments="{}"),
            fragment(5, id="up_b", name="lookup", arguments='{"q": '),
            fragment(5, arguments='"x"}'),
            ChoiceDelta(0, {}, finish_reason="tool_calls"),
        ],
        offer=offer(tools=[TIME_TOOL]),
        calls=[("builtin", "current_time", "{}"), ("client", "lookup", '{"q": "x"}')],
        client_deltas=[
            {"index": 0, "id": "id0", "type": "function", "function": {"name": "lookup", "arguments": '{"q": '}},
            {"index": 0, "function": {"arguments": '"x"}'}},
        ],
        finish_reason="tool_calls",
    ),
    NativeCase(
        "parallel_tool_calls false keeps the first client call only",
        [fragment(0, id="a", name="lookup", arguments="{}"), fragment(1, id="b", name="lookup", arguments="{}")],
        offer=offer(tools=[TIME_TOOL], parallel_tool_calls=False),
        calls=[("client", "lookup", "{}")],
        client_deltas=[{"index": 0, "id": "id0", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        finish_reason=None,
    ),
    NativeCase(
        "unknown tool is kept, to be answered with an error",
        [fragment(0, id="a", name="nope", arguments="{}")],
        calls=[("unknown", "nope", "{}")],
        finish_reason=None,
    ),
    NativeCase(
        "a final turn's calls are ignored",
        [fragment(0, id="a", name="current_time", arguments="{}"), *text("done")],
        final=True,
        streamed="done",
        content="done",
    ),
    NativeCase(
        "JSON answer to a stream request (ChoiceMessage)",
        [ChoiceMessage(0, {"role": "assistant", "content": "whole answer", "refusal": None}, "stop"), UsageReport(USAGE)],
        streamed="whole answer",
        content="whole answer",
        usage=USAGE,
    ),
    NativeCase(
        "JSON body with a tool call (ChoiceMessage)",
        [
            ChoiceMessage(
                0,
                {"role": "assistant", "content": None, "tool_calls": [{"id": "u1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
                "tool_calls",
            )
        ],
        offer=offer(tools=[TIME_TOOL]),
        calls=[("client", "lookup", "{}")],
        client_deltas=[{"index": 0, "id": "id0", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        finish_reason="tool_calls",
    ),
    NativeCase(
        "textual call is held back and run",
        text('<tool_call>{"name": "current_time", "arguments": {}}', "</tool_call>"),
        calls=[("builtin", "current_time", "{}")],
    ),
    NativeCase(
        "JSON that names no offered tool is the answer",
        text('{"name": "other", "arguments": {}}'),
        streamed='{"name": "other", "arguments": {}}',
        content='{"name": "other", "arguments": {}}',
    ),
    NativeCase(
        "words beside calls are a reasoning note when not streaming",
        [ChoiceDelta(0, {"content": "Let me check."}), fragment(0, id="a", name="current_time", arguments="{}")],
        streaming=False,
        content="Let me check.",
        reasoning="Let me check.\n",
        calls=[("builtin", "current_time", "{}")],
        finish_reason=None,
    ),
    NativeCase(
        "reasoning and refusal pass through",
        [ChoiceDelta(0, {"reasoning": "hmm"}), ChoiceDelta(0, {"refusal": "no"}, finish_reason="stop")],
        reasoning="hmm",
    ),
]


@pytest.mark.parametrize("case", NATIVE_CASES, ids=lambda c: c.name)
def test_native_turn_reader(case: NativeCase) -> None:
    reader = NativeTurnReader(case.offer, final=case.final, streaming=case.streaming, mint_id=ids())
    out, turn = read_events(reader, case.events)
    assert contents(out) == case.streamed
    assert turn.content == case.content
    assert [(c.kind, c.name, c.arguments) for c in turn.calls] == case.calls
    assert client_calls(out) == case.client_deltas
    assert turn.finish_reason == case.finish_reason
    assert turn.usage == case.usage
    assert "".join(d.delta.get("reasoning_content") or "" for d in out) == case.reasoning
    for call in turn.calls:
        assert call.id  # the upstream's, or minted
        assert (call.client_id != "") == (call.kind == "client")


def test_native_reader_keeps_upstream_ids_and_shows_minted_ones() -> None:
    reader = NativeTurnReader(offer(tools=[TIME_TOOL]), final=False, streaming=True, mint_id=ids())
    out, turn = read_events(reader, [fragment(0, id="call_0", name="lookup", arguments="{}")])
    assert turn.calls[0].id == "call_0"  # the history sent upstream keeps the upstream's
    assert turn.calls[0].client_id == "id0" == client_calls(out)[0]["id"]


def test_native_reader_separates_the_next_turn_after_words_beside_calls() -> None:
    events = [ChoiceDelta(0, {"content": "Checking."}), fragment(0, id="a", name="current_time", arguments="{}")]
    _, turn = read_events(NativeTurnReader(offer(), final=False, streaming=True), events)
    assert turn.separate_next
    out, _ = read_events(NativeTurnReader(offer(), final=False, streaming=True, separate_first=True), text("Answer"))
    assert contents(out) == "\n\nAnswer"


def test_readers_raise_a_failure() -> None:
    error = OpenAIError(502, "upstream went away")
    for reader in (NativeTurnReader(offer(), final=False, streaming=True), ConstrainedTurnReader(offer(), final=False)):
        with pytest.raises(OpenAIError) as caught:
            read_events(reader, [ChoiceDelta(0, {"content": "a"}), Failure(error)])
        assert caught.value is error


@dataclass
class ConstrainedCase:
    name: str
    pieces: list[str]
    offer: ToolOffer = field(default_factory=offer)
    final: bool = False
    # Expected:
    streamed_while_reading: str = ""
    streamed: str = ""
    content: str = ""
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    client_deltas: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = "stop"


JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object", "properties": {"city": {"type": "string"}}}}}

CONSTRAINED_CASES = [
    ConstrainedCase(
        "answer streamed while its JSON is generated",
        ['{"ans', 'wer": "Hel', 'lo\\nthere"', "}"],
        streamed_while_reading="Hello\nthere",
        streamed="Hello\nthere",
        content="Hello\nthere",
    ),
    ConstrainedCase(
        "answer after other keys comes once at the end",
        ['{"x": 1, "answer": "late"}'],
        streamed="late",
        content="late",
    ),
    ConstrainedCase(
        "built-in call",
        ['{"tool": "current_time", ', '"arguments": {"timezone": "UTC"}}'],
        calls=[("builtin", "current_time", '{"timezone":"UTC"}')],
        finish_reason="tool_calls",
    ),
    ConstrainedCase(
        "client call is shown with a minted id",
        ['{"tool": "lookup", "arguments": {}}'],
        offer=offer(tools=[TIME_TOOL]),
        calls=[("client", "lookup", "{}")],
        client_deltas=[{"index": 0, "id": "id1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        finish_reason="tool_calls",
    ),
    ConstrainedCase(
        "client response_format: the answer is the JSON value, streamed verbatim",
        ['{"answer": {"ci', 'ty": "Paris"}}'],
        offer=offer(response_format=JSON_FORMAT),
        streamed_while_reading='{"city": "Paris"}',
        streamed='{"city": "Paris"}',
        content='{"city": "Paris"}',
    ),
    ConstrainedCase(
        "an answer cut off by max_tokens keeps what was said",
        ['{"answer": "half a sen'],
        streamed_while_reading="half a sen",
        streamed="half a sen",
        content="half a sen",
        finish_reason="length",
    ),
    ConstrainedCase(
        "a step ignoring the schema is read leniently",
        ['<tool_call>{"name": "current_time", "arguments": {}}</tool_call>'],
        calls=[("builtin", "current_time", "{}")],
        finish_reason="tool_calls",
    ),
    ConstrainedCase("plain text is the answer", ["Just ", "text."], streamed="Just text.", content="Just text."),
    ConstrainedCase(
        "a final turn does not call",
        ['{"tool": "current_time", "arguments": {}}'],
        final=True,
        streamed='{"tool": "current_time", "arguments": {}}',
        content='{"tool": "current_time", "arguments": {}}',
    ),
]


@pytest.mark.parametrize("case", CONSTRAINED_CASES, ids=lambda c: c.name)
def test_constrained_turn_reader(case: ConstrainedCase) -> None:
    reader = ConstrainedTurnReader(case.offer, final=case.final, mint_id=ids())
    events: list[Event] = [ChoiceDelta(0, {"content": p}) for p in case.pieces]
    if case.finish_reason == "stop":
        events.append(ChoiceDelta(0, {}, finish_reason="stop"))
    events.append(UsageReport(USAGE))
    live = [d for e in events for d in reader.feed(e)]
    tail, turn = reader.finish()
    assert contents(live) == case.streamed_while_reading
    assert contents(live + tail) == case.streamed
    assert turn.content == case.content
    assert turn.raw_text == "".join(case.pieces)
    assert [(c.kind, c.name, c.arguments) for c in turn.calls] == case.calls
    assert client_calls(live + tail) == case.client_deltas
    assert turn.finish_reason == case.finish_reason
    assert turn.usage == USAGE
