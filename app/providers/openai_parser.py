"""The OpenAI Chat Completions wire, read: upstream bytes and JSON in, events out.

Pure code (no I/O, no event loop), so every quirk an upstream can throw at
us is unit-tested over plain values; :mod:`toolrelay.app.providers.openai`
is the aiohttp transport that feeds it.

Upstream quirks are repaired here, never passed on to the client:

- tool-call deltas without ``index`` get their position in the list;
- ``arguments`` sent as a JSON object become the JSON text the protocol says;
- ``id``/``type``/``name`` repeated in every delta of one call (LiteLLM, some
  re-chunkers) are dropped after the first: the OpenAI SDK concatenates
  repeated strings, so a repeated id would arrive as ``call_xcall_x``;
- a non-streamed tool call without ``id`` or ``type`` gets them;
- a stream that ends without a ``finish_reason`` or ``[DONE]`` is a failure,
  not a silent truncation; a malformed chunk ends the stream with one error.

This is the proxy's hot path: :class:`SSEChunkParser` works on raw reads
(``bytes.find``, no line iterator) and allocates one list per read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from toolrelay.app.errors import OpenAIError, upstream_unreachable
from toolrelay.app.events import (
    ChoiceDelta,
    ChoiceMessage,
    Event,
    Failure,
    ResponseMeta,
    UsageReport,
)
from toolrelay.app.ids import new_repaired_tool_call_id
from toolrelay.app.jsonbody import JSONValue

__all__ = [
    "MalformedUpstream",
    "SSEChunkParser",
    "events_from_chunk",
    "events_from_completion",
    "malformed_response",
    "map_upstream_error",
    "repair_tool_calls",
]

#: Top-level fields of a completion or chunk passed on as :class:`ResponseMeta`.
META_FIELDS = ("system_fingerprint", "service_tier")  # SSEChunkParser.feed reads these two by name
#: One streamed event (or a line still without its end) may hold this much; past it the stream fails.
MAX_EVENT_BYTES = 8 * 1024 * 1024
# Headers an upstream 429/503 carries that the client's retry logic reads.
_RETRY_HEADERS = (
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "x-should-retry",
)

# Upstream JSON is read through variables declared ``JSONValue`` so that the
# isinstance checks the protocol needs anyway also type it: no cast() calls or
# extra checks on this path (annotations on locals compile to nothing).

#: Streamed tool calls already given their id/type/name: (choice index, call index).
SeenCalls = set[tuple[int, int]]


class MalformedUpstream(Exception):
    """The upstream sent a body or chunk that is not the shape the protocol says."""


def _bad_upstream_response(message: str) -> OpenAIError:
    return OpenAIError(502, message, type="upstream_error", code="bad_upstream_response")


def malformed_response(upstream: str) -> OpenAIError:
    """The 502 for a body or chunk that breaks the protocol."""
    return _bad_upstream_response(f"The upstream provider '{upstream}' returned a malformed response.")


def oversized_event(upstream: str) -> OpenAIError:
    """The 502 for a stream event (or a line) past :data:`MAX_EVENT_BYTES`."""
    return _bad_upstream_response(f"The upstream provider '{upstream}' sent a stream event larger than {MAX_EVENT_BYTES} bytes.")


def _unreadable_event(upstream: str) -> OpenAIError:
    return _bad_upstream_response(f"The upstream provider '{upstream}' sent an unreadable stream event.")


def map_upstream_error(status: int, raw: bytes, headers: Mapping[str, str], upstream: str) -> OpenAIError:
    """Turn an upstream's error response into ours, keeping what the client can act on."""
    message = f"The upstream provider '{upstream}' returned HTTP {status}."
    err_type: str | None = None
    param: str | None = None
    code: str | None = None
    payload: JSONValue
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict):
        err: JSONValue = payload.get("error", payload)
        if isinstance(err, dict):
            if isinstance(err.get("message"), str) and err["message"]:
                message = err["message"]
            err_type = err.get("type") if isinstance(err.get("type"), str) else None
            param = err.get("param") if isinstance(err.get("param"), str) else None
            code = err.get("code") if isinstance(err.get("code"), (str, type(None))) else str(err.get("code"))
        elif isinstance(err, str) and err:
            message = err
    kept = {k: headers[k] for k in _RETRY_HEADERS if k in headers}
    if status in (429, 503):
        kept.setdefault("retry-after", "1")
        if "retry-after-ms" not in kept:
            try:
                kept["retry-after-ms"] = str(int(float(kept["retry-after"]) * 1000))
            except ValueError:
                pass  # an HTTP-date: clients parse retry-after themselves
    if status in (401, 403):
        # The client's own key was accepted by us; this is our upstream
        # credential, which is an operator problem, not the client's.
        return OpenAIError(
            502,
            f"The upstream provider '{upstream}' rejected the server's credentials (HTTP {status}). Ask the operator to check its API key.",
            type="upstream_error",
            code="upstream_auth_error",
        )
    if status == 429:
        err_type = err_type or "rate_limit_error"
    elif status >= 500:
        err_type = err_type if err_type and "error" in err_type else "server_error"
    elif status == 404:
        code = code or "model_not_found"
    status = status if 400 <= status <= 599 else 502
    return OpenAIError(status, message, type=err_type, param=param, code=code, headers=kept)


def repair_tool_calls(calls: JSONValue, streaming: bool, seen: SeenCalls | None = None, choice: int = 0) -> list[dict[str, Any]]:
    """``calls`` with the shapes some servers get wrong repaired (see the module doc).

    ``seen`` (streaming only) carries, across the chunks of one stream, which
    calls already sent their id/type/name. Raises :class:`MalformedUpstream`
    for calls that are not objects.
    """
    if not isinstance(calls, list):
        raise MalformedUpstream("tool_calls is not a list")
    fixed: list[dict[str, Any]] = []
    call: JSONValue
    function: JSONValue
    for position, call in enumerate(calls):
        if not isinstance(call, dict):
            raise MalformedUpstream("tool call is not an object")
        call = dict(call)
        function = call.get("function")
        if function is not None and not isinstance(function, dict):
            raise MalformedUpstream("tool call function is not an object")
        if streaming and not isinstance(call.get("index"), int):
            call["index"] = position
        if isinstance(function, dict) and not isinstance(function.get("arguments"), (str, type(None))):
            function = call["function"] = {**function, "arguments": orjson.dumps(function["arguments"]).decode()}
        if streaming and seen is not None:
            key = (choice, call["index"])
            if key in seen:
                call.pop("id", None)
                call.pop("type", None)
                if isinstance(function, dict) and "name" in function:
                    call["function"] = {k: v for k, v in function.items() if k != "name"}
            elif call.get("id") or (isinstance(function, dict) and function.get("name")):
                seen.add(key)
        if not streaming:
            call.setdefault("type", "function")
            if not call.get("id"):
                call["id"] = new_repaired_tool_call_id()
        fixed.append(call)
    return fixed


def events_from_completion(payload: JSONValue, upstream: str) -> list[Event]:
    """Events for a non-streamed ``chat.completion`` body; raises the 502 when it is malformed."""
    if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list):
        raise malformed_response(upstream)
    events: list[Event] = []
    meta = {k: payload[k] for k in META_FIELDS if payload.get(k) is not None}
    if meta:
        events.append(ResponseMeta(meta))
    choice: JSONValue
    message: JSONValue
    index: JSONValue
    try:
        for position, choice in enumerate(payload["choices"]):
            if not isinstance(choice, dict):
                raise MalformedUpstream("choice is not an object")
            message = choice.get("message") or {}
            if not isinstance(message, dict):
                raise MalformedUpstream("message is not an object")
            if message.get("tool_calls") is not None:
                message = {**message, "tool_calls": repair_tool_calls(message["tool_calls"], streaming=False)}
            index = choice.get("index", position)
            events.append(
                ChoiceMessage(
                    index if isinstance(index, int) else position,
                    message,
                    choice.get("finish_reason") or "stop",
                    choice.get("logprobs"),
                )
            )
    except MalformedUpstream:
        raise malformed_response(upstream) from None
    if isinstance(payload.get("usage"), dict):
        events.append(UsageReport(payload["usage"]))
    return events


def events_from_body(raw: bytes, upstream: str) -> list[Event]:
    """Events for a non-streamed body as received; raises the 502 when it is not JSON or malformed."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed_response(upstream) from None
    return events_from_completion(payload, upstream)


def events_from_chunk(chunk: JSONValue, seen: SeenCalls | None = None) -> list[Event]:
    """Events for one streamed ``chat.completion.chunk``; raises :class:`MalformedUpstream`."""
    if not isinstance(chunk, dict):
        raise MalformedUpstream("chunk is not an object")
    events: list[Event] = []
    choice: JSONValue
    delta: JSONValue
    index: JSONValue
    choices: JSONValue = chunk.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise MalformedUpstream("choices is not a list")
    for choice in choices or ():
        if not isinstance(choice, dict):
            raise MalformedUpstream("choice is not an object")
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise MalformedUpstream("delta is not an object")
        index = choice.get("index", 0)
        if not isinstance(index, int):
            raise MalformedUpstream("choice index is not an integer")
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            delta = {**delta, "tool_calls": repair_tool_calls(tool_calls, True, seen, index)}
        events.append(ChoiceDelta(index, delta, choice.get("finish_reason"), choice.get("logprobs")))
    usage: JSONValue = chunk.get("usage")
    if isinstance(usage, dict) and usage:
        events.append(UsageReport(usage))
    return events


class SSEChunkParser:
    """An upstream's SSE body, parsed incrementally: feed raw reads, get events.

    After a :class:`Failure` (an unreadable or malformed chunk, an error
    event) :attr:`failed` is set and the stream must end there. :meth:`end`
    judges a stream that ended without failing.
    """

    __slots__ = ("_buffer", "_data_lines", "_last_meta", "_seen_calls", "failed", "saw_done", "saw_finish", "upstream")

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._buffer = b""
        self._data_lines: list[bytes] = []
        self._last_meta: tuple[Any, Any] = (None, None)
        self._seen_calls: SeenCalls = set()
        self.saw_finish = False
        self.saw_done = False
        self.failed = False

    def feed(self, raw: bytes) -> list[Event]:
        """Events completed by ``raw`` (bytes as they came off the socket), in order."""
        out: list[Event] = []
        buffer = self._buffer + raw if self._buffer else raw
        data_lines = self._data_lines
        find = buffer.find
        start = 0
        chunk: JSONValue
        # Lines are read where they lie (an index moves on) rather than cut off the front of the
        # buffer, which copied the rest of a read once per line.
        while True:
            newline = find(b"\n", start)
            if newline < 0:
                break
            line = buffer[start:newline]
            start = newline + 1
            if line[-1:] == b"\r":
                line = line.rstrip(b"\r")
            if line:
                if line.startswith(b"data:"):
                    data_lines.append(line[5:].lstrip(b" "))
                continue
            if not data_lines:
                continue
            data = data_lines[0] if len(data_lines) == 1 else b"\n".join(data_lines)
            data_lines.clear()
            if data == b"[DONE]":
                self.saw_done = True
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                return self._fail(out, _unreadable_event(self.upstream))
            if type(chunk) is dict:
                if chunk.get("error") is not None:
                    return self._fail(out, map_upstream_error(500, data, {}, self.upstream))
                # Upstreams repeat system_fingerprint & co. on every chunk; an event only when they
                # change (readers keep the last), which halves the events of a typical stream.
                fingerprint, tier = chunk.get("system_fingerprint"), chunk.get("service_tier")
                if (fingerprint is not None or tier is not None) and (fingerprint, tier) != self._last_meta:
                    self._last_meta = (fingerprint, tier)
                    out.append(ResponseMeta({k: v for k, v in (("system_fingerprint", fingerprint), ("service_tier", tier)) if v is not None}))
            try:
                events = events_from_chunk(chunk, self._seen_calls)
            except MalformedUpstream:
                return self._fail(out, malformed_response(self.upstream))
            for event in events:
                if type(event) is ChoiceDelta and event.finish_reason is not None:
                    self.saw_finish = True
                out.append(event)
        rest = buffer[start:] if start else buffer
        if len(rest) + sum(map(len, data_lines)) > MAX_EVENT_BYTES:
            # A line (or event) that never ends: the stream is not an SSE stream we can hold.
            return self._fail(out, oversized_event(self.upstream))
        self._buffer = rest
        return out

    def _fail(self, out: list[Event], error: OpenAIError) -> list[Event]:
        self.failed = True
        self._buffer = b""
        out.append(Failure(error))
        return out

    def end(self) -> list[Event]:
        """The failure for a stream that stopped before its answer was complete, if it did."""
        if self.failed or self.saw_finish or self.saw_done:
            return []
        return [Failure(upstream_unreachable(f"'{self.upstream}' ended the stream before the answer was complete"))]
