"""Gemini ``generateContent`` answers, read: JSON in, :mod:`app.events` out. Pure code.

A streamed answer (``streamGenerateContent?alt=sse``) is a series of SSE
``data:`` events, each a whole ``GenerateContentResponse`` holding the new
parts of each candidate; a plain answer is one such object. Both are read by
:class:`GeminiReader`, which keeps what spans chunks: the function calls of
each candidate (numbered for ``tool_calls[].index``, and turning a ``STOP``
into ``tool_calls``), and the last ``usageMetadata`` (Gemini repeats it,
cumulative, on every chunk; it is reported once, at the end).

Mapping:

- ``text`` parts -> ``content``; parts with ``thought: true`` ->
  ``reasoning_content``; ``functionCall`` parts -> ``tool_calls`` (whole in one
  chunk, with an id minted here, carrying the part's ``thoughtSignature``:
  see :func:`toolrelay.app.providers.gemini_request.join_call_id`);
- ``finishReason``: ``STOP`` -> ``stop`` (``tool_calls`` when the candidate
  called functions), ``MAX_TOKENS`` -> ``length``, the safety family ->
  ``content_filter``, anything else -> ``stop``;
- ``usageMetadata``: ``promptTokenCount`` -> ``prompt_tokens``,
  ``candidatesTokenCount + thoughtsTokenCount`` -> ``completion_tokens`` (as
  OpenAI counts reasoning), ``thoughtsTokenCount`` -> ``reasoning_tokens``,
  ``cachedContentTokenCount`` -> ``cached_tokens``;
- ``promptFeedback.blockReason`` (a refused prompt, no candidates) -> 400
  ``content_filter``; Google's ``{"error": {"code", "message", "status",
  "details"}}`` -> :func:`map_gemini_error`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from toolrelay.app.errors import OpenAIError, upstream_unreachable
from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Event, Failure, UsageReport
from toolrelay.app.ids import new_repaired_tool_call_id
from toolrelay.app.jsonbody import JSONValue
from toolrelay.app.providers.forward import SSEDataFramer
from toolrelay.app.providers.gemini_request import join_call_id
from toolrelay.app.providers.openai_parser import malformed_response, map_upstream_error

__all__ = ["FINISH_REASONS", "STATUS_CODES", "GeminiReader", "GeminiSSEParser", "map_gemini_error", "usage_from_metadata"]

FINISH_REASONS: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

#: google.rpc status names -> HTTP status (Google sends both; the name is the precise one).
STATUS_CODES: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
# "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
_TOO_LONG = re.compile(r"input token count.*exceeds the maximum|exceeds the maximum number of tokens|context (?:length|window)", re.IGNORECASE)


def _seconds(duration: JSONValue) -> float | None:
    """A google.protobuf.Duration in JSON ("37s", "0.5s") as seconds."""
    if isinstance(duration, str) and duration.endswith("s"):
        try:
            return float(duration[:-1])
        except ValueError:
            return None
    return None


def map_gemini_error(status: int, raw: bytes, headers: Mapping[str, str], upstream: str) -> OpenAIError:
    """Google's error body as ours: the HTTP status its ``status`` name means, retry hints kept.

    Built on :func:`map_upstream_error`, so Gemini errors get the same policy as
    every upstream's (401/403 are the operator's credentials, a 502; 429/503
    carry ``retry-after``). ``RetryInfo.retryDelay`` becomes ``retry-after``; an
    invalid API key (Google says 400 ``API_KEY_INVALID``) counts as a 401.
    """
    payload: JSONValue
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, list) and payload:  # a JSON-array stream wraps its error too
        payload = payload[0]
    err: JSONValue = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        return map_upstream_error(status, raw, headers, upstream)
    name = err.get("status") if isinstance(err.get("status"), str) else ""
    code_in_body = err.get("code")
    # The name is the precise one; then the body's code (a stream's error event has no HTTP status of its own).
    fallback = code_in_body if isinstance(code_in_body, int) and 400 <= code_in_body <= 599 else status if 400 <= status <= 599 else 502
    http = STATUS_CODES.get(str(name), fallback)
    message = (
        err.get("message")
        if isinstance(err.get("message"), str) and err.get("message")
        else f"The upstream provider '{upstream}' returned {name or f'HTTP {status}'}."
    )
    kept = {k.lower(): v for k, v in headers.items()}
    details: JSONValue = err.get("details")
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == _RETRY_INFO:
            delay = _seconds(detail.get("retryDelay"))
            if delay is not None:
                kept["retry-after"] = str(max(1, math.ceil(delay)))
                kept["retry-after-ms"] = str(round(delay * 1000))
        elif detail.get("@type") == _ERROR_INFO and detail.get("reason") == "API_KEY_INVALID":
            http = 401
    if http == 400 and _TOO_LONG.search(str(message)):
        return OpenAIError(400, str(message), type="invalid_request_error", param="messages", code="context_length_exceeded")
    code = {404: "model_not_found", 429: "rate_limit_exceeded"}.get(http)
    shaped = orjson.dumps({"error": {"message": message, "type": None, "param": None, "code": code}})
    return map_upstream_error(http, shaped, kept, upstream)


def prompt_blocked(upstream: str, reason: str) -> OpenAIError:
    """The 400 for a prompt Gemini refused to answer (``promptFeedback.blockReason``)."""
    return OpenAIError(
        400,
        f"The upstream provider '{upstream}' refused the prompt (blockReason {reason}).",
        type="invalid_request_error",
        param="messages",
        code="content_filter",
    )


def _count(value: JSONValue) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``usageMetadata`` as an OpenAI ``usage`` object (see the module doc)."""
    prompt = _count(meta.get("promptTokenCount")) + _count(meta.get("toolUsePromptTokenCount"))
    thoughts = _count(meta.get("thoughtsTokenCount"))
    completion = _count(meta.get("candidatesTokenCount")) + thoughts
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": _count(meta.get("totalTokenCount")) or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": _count(meta.get("cachedContentTokenCount"))},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }
    return usage


class GeminiReader:
    """One answer's ``GenerateContentResponse`` objects -> events; state that spans chunks."""

    __slots__ = ("_calls", "finished", "upstream", "usage")

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._calls: dict[int, int] = {}  # candidate index -> function calls emitted
        self.finished: set[int] = set()
        self.usage: dict[str, Any] | None = None

    def _read(self, response: JSONValue) -> list[tuple[int, dict[str, Any], str | None]]:
        """(candidate index, delta, finish reason) per candidate of one response."""
        if not isinstance(response, dict):
            raise malformed_response(self.upstream)
        meta: JSONValue = response.get("usageMetadata")
        if isinstance(meta, dict):
            self.usage = usage_from_metadata(meta)
        candidates: JSONValue = response.get("candidates")
        feedback: JSONValue = response.get("promptFeedback")
        if not candidates and isinstance(feedback, dict) and isinstance(feedback.get("blockReason"), str):
            raise prompt_blocked(self.upstream, feedback["blockReason"])
        if candidates is not None and not isinstance(candidates, list):
            raise malformed_response(self.upstream)
        out: list[tuple[int, dict[str, Any], str | None]] = []
        for position, candidate in enumerate(candidates or ()):
            if not isinstance(candidate, dict):
                raise malformed_response(self.upstream)
            index = candidate.get("index", position)
            index = index if isinstance(index, int) else position
            content: JSONValue = candidate.get("content") or {}
            parts: JSONValue = content.get("parts") if isinstance(content, dict) else None
            if parts is not None and not isinstance(parts, list):
                raise malformed_response(self.upstream)
            text: list[str] = []
            thoughts: list[str] = []
            calls: list[dict[str, Any]] = []
            for part in parts or ():
                if not isinstance(part, dict):
                    raise malformed_response(self.upstream)
                call: JSONValue = part.get("functionCall")
                if isinstance(call, dict):
                    calls.append(self._call(index, call, part.get("thoughtSignature")))
                elif isinstance(part.get("text"), str):
                    (thoughts if part.get("thought") is True else text).append(part["text"])
            delta: dict[str, Any] = {}
            if thoughts:
                delta["reasoning_content"] = "".join(thoughts)
            if text:
                delta["content"] = "".join(text)
            if calls:
                delta["tool_calls"] = calls
            finish: str | None = None
            reason = candidate.get("finishReason")
            if isinstance(reason, str) and reason != "FINISH_REASON_UNSPECIFIED":
                finish = FINISH_REASONS.get(reason, "stop")
                if finish == "stop" and self._calls.get(index):
                    finish = "tool_calls"
                self.finished.add(index)
            out.append((index, delta, finish))
        return out

    def _call(self, candidate: int, call: dict[str, Any], signature: JSONValue) -> dict[str, Any]:
        n = self._calls.get(candidate, 0)
        self._calls[candidate] = n + 1
        name = call.get("name")
        if not isinstance(name, str):
            raise malformed_response(self.upstream)
        args: JSONValue = call.get("args")
        return {
            "index": n,
            "id": join_call_id(new_repaired_tool_call_id(), signature if isinstance(signature, str) else None),
            "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(args if isinstance(args, dict) else {}).decode()},
        }

    def chunk_events(self, response: JSONValue) -> list[Event]:
        """Streamed deltas for one ``GenerateContentResponse`` of a stream."""
        return [ChoiceDelta(index, delta, finish) for index, delta, finish in self._read(response) if delta or finish]

    def body_events(self, response: JSONValue) -> list[Event]:
        """The whole answer of a plain ``generateContent`` call; raises the 4xx/502 it means."""
        events: list[Event] = []
        for index, delta, finish in self._read(response):
            calls = delta.get("tool_calls")
            message: dict[str, Any] = {"role": "assistant", "content": delta.get("content", None if calls else "")}
            if "reasoning_content" in delta:
                message["reasoning_content"] = delta["reasoning_content"]
            if calls:
                message["tool_calls"] = [{k: v for k, v in call.items() if k != "index"} for call in calls]
            events.append(ChoiceMessage(index, message, finish or "stop"))
        if not events:
            raise malformed_response(self.upstream)
        if self.usage is not None:
            events.append(UsageReport(self.usage))
        return events


class GeminiSSEParser:
    """A ``streamGenerateContent?alt=sse`` body, fed raw reads; ``failed`` once a Failure was produced."""

    __slots__ = ("_framer", "failed", "reader")

    def __init__(self, upstream: str) -> None:
        self.reader = GeminiReader(upstream)
        self._framer = SSEDataFramer()
        self.failed = False

    def feed(self, raw: bytes) -> list[Event]:
        return self._events(self._framer.feed(raw))

    def _events(self, payloads: list[bytes]) -> list[Event]:
        out: list[Event] = []
        for data in payloads:
            if self.failed:
                break
            try:
                response = orjson.loads(data)
            except orjson.JSONDecodeError:
                self.failed = True
                out.append(Failure(malformed_response(self.reader.upstream)))
                break
            if isinstance(response, dict) and response.get("error") is not None:
                self.failed = True
                out.append(Failure(map_gemini_error(500, data, {}, self.reader.upstream)))
                break
            try:
                out.extend(self.reader.chunk_events(response))
            except OpenAIError as exc:
                self.failed = True
                out.append(Failure(exc))
        return out

    def end(self) -> list[Event]:
        """The usage, or the failure of a stream that stopped before every candidate finished."""
        out = self._events(self._framer.end())
        if self.failed:
            return out
        if not self.reader.finished:
            return [*out, Failure(upstream_unreachable(f"'{self.reader.upstream}' ended the stream before the answer was complete"))]
        if self.reader.usage is not None:
            out.append(UsageReport(self.reader.usage))
        return out
