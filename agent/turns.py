"""Reading one model call's events into what the turn produced.

A turn reader is fed the :mod:`app.events` events of one upstream call, one
at a time, and answers with the deltas to stream to the client now (answer
text, refusals, reasoning, client tool calls as soon as their name is known);
:meth:`finish` returns the last deltas and the :class:`Turn` (text, calls,
finish reason, usage). Readers do no I/O and keep no state between turns, so
they are tested over plain lists of events (:func:`read_events`).

- :class:`NativeTurnReader`: models with native ``tool_calls``, plus calls a
  model wrote as text (``<tool_call>``, fenced or bare JSON: agent/parsing.py).
- :class:`ConstrainedTurnReader`: models answering one JSON step per turn
  (agent/constrained.py), the answer streamed while its JSON is generated.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from toolrelay.agent.constrained import AnswerStreamer, JsonAnswerStreamer, parse_step
from toolrelay.agent.parsing import TextGate, parse_tool_calls
from toolrelay.agent.request import ToolOffer
from toolrelay.app.accumulate import ChoiceAccumulator, ToolCallPieces
from toolrelay.app.events import (
    ChoiceDelta,
    ChoiceMessage,
    Event,
    Failure,
    UsageReport,
    message_as_delta,
)
from toolrelay.app.ids import new_tool_call_id

__all__ = ["Call", "ConstrainedTurnReader", "NativeTurnReader", "Turn", "TurnReader", "read_events"]

_NOTHING: tuple[ChoiceDelta, ...] = ()
# Kinds of calls a turn hands to the loop; "ignored" ones are dropped.
_KEPT_KINDS = ("builtin", "client", "unknown")


@dataclass(slots=True)
class Call:
    id: str
    name: str
    arguments: str
    kind: str  # "builtin" | "client" | "unknown"
    # Client calls: the id the client sees, minted here. ``id`` stays the
    # upstream's, which the history sent upstream keeps (issue 10 item 14).
    client_id: str = ""


@dataclass(slots=True)
class Turn:
    content: str
    calls: list[Call]
    finish_reason: str | None
    usage: dict[str, Any] | None
    raw_text: str = ""  # constrained mode: the JSON step the model wrote
    # Streaming: words beside the turn's tool calls were streamed; the next turn's text starts apart from them.
    separate_next: bool = False


class TurnReader(abc.ABC):
    """What both readers share: the first choice's deltas, the usage, a failure raised."""

    __slots__ = ("finish_reason", "usage")

    def __init__(self) -> None:
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def feed(self, event: Event) -> Sequence[ChoiceDelta]:
        """The deltas to stream now for ``event``; raises the error of a ``Failure``."""
        # Subclasses read the first choice's ChoiceDelta themselves, in one call
        # per event (the hot path: one per streamed token), and pass the rest here.
        return self._other(event)

    def _other(self, event: Event) -> Sequence[ChoiceDelta]:
        kind = type(event)
        if kind is ChoiceMessage:
            # The upstream answered our streaming request with one JSON body
            # (issue 10 item 22): read it as the stream proxy mode would send.
            if event.index == 0:  # type: ignore[union-attr]
                return self.feed(ChoiceDelta(0, message_as_delta(event.message), event.finish_reason, event.logprobs))  # type: ignore[union-attr]
        elif kind is UsageReport:
            self.usage = event.usage  # type: ignore[union-attr]
        elif kind is Failure:
            raise event.error  # type: ignore[union-attr]
        return _NOTHING

    @abc.abstractmethod
    def finish(self) -> tuple[list[ChoiceDelta], Turn]:
        """The deltas still to stream and the turn; call once, after the last event."""


def read_events(reader: TurnReader, events: Iterable[Event]) -> tuple[list[ChoiceDelta], Turn]:
    """Every delta ``reader`` streams for ``events``, and the turn."""
    out: list[ChoiceDelta] = []
    for event in events:
        out.extend(reader.feed(event))
    tail, turn = reader.finish()
    out.extend(tail)
    return out, turn


# -- native tool calls ---------------------------------------------------------


class _StreamedCall(ToolCallPieces):
    """A tool call of the turn: its fragments merged by the one accumulator
    (:class:`app.accumulate.ChoiceAccumulator`), plus the reader's own state:
    how the call counts and what the client was shown of it."""

    __slots__ = ("kind", "client_index", "client_id", "announced")

    def __init__(self, call_id: str = "", call_type: str = "function") -> None:
        super().__init__(call_id, call_type)
        self.kind: str | None = None
        self.client_index = -1
        self.client_id = ""
        self.announced = False


class NativeTurnReader(TurnReader):
    """A native-mode turn: streams text as it comes, client calls as soon as their name is known.

    Client calls are re-indexed 0..n-1 and get ids minted here (``mint_id``);
    with ``parallel_tool_calls: false`` only the first one counts. Text that
    could still be a textual tool call is held back (:class:`TextGate`) and
    parsed at the end. Not streaming, the text comes once at the end: as the
    answer, or as a reasoning note when the turn also called tools.
    """

    __slots__ = ("_client_count", "_deltas", "_gate", "_mint_id", "_offer", "_separate", "_shown", "_streaming", "final")

    def __init__(self, offer: ToolOffer, *, final: bool, streaming: bool, separate_first: bool = False, mint_id: Callable[[], str] = new_tool_call_id) -> None:
        super().__init__()
        self._offer = offer
        self.final = final
        self._streaming = streaming
        # Set when the previous turn streamed words beside its calls.
        self._separate = separate_first
        self._mint_id = mint_id
        # No names in a final turn: nothing it writes is run as a call, so nothing is held back.
        self._gate = TextGate(offer.required_client_names if final else {*offer.builtin_names, *offer.client_names})
        self._shown: list[str] = []
        # Only the tool calls are merged here: the text goes through the gate.
        self._deltas = ChoiceAccumulator(_StreamedCall)
        self._client_count = 0

    def _answer_text(self, text: str) -> ChoiceDelta:
        if self._separate:
            self._separate = False
            text = "\n\n" + text
        return ChoiceDelta(0, {"content": text})

    def _announce(self, call: _StreamedCall, out: list[ChoiceDelta]) -> None:
        if call.kind is None:
            call.kind = self._offer.classify(call.name, self.final)
            if call.kind == "client":
                if self._offer.parallel_client_calls or self._client_count == 0:
                    call.client_index = self._client_count
                    self._client_count += 1
                else:
                    call.kind = "ignored"
        if call.kind == "client" and not call.announced:
            call.announced = True
            call.client_id = self._mint_id()
            out.append(
                ChoiceDelta(
                    0,
                    {
                        "tool_calls": [
                            {"index": call.client_index, "id": call.client_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                        ]
                    },
                )
            )

    def feed(self, event: Event) -> Sequence[ChoiceDelta]:
        if type(event) is not ChoiceDelta or event.index != 0:
            return self._other(event)
        delta = event.delta
        out: list[ChoiceDelta] = []
        text = delta.get("content")
        if text:
            visible = self._gate.feed(text)
            if visible and self._streaming:
                self._shown.append(visible)
                out.append(self._answer_text(visible) if self._separate else ChoiceDelta(0, {"content": visible}))
        refusal = delta.get("refusal")
        if refusal:
            out.append(ChoiceDelta(0, {"refusal": refusal}))
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            out.append(ChoiceDelta(0, {"reasoning_content": reasoning, "reasoning": reasoning}))
        for fragment in delta.get("tool_calls") or ():
            call, started, arguments = self._deltas.merge_tool_call(fragment)
            if started:
                # A new call starts: the previous ones' names are complete.
                for earlier in self._deltas.tool_calls.values():
                    if earlier is not call and earlier.name_pieces:
                        self._announce(earlier, out)
            if arguments:
                if call.kind is None and call.name_pieces:
                    self._announce(call, out)
                elif call.kind == "client" and call.announced:
                    out.append(ChoiceDelta(0, {"tool_calls": [{"index": call.client_index, "function": {"arguments": arguments}}]}))
        if event.finish_reason:
            self.finish_reason = event.finish_reason
        return out

    def finish(self) -> tuple[list[ChoiceDelta], Turn]:
        out: list[ChoiceDelta] = []
        streamed = self._deltas.tool_calls.values()
        for call in streamed:
            if call.name_pieces:
                self._announce(call, out)
        calls: list[Call] = []
        for c in streamed:
            if c.name_pieces and c.kind in _KEPT_KINDS:
                c.id = c.id or self._mint_id()
                calls.append(Call(c.id, c.name, c.arguments or "{}", c.kind, c.client_id))  # type: ignore[arg-type]
        gate = self._gate
        held = gate.rest()
        call_text = ""
        offer = self._offer
        if held and (not self.final or offer.required_client_names):
            parsed = parse_tool_calls(held, {*offer.builtin_names, *offer.client_names})
            if parsed:
                call_text, held = held, ""
                for p in parsed:
                    textual = _StreamedCall()
                    textual.name_pieces.append(p.name)
                    textual.argument_pieces.append(p.arguments)
                    self._announce(textual, out)
                    if textual.kind in _KEPT_KINDS:
                        textual.id = textual.id or self._mint_id()
                        calls.append(Call(textual.id, textual.name, p.arguments, textual.kind, textual.client_id))  # type: ignore[arg-type]
        if self._streaming:
            if held:
                out.append(self._answer_text(held))
            text = "".join(self._shown) + held
            # Words beside tool calls were already streamed; keep the next turn's apart from them.
            separate_next = self._separate or bool(calls and text.strip())
            return out, Turn(text, calls, self.finish_reason, self.usage, separate_next=separate_next)
        text = gate.text[: len(gate.text) - len(call_text)] if call_text else gate.text
        if calls:
            # Words the model said beside its tool calls are a step, not the answer.
            if text.strip():
                note = text.strip() + "\n"
                out.append(ChoiceDelta(0, {"reasoning_content": note, "reasoning": note}))
        elif text:
            out.append(ChoiceDelta(0, {"content": text}))
        return out, Turn(text, calls, self.finish_reason, self.usage)


# -- constrained JSON steps --------------------------------------------------------


class ConstrainedTurnReader(TurnReader):
    """A constrained-mode turn: one JSON step, its answer streamed while it is generated.

    A step the upstream did not shape as asked is read leniently (a textual
    tool call), else it is the answer as written.
    """

    __slots__ = ("_json_answer", "_mint_id", "_offer", "_streamer", "final")

    def __init__(self, offer: ToolOffer, *, final: bool, mint_id: Callable[[], str] = new_tool_call_id) -> None:
        super().__init__()
        self._offer = offer
        self.final = final
        self._mint_id = mint_id
        self._json_answer = offer.answer_schema is not None
        self._streamer: AnswerStreamer | JsonAnswerStreamer = JsonAnswerStreamer() if self._json_answer else AnswerStreamer()

    def feed(self, event: Event) -> Sequence[ChoiceDelta]:
        if type(event) is not ChoiceDelta or event.index != 0:
            return self._other(event)
        if event.finish_reason:
            self.finish_reason = event.finish_reason
        text = event.delta.get("content")
        if text:
            answer_piece = self._streamer.feed(text)
            if answer_piece:
                return (ChoiceDelta(0, {"content": answer_piece}),)
        return _NOTHING

    def _call(self, name: str, arguments: str) -> Call:
        return Call(self._mint_id(), name, arguments, self._offer.classify(name, self.final), self._mint_id())

    def finish(self) -> tuple[list[ChoiceDelta], Turn]:
        streamer, offer, final, usage = self._streamer, self._offer, self.final, self.usage
        raw = streamer.buffer
        step = parse_step(raw, json_answer=self._json_answer)
        if step is not None and step[0] == "answer":
            if not streamer._started:
                return [ChoiceDelta(0, {"content": step[1]})], Turn(step[1], [], self.finish_reason, usage, raw_text=raw)
            return [], Turn(streamer.answer, [], self.finish_reason, usage, raw_text=raw)
        if streamer._started:
            # The answer began streaming but the JSON never closed (max_tokens): keep what was said.
            return [], Turn(streamer.answer, [], self.finish_reason or "length", usage, raw_text=raw)
        if step is not None and step[0] == "call" and (not final or offer.required_client_names):
            name, arguments = step[1]
            call = self._call(name, arguments)
            out = []
            if call.kind == "client":
                out.append(
                    ChoiceDelta(0, {"tool_calls": [{"index": 0, "id": call.client_id, "type": "function", "function": {"name": name, "arguments": arguments}}]})
                )
            return out, Turn("", [call], "tool_calls", usage, raw_text=raw)
        known = [*offer.builtin_names, *(offer.client_names if offer.client_choice != "none" else ())]
        parsed = parse_tool_calls(raw, known) if not final or offer.required_client_names else []
        if parsed:
            calls = [self._call(p.name, p.arguments) for p in parsed]
            out = [
                ChoiceDelta(
                    0,
                    {"tool_calls": [{"index": index, "id": call.client_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
                )
                for index, call in enumerate(c for c in calls if c.kind == "client")
            ]
            return out, Turn("", calls, "tool_calls", usage, raw_text=raw)
        return [ChoiceDelta(0, {"content": raw})], Turn(raw, [], self.finish_reason, usage, raw_text=raw)
