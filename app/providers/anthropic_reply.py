"""Anthropic Messages replies read as Chat Completions events, and Anthropic errors as OpenAI's.

Pure code (no I/O), like :mod:`toolrelay.app.providers.openai_parser`; the
aiohttp transport in :mod:`toolrelay.app.providers.anthropic` feeds it.

- :class:`MessagesStreamReader`: an SSE body (``event: <name>`` and
  ``data: {...}`` lines) fed raw reads. ``message_start`` gives the input
  usage; text, ``tool_use`` (``input_json_delta`` as argument fragments of
  the call at its own index among the tool calls) and ``thinking``
  (``reasoning_content`` and ``reasoning``) blocks become deltas;
  ``message_delta`` the finish reason and the usage; ``ping`` a
  :class:`KeepAlive`; an ``error`` event one :class:`Failure`. Unknown event
  and block types are skipped, as Anthropic's versioning policy says new ones
  may appear.
- :func:`events_from_message`: a non-streamed Message body as one choice.
- :func:`map_anthropic_error`: ``{"type": "error", "error": {"type",
  "message"}}`` as the OpenAI-shaped error a client's SDK reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from toolrelay.app.errors import OpenAIError, upstream_unreachable
from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Event, Failure, KeepAlive, UsageReport
from toolrelay.app.jsonbody import JSONValue
from toolrelay.app.providers.anthropic_request import JSON_TOOL
from toolrelay.app.providers.openai_parser import malformed_response

__all__ = ["FINISH_REASONS", "MessagesStreamReader", "chat_usage", "events_from_message", "map_anthropic_error"]

#: Anthropic ``stop_reason`` -> Chat Completions ``finish_reason``.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error type -> (status for our client, OpenAI type, code).
_ERRORS: dict[str, tuple[int, str, str | None]] = {
    "invalid_request_error": (400, "invalid_request_error", None),
    "authentication_error": (401, "authentication_error", None),
    "permission_error": (403, "permission_error", None),
    "not_found_error": (404, "invalid_request_error", "model_not_found"),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "rate_limit_error": (429, "rate_limit_error", "rate_limit_exceeded"),
    "api_error": (500, "server_error", None),
    "overloaded_error": (503, "service_unavailable", "upstream_overloaded"),
}
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
# Anthropic's rate-limit headers under the names OpenAI clients read.
_RATE_HEADERS = {
    "anthropic-ratelimit-requests-limit": "x-ratelimit-limit-requests",
    "anthropic-ratelimit-requests-remaining": "x-ratelimit-remaining-requests",
    "anthropic-ratelimit-tokens-limit": "x-ratelimit-limit-tokens",
    "anthropic-ratelimit-tokens-remaining": "x-ratelimit-remaining-tokens",
}


def map_anthropic_error(status: int, raw: bytes, headers: Mapping[str, str], upstream: str) -> OpenAIError:
    """An Anthropic error answer (HTTP ``status``, body ``raw``) as our client should see it.

    401/403 are our credential's problem, not the client's (its key was
    accepted here): a 502 naming the operator, as for OpenAI-kind upstreams.
    529 (overloaded) is a 503 with retry headers, which every OpenAI SDK
    retries; a prompt over the window is ``context_length_exceeded``.
    """
    payload: JSONValue
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    error: JSONValue = payload.get("error") if isinstance(payload, dict) else None
    kind = _STATUS_TYPES.get(status, "")  # "": another status (a proxy's 502), kept as it is
    said = ""
    if isinstance(error, dict):
        named: JSONValue = error.get("type")
        message: JSONValue = error.get("message")
        kind = named if isinstance(named, str) else kind
        said = message if isinstance(message, str) else ""
    return anthropic_error(kind, said or f"The upstream provider '{upstream}' returned HTTP {status}.", upstream, headers, status=status)


def anthropic_error(kind: str, message: str, upstream: str, headers: Mapping[str, str] | None = None, *, status: int | None = None) -> OpenAIError:
    """The OpenAI-shaped error for Anthropic error type ``kind`` (from an HTTP answer or an ``error`` event)."""
    if kind in ("authentication_error", "permission_error"):
        return OpenAIError(
            502,
            f"The upstream provider '{upstream}' rejected the server's credentials ({kind}). Ask the operator to check its API key.",
            type="upstream_error",
            code="upstream_auth_error",
        )
    ours, err_type, code = _ERRORS.get(kind) or ((status if status and 400 <= status < 600 else 502), "server_error", None)
    param = None
    if kind == "invalid_request_error" and "prompt is too long" in message:
        code, param = "context_length_exceeded", "messages"
    headers = headers or {}
    kept = {name: headers[name] for name in ("retry-after", "x-should-retry") if name in headers}
    for theirs, openai_name in _RATE_HEADERS.items():
        if theirs in headers:
            kept[openai_name] = headers[theirs]
    if ours in (429, 503):
        kept.setdefault("retry-after", "1")
        kept.setdefault("x-should-retry", "true")
        try:
            kept["retry-after-ms"] = str(int(float(kept["retry-after"]) * 1000))
        except ValueError:
            pass  # an HTTP-date: clients parse retry-after themselves
    return OpenAIError(ours, message, type=err_type, param=param, code=code, headers=kept)


def chat_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic usage as Chat Completions usage: cache reads and writes are prompt tokens too.

    ``input_tokens`` counts only what follows the last cache breakpoint, so the
    prompt is the sum of the three; the cache reads are ``cached_tokens``.
    """
    fresh = _count(usage.get("input_tokens"))
    read = _count(usage.get("cache_read_input_tokens"))
    written = _count(usage.get("cache_creation_input_tokens"))
    output = _count(usage.get("output_tokens"))
    prompt = fresh + read + written
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read},
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def events_from_message(raw: bytes, upstream: str) -> list[Event]:
    """The events of a non-streamed Message body; raises the 502 when it is not one."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed_response(upstream) from None
    if not isinstance(payload, dict) or payload.get("type") != "message" or not isinstance(payload.get("content"), list):
        raise malformed_response(upstream)
    text: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    answered_by_json_tool = False
    for block in payload["content"]:
        if not isinstance(block, dict):
            raise malformed_response(upstream)
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
        elif kind == "tool_use":
            if block.get("name") == JSON_TOOL:
                text.append(orjson.dumps(block.get("input") or {}).decode())
                answered_by_json_tool = True
                continue
            arguments = orjson.dumps(block.get("input") if isinstance(block.get("input"), dict) else {}).decode()
            calls.append({"id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": arguments}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if thinking:
        message["reasoning_content"] = message["reasoning"] = "".join(thinking)
    if calls:
        message["tool_calls"] = calls
    finish = _finish_reason(payload.get("stop_reason"), answered_by_json_tool and not calls)
    events: list[Event] = [ChoiceMessage(0, message, finish)]
    if isinstance(payload.get("usage"), dict):
        events.append(UsageReport(chat_usage(payload["usage"])))
    return events


def _finish_reason(stop_reason: Any, json_answer: bool) -> str:
    if json_answer:
        return "stop"
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


# Block kinds the stream reader follows.
_TEXT, _TOOL, _THINKING, _JSON = 1, 2, 3, 4


class MessagesStreamReader:
    """An Anthropic SSE body, read incrementally: feed raw reads, get events.

    After a :class:`Failure` :attr:`failed` is set and the stream must end
    there; :meth:`end` judges a stream that stopped without failing.
    """

    __slots__ = ("_blocks", "_buffer", "_calls", "_data", "_json_answer", "_usage", "failed", "finished", "stopped", "upstream")

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._buffer = b""
        self._data: list[bytes] = []
        # Content block index -> (kind, tool-call index).
        self._blocks: dict[int, tuple[int, int]] = {}
        self._calls = 0
        self._json_answer = False
        self._usage: dict[str, Any] = {}
        self.failed = False
        self.finished = False
        self.stopped = False

    def feed(self, raw: bytes) -> list[Event]:
        """Events completed by ``raw`` (bytes as they came off the socket), in order."""
        out: list[Event] = []
        buffer = self._buffer + raw if self._buffer else raw
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                break
            line = buffer[:newline].rstrip(b"\r")
            buffer = buffer[newline + 1 :]
            if line:
                # The `event:` line repeats the data's own `type`, which is what is read.
                if line.startswith(b"data:"):
                    self._data.append(line[5:].lstrip(b" "))
                continue
            if not self._data:
                continue
            data = b"\n".join(self._data)
            self._data.clear()
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                return self._fail(out, malformed_response(self.upstream))
            if not isinstance(event, dict):
                return self._fail(out, malformed_response(self.upstream))
            try:
                self._read(event, out)
            except (KeyError, TypeError, AttributeError):
                return self._fail(out, malformed_response(self.upstream))
            if self.failed:
                self._buffer = b""
                return out
        self._buffer = buffer
        return out

    def _read(self, event: dict[str, Any], out: list[Event]) -> None:
        kind = event.get("type")
        if kind == "content_block_delta":
            block = self._blocks.get(event["index"])
            delta = event["delta"]
            delta_type = delta.get("type")
            if block is None:
                return
            if delta_type == "text_delta" and block[0] == _TEXT:
                out.append(ChoiceDelta(0, {"content": delta["text"]}))
            elif delta_type == "input_json_delta":
                if block[0] == _JSON:
                    if delta["partial_json"]:
                        out.append(ChoiceDelta(0, {"content": delta["partial_json"]}))
                elif block[0] == _TOOL:
                    out.append(ChoiceDelta(0, {"tool_calls": [{"index": block[1], "function": {"arguments": delta["partial_json"]}}]}))
            elif delta_type == "thinking_delta" and block[0] == _THINKING:
                out.append(ChoiceDelta(0, {"reasoning_content": delta["thinking"], "reasoning": delta["thinking"]}))
        elif kind == "content_block_start":
            self._start_block(event["index"], event["content_block"], out)
        elif kind == "message_start":
            usage = event["message"].get("usage")
            if isinstance(usage, dict):
                self._usage.update(usage)
        elif kind == "message_delta":
            usage = event.get("usage")
            if isinstance(usage, dict):
                # output_tokens is the running total; newer API versions repeat the input counts here.
                self._usage.update({k: v for k, v in usage.items() if v is not None})
            stop = (event.get("delta") or {}).get("stop_reason")
            if stop is not None and not self.finished:
                self.finished = True
                out.append(ChoiceDelta(0, {}, _finish_reason(stop, self._json_answer and not self._calls)))
            out.append(UsageReport(chat_usage(self._usage)))
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "ping":
            out.append(KeepAlive())
        elif kind == "error":
            error = event.get("error") or {}
            message = error.get("message") if isinstance(error.get("message"), str) else ""
            message = message or f"The upstream provider '{self.upstream}' failed mid-stream."
            self._fail(out, anthropic_error(str(error.get("type") or "api_error"), message, self.upstream))

    def _start_block(self, index: int, block: dict[str, Any], out: list[Event]) -> None:
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = (_TEXT, 0)
            if block.get("text"):
                out.append(ChoiceDelta(0, {"content": block["text"]}))
        elif kind == "tool_use":
            if block.get("name") == JSON_TOOL:
                self._blocks[index] = (_JSON, 0)
                self._json_answer = True
                return
            call = self._calls
            self._calls += 1
            self._blocks[index] = (_TOOL, call)
            opened = {"index": call, "id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": ""}}
            out.append(ChoiceDelta(0, {"tool_calls": [opened]}))
        elif kind == "thinking":
            self._blocks[index] = (_THINKING, 0)
            if block.get("thinking"):
                out.append(ChoiceDelta(0, {"reasoning_content": block["thinking"], "reasoning": block["thinking"]}))

    def _fail(self, out: list[Event], error: OpenAIError) -> list[Event]:
        self.failed = True
        self._buffer = b""
        out.append(Failure(error))
        return out

    def end(self) -> list[Event]:
        """The failure for a stream that stopped before its answer was complete, if it did."""
        if self.failed or self.finished or self.stopped:
            return []
        return [Failure(upstream_unreachable(f"'{self.upstream}' ended the stream before the answer was complete"))]
