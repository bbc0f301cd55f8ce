"""Chat Completions events (:mod:`app.events`) as the Responses API's semantic stream events.

:class:`ResponseStreamWriter` is fed the events a provider yields, one at a
time, and returns the SSE bytes to send for each (``event: <type>`` and
``data: <json>``, with a strictly increasing ``sequence_number``). It keeps
the output items as they grow, so the final ``response.completed`` (or
``response.incomplete`` / ``response.failed``) carries the whole response,
which is also what gets stored.

Order, as OpenAI streams it: ``response.created``, ``response.in_progress``;
per item ``response.output_item.added``, for text ``response.content_part.added``,
the deltas, ``response.output_text.done``, ``response.content_part.done``;
then ``response.output_item.done``. Reasoning (chat upstreams'
``reasoning_content``) streams as ``response.reasoning_text.*`` in a
``reasoning`` item; tool calls as ``function_call`` items with
``response.function_call_arguments.delta/done``; a refusal (chat's
``refusal`` deltas) as a ``message`` item with one ``refusal`` part and
``response.refusal.delta/done``. Only choice 0 is read: Responses has no ``n``.
"""

from __future__ import annotations

from typing import Any

import orjson

from toolrelay.app.errors import OpenAIError
from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Event, Failure, KeepAlive, UsageReport, message_as_delta
from toolrelay.app.responses.translate import (
    ResponsesRequest,
    function_call_item,
    message_item,
    new_item_id,
    reasoning_item,
    refusal_item,
    response_object,
    responses_usage,
)

__all__ = ["ResponseStreamWriter", "failure_error"]

_KEEPALIVE = b": keep-alive\n\n"
# ResponseError.code is an enum in the API reference; everything else is a server error there.
_FAILURE_CODES = {429: "rate_limit_exceeded"}


def failure_error(error: OpenAIError) -> dict[str, Any]:
    """An error after the stream started, as the ``error`` of a failed response."""
    return {"code": _FAILURE_CODES.get(error.status, "server_error"), "message": error.message}


class _Part:
    """An item whose text is streamed (the message's output_text, the reasoning's reasoning_text)."""

    __slots__ = ("index", "item_id", "pieces")

    def __init__(self, index: int, item_id: str) -> None:
        self.index = index
        self.item_id = item_id
        self.pieces: list[str] = []


class _Call:
    __slots__ = ("index", "item_id", "call_id", "name", "pieces")

    def __init__(self, index: int, item_id: str, call_id: str, name: str) -> None:
        self.index = index
        self.item_id = item_id
        self.call_id = call_id
        self.name = name
        self.pieces: list[str] = []


class ResponseStreamWriter:
    """One streamed response: events in, SSE bytes out; :attr:`output` and :attr:`usage` are the result so far."""

    __slots__ = (
        "request",
        "response_id",
        "created_at",
        "output",
        "usage",
        "finish_reason",
        "silent",
        "_seq",
        "_text",
        "_refusal",
        "_reasoning",
        "_calls",
        "status",
    )

    def __init__(self, request: ResponsesRequest, response_id: str, created_at: int) -> None:
        self.request = request
        self.response_id = response_id
        self.created_at = created_at
        # Output items by output_index; an open item holds its in-progress shape until closed.
        self.output: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.status = "in_progress"
        # True for a plain (non-streamed) response: the items are built, no event is encoded.
        self.silent = False
        self._seq = 0
        self._text: _Part | None = None
        self._refusal: _Part | None = None
        self._reasoning: _Part | None = None
        self._calls: dict[int, _Call] = {}

    # ------------------------------------------------------------------ framing

    def _event(self, out: list[bytes], kind: str, fields: dict[str, Any]) -> None:
        if self.silent:
            return
        fields["type"] = kind
        fields["sequence_number"] = self._seq
        self._seq += 1
        out.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(fields) + b"\n\n")

    def response(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(
            self.request,
            response_id=self.response_id,
            created_at=self.created_at,
            status=status,
            output=self.output,
            usage=responses_usage(self.usage) if status != "in_progress" else None,
            error=error,
        )

    # ------------------------------------------------------------------ the stream

    def start(self) -> bytes:
        out: list[bytes] = []
        self._event(out, "response.created", {"response": self.response("in_progress")})
        self._event(out, "response.in_progress", {"response": self.response("in_progress")})
        return b"".join(out)

    def feed(self, event: Event) -> bytes:
        kind = type(event)
        if kind is ChoiceDelta:
            if event.index != 0:  # type: ignore[union-attr]
                return b""
            if event.finish_reason is not None:  # type: ignore[union-attr]
                self.finish_reason = event.finish_reason  # type: ignore[union-attr]
            return self._delta(event.delta)  # type: ignore[union-attr]
        if kind is ChoiceMessage:
            if event.index != 0:  # type: ignore[union-attr]
                return b""
            self.finish_reason = event.finish_reason  # type: ignore[union-attr]
            return self._delta(message_as_delta(event.message))  # type: ignore[union-attr]
        if kind is UsageReport:
            self.usage = event.usage  # type: ignore[union-attr]
            return b""
        if kind is KeepAlive:
            return _KEEPALIVE
        if kind is Failure:
            return self.fail(event.error)  # type: ignore[union-attr]
        return b""

    def _delta(self, delta: dict[str, Any]) -> bytes:
        out: list[bytes] = []
        reasoning = delta.get("reasoning_content")
        if reasoning:
            if self._reasoning is None:
                self._close_text(out)
                self._reasoning = self._open_part(out, reasoning_item("", "in_progress", new_item_id("rs")), {"type": "reasoning_text", "text": ""})
            part = self._reasoning
            part.pieces.append(reasoning)
            self._event(out, "response.reasoning_text.delta", {"item_id": part.item_id, "output_index": part.index, "content_index": 0, "delta": reasoning})
        content = delta.get("content")
        if content:
            if self._text is None:
                self._close_text(out)  # a refusal's message, if one is open
                self._close_reasoning(out)
                item = message_item("", "in_progress")
                item["content"] = []
                self._text = self._open_part(out, item, {"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            part = self._text
            part.pieces.append(content)
            self._event(
                out,
                "response.output_text.delta",
                {"item_id": part.item_id, "output_index": part.index, "content_index": 0, "delta": content, "logprobs": []},
            )
        refusal = delta.get("refusal")
        if refusal:
            if self._refusal is None:
                self._close_text(out)
                self._close_reasoning(out)
                item = refusal_item("", "in_progress")
                item["content"] = []
                self._refusal = self._open_part(out, item, {"type": "refusal", "refusal": ""})
            part = self._refusal
            part.pieces.append(refusal)
            self._event(out, "response.refusal.delta", {"item_id": part.item_id, "output_index": part.index, "content_index": 0, "delta": refusal})
        fragments = delta.get("tool_calls")
        if fragments:
            for fragment in fragments:
                self._tool_call(out, fragment)
        return b"".join(out)

    def _open_part(self, out: list[bytes], item: dict[str, Any], part: dict[str, Any]) -> _Part:
        index = len(self.output)
        self.output.append(item)
        self._event(out, "response.output_item.added", {"output_index": index, "item": item})
        opened = _Part(index, item["id"])
        self._event(out, "response.content_part.added", {"item_id": opened.item_id, "output_index": index, "content_index": 0, "part": part})
        return opened

    def _tool_call(self, out: list[bytes], fragment: dict[str, Any]) -> None:
        position = fragment.get("index", 0)
        function = fragment.get("function") or {}
        call = self._calls.get(position)
        if call is None:
            self._close_text(out)
            self._close_reasoning(out)
            index = len(self.output)
            item = function_call_item(fragment.get("id") or "", function.get("name") or "", "", "in_progress")
            self.output.append(item)
            call = self._calls[position] = _Call(index, item["id"], item["call_id"], item["name"])
            self._event(out, "response.output_item.added", {"output_index": index, "item": dict(item)})
        elif function.get("name"):
            call.name += function["name"]
        arguments = function.get("arguments")
        if arguments:
            call.pieces.append(arguments)
            self._event(out, "response.function_call_arguments.delta", {"item_id": call.item_id, "output_index": call.index, "delta": arguments})

    def _close_text(self, out: list[bytes]) -> None:
        """Close the open assistant message: its text, or its refusal."""
        self._close_refusal(out)
        part, self._text = self._text, None
        if part is None:
            return
        text = "".join(part.pieces)
        status = "incomplete" if self.finish_reason == "length" else "completed"
        item = self.output[part.index] = message_item(text, status, part.item_id)
        annotations = self._text_annotations(part.index)
        if annotations:
            item["content"][0]["annotations"] = annotations
        where = {"item_id": part.item_id, "output_index": part.index, "content_index": 0}
        self._event(out, "response.output_text.done", {**where, "text": text, "logprobs": []})
        self._event(out, "response.content_part.done", {**where, "part": item["content"][0]})
        self._event(out, "response.output_item.done", {"output_index": part.index, "item": item})

    def _close_refusal(self, out: list[bytes]) -> None:
        part, self._refusal = self._refusal, None
        if part is None:
            return
        refusal = "".join(part.pieces)
        item = self.output[part.index] = refusal_item(refusal, "incomplete" if self.finish_reason == "length" else "completed", part.item_id)
        where = {"item_id": part.item_id, "output_index": part.index, "content_index": 0}
        self._event(out, "response.refusal.done", {**where, "refusal": refusal})
        self._event(out, "response.content_part.done", {**where, "part": item["content"][0]})
        self._event(out, "response.output_item.done", {"output_index": part.index, "item": item})

    def _text_annotations(self, index: int) -> list[dict[str, Any]]:
        """Annotations of the message item at ``index`` (agent runs' citations; none in proxy mode)."""
        return []

    def _close_reasoning(self, out: list[bytes]) -> None:
        part, self._reasoning = self._reasoning, None
        if part is None:
            return
        text = "".join(part.pieces)
        item = self.output[part.index] = reasoning_item(text, "completed", part.item_id)
        where = {"item_id": part.item_id, "output_index": part.index, "content_index": 0}
        self._event(out, "response.reasoning_text.done", {**where, "text": text})
        self._event(out, "response.content_part.done", {**where, "part": item["content"][0]})
        self._event(out, "response.output_item.done", {"output_index": part.index, "item": item})

    def _close_calls(self, out: list[bytes]) -> None:
        for position in sorted(self._calls):
            call = self._calls[position]
            arguments = "".join(call.pieces)
            item = self.output[call.index] = function_call_item(call.call_id, call.name, arguments, "completed", call.item_id)
            done = {"item_id": call.item_id, "name": call.name, "output_index": call.index, "arguments": arguments}
            self._event(out, "response.function_call_arguments.done", done)
            self._event(out, "response.output_item.done", {"output_index": call.index, "item": item})
        self._calls = {}

    def finish(self) -> bytes:
        """Close the open items and end with ``response.completed`` (``response.incomplete`` when cut by the token limit)."""
        out: list[bytes] = []
        self._close_reasoning(out)
        self._close_text(out)
        self._close_calls(out)
        self.status = "incomplete" if self.finish_reason == "length" else "completed"
        if not self.silent:
            self._event(out, f"response.{self.status}", {"response": self.response(self.status)})
        return b"".join(out)

    def fail(self, error: OpenAIError) -> bytes:
        """End with ``response.failed``: the items so far, and the error."""
        out: list[bytes] = []
        self.status = "failed"
        self._event(out, "response.failed", {"response": self.response("failed", failure_error(error))})
        return b"".join(out)
