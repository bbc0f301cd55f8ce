"""The one place that knows the Chat Completions wire format.

:class:`SSEEncoder` turns events into ``data: {chunk}\\n\\n`` lines with the
rules strict clients depend on (one id and ``created`` for the whole stream,
``role`` in the first delta of each choice, a ``finish_reason`` key on every
choice, ``usage: null`` on every chunk only when usage was asked for, a
usage-only chunk with ``choices: []`` before ``[DONE]``).

:class:`BodyCollector` folds the same events into one ``chat.completion``
object for non-streaming requests, merging deltas the way the OpenAI SDK's
stream accumulator does.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Event, Failure, KeepAlive, ResponseMeta, UsageReport, message_as_delta
from toolrelay.app.ids import new_completion_id

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
# Top-level fields an upstream may set that clients read; everything else it
# invents stays out of our envelope so the shape stays the one in the spec.
_META_FIELDS = ("system_fingerprint", "service_tier")


def normalize_usage(usage: dict[str, Any]) -> dict[str, Any]:
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    out = dict(usage)
    out["prompt_tokens"] = prompt
    out["completion_tokens"] = completion
    out["total_tokens"] = int(usage.get("total_tokens") or (prompt + completion))
    return out


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class SSEEncoder:
    """Events in, SSE bytes out, for one streamed completion."""

    __slots__ = ("completion_id", "created", "model", "include_usage", "usage", "usage_estimated", "meta", "_started", "_finished", "failed")

    def __init__(self, *, model: str, include_usage: bool, completion_id: str | None = None, created: int | None = None) -> None:
        self.completion_id = completion_id or new_completion_id()
        self.created = created or int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.usage: dict[str, Any] | None = None
        self.usage_estimated = False
        self.meta: dict[str, Any] = {}
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self.failed = False

    def _chunk(self, choices: list[dict[str, Any]]) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }
        if self.meta:
            chunk.update(self.meta)
        chunk["choices"] = choices
        if self.include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _choice(self, index: int, delta: dict[str, Any], finish_reason: str | None, logprobs: Any) -> dict[str, Any]:
        if finish_reason is not None:
            self._finished.add(index)
        if index not in self._started:
            self._started.add(index)
            if "role" not in delta:
                delta = {"role": "assistant", **delta}
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}

    def encode(self, event: Event) -> bytes:
        kind = type(event)
        if kind is ChoiceDelta:
            return self._chunk([self._choice(event.index, event.delta, event.finish_reason, event.logprobs)])
        if kind is UsageReport:
            self.usage = event.usage
            self.usage_estimated = event.estimated
            return b""
        if kind is KeepAlive:
            return KEEPALIVE
        if kind is ResponseMeta:
            for key in _META_FIELDS:
                if event.fields.get(key) is not None:
                    self.meta[key] = event.fields[key]
            return b""
        if kind is ChoiceMessage:
            first = self._choice(event.index, message_as_delta(event.message), None, event.logprobs)
            return self._chunk([first]) + self._chunk([self._choice(event.index, {}, event.finish_reason, None)])
        if kind is Failure:
            self.failed = True
            return sse_event(event.error.payload())
        raise TypeError(f"unknown event {event!r}")

    def close(self) -> bytes:
        """The tail of a successful stream: the usage chunk when asked for, then ``[DONE]``."""
        # Clients treat a choice without finish_reason as cut off; some
        # upstreams end with [DONE] alone, which still means a normal stop.
        unfinished = b"".join(self._chunk([self._choice(i, {}, "stop", None)]) for i in sorted(self._started - self._finished))
        if self.include_usage and self.usage is not None:
            tail: dict[str, Any] = {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                **self.meta,
                "choices": [],
                "usage": normalize_usage(self.usage),
            }
            return unfinished + sse_event(tail) + DONE
        return unfinished + DONE


class _ChoiceState:
    """One choice being collected.

    String fields and tool-call names/arguments are kept as lists of pieces
    and joined once in :meth:`BodyCollector.body`: ``message[key] + piece``
    copies the whole text on every delta (the dict keeps a second reference,
    so CPython cannot append in place), which made collecting a long answer
    from many small chunks quadratic (issue 10 item 18).
    """

    __slots__ = ("message", "finish_reason", "logprobs", "tool_calls", "texts")

    def __init__(self) -> None:
        self.message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        self.finish_reason: str | None = None
        self.logprobs: dict[str, Any] | None = None
        # index -> [id, type, name pieces, argument pieces]
        self.tool_calls: dict[int, list[Any]] = {}
        self.texts: dict[str, list[str]] = {}

    def message_body(self) -> dict[str, Any]:
        message = self.message
        for key, pieces in self.texts.items():
            message[key] = "".join(pieces)
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": call_id, "type": kind, "function": {"name": "".join(names), "arguments": "".join(arguments)}}
                for call_id, kind, names, arguments in (self.tool_calls[i] for i in sorted(self.tool_calls))
            ]
        return message


def _merge_logprobs(acc: dict[str, Any] | None, new: Any) -> dict[str, Any] | None:
    if not isinstance(new, dict):
        return acc
    if acc is None:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in new.items()}
    for key, value in new.items():
        if isinstance(value, list) and isinstance(acc.get(key), list):
            acc[key].extend(value)
        elif value is not None:
            acc[key] = value
    return acc


class BodyCollector:
    """Events in, one ``chat.completion`` object out."""

    __slots__ = ("choices", "usage", "usage_estimated", "meta", "error")

    def __init__(self) -> None:
        self.choices: dict[int, _ChoiceState] = {}
        self.usage: dict[str, Any] | None = None
        self.usage_estimated = False
        self.meta: dict[str, Any] = {}
        self.error = None

    def _state(self, index: int) -> _ChoiceState:
        state = self.choices.get(index)
        if state is None:
            state = self.choices[index] = _ChoiceState()
        return state

    def add(self, event: Event) -> None:
        kind = type(event)
        if kind is ChoiceDelta:
            state = self._state(event.index)
            self._merge_delta(state, event.delta)
            if event.finish_reason is not None:
                state.finish_reason = event.finish_reason
            if event.logprobs is not None:
                state.logprobs = _merge_logprobs(state.logprobs, event.logprobs)
        elif kind is ChoiceMessage:
            state = self._state(event.index)
            message = dict(event.message)
            message.setdefault("role", "assistant")
            message.setdefault("content", None)
            message.setdefault("refusal", None)
            state.message = message
            state.texts = {}
            state.tool_calls = {}
            state.finish_reason = event.finish_reason
            state.logprobs = event.logprobs
        elif kind is UsageReport:
            self.usage = event.usage
            self.usage_estimated = event.estimated
        elif kind is ResponseMeta:
            for key in _META_FIELDS:
                if event.fields.get(key) is not None:
                    self.meta[key] = event.fields[key]
        elif kind is Failure:
            self.error = event.error

    @staticmethod
    def _merge_delta(state: _ChoiceState, delta: dict[str, Any]) -> None:
        message = state.message
        texts = state.texts
        for key, value in delta.items():
            if value is None or key == "role":
                continue
            if key == "tool_calls":
                for call in value:
                    slot = state.tool_calls.get(call.get("index", 0))
                    if slot is None:
                        slot = state.tool_calls[call.get("index", 0)] = [call.get("id") or "", call.get("type") or "function", [], []]
                    elif call.get("id"):
                        slot[0] = call["id"]
                    function = call.get("function") or {}
                    if function.get("name"):
                        slot[2].append(function["name"])
                    if function.get("arguments"):
                        slot[3].append(function["arguments"])
                continue
            if isinstance(value, str):
                pieces = texts.get(key)
                if pieces is not None:
                    pieces.append(value)
                    continue
                current = message.get(key)
                if current is None or isinstance(current, str):
                    texts[key] = [current, value] if current else [value]
                    continue
            current = message.get(key)
            if isinstance(value, list) and isinstance(current, list):
                current.extend(value)
            elif isinstance(value, list):
                message[key] = list(value)
            else:
                message[key] = value

    def body(self, *, model: str, completion_id: str | None = None, created: int | None = None) -> dict[str, Any]:
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            message = state.message_body()
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": state.logprobs,
                    "finish_reason": state.finish_reason or "stop",
                }
            )
        body: dict[str, Any] = {
            "id": completion_id or new_completion_id(),
            "object": "chat.completion",
            "created": created or int(time.time()),
            "model": model,
            "choices": choices,
            "usage": normalize_usage(self.usage or {}),
        }
        body.update(self.meta)
        return body
