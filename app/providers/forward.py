"""Forwarded endpoints, read: ``/embeddings`` and the legacy ``/completions`` of an upstream.

Pure code (no I/O), like :mod:`toolrelay.app.providers.openai_parser`; the
aiohttp transport in :mod:`toolrelay.app.providers.openai` feeds it.

These endpoints are passed through rather than translated: the reply's
bytes are the upstream's, so the only wire knowledge needed here is SSE
framing (a stream's ``data:`` payloads, in order) and what an upstream's
refusal means. An upstream that lacks the endpoint answers in many ways
(OpenAI-style 404 ``unknown_url``, a bare ``404 Not Found`` page, 405, or
llama.cpp's 501 ``not_supported_error`` when started without embeddings);
the client gets one clear 400 ``unsupported_endpoint`` for all of them,
naming the model and the endpoint. A 404 that says the upstream does not
know the model keeps its meaning.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from toolrelay.app.errors import OpenAIError
from toolrelay.app.jsonbody import JSONValue
from toolrelay.app.providers.openai_parser import map_upstream_error

__all__ = ["DONE", "OversizedEvent", "SSEDataFramer", "map_forward_error", "oversized_reply", "unsupported_endpoint"]

#: The payload of the ``data: [DONE]`` event that ends an OpenAI stream.
DONE = b"[DONE]"
# Statuses with which servers say "no such endpoint" (501: llama.cpp's "not supported").
_MISSING_ENDPOINT = frozenset((404, 405, 501))


def unsupported_endpoint(model: str, endpoint: str, detail: str) -> OpenAIError:
    """The 400 for a model whose upstream does not offer ``endpoint`` (``/v1/embeddings``)."""
    return OpenAIError(
        400,
        f"The model `{model}` does not support {endpoint}: {detail}",
        type="invalid_request_error",
        param="model",
        code="unsupported_endpoint",
    )


def _upstream_message(raw: bytes) -> str | None:
    payload: JSONValue
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(payload, dict):
        err: JSONValue = payload.get("error", payload)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
    return None


def map_forward_error(status: int, raw: bytes, headers: Mapping[str, str], upstream: str, *, model: str, endpoint: str) -> OpenAIError:
    """An upstream's error answer to a forwarded call, as the client should see it.

    Mapped like chat (:func:`map_upstream_error`: 429 with its retry headers,
    401/403 as the operator's credential problem, 5xx) except that a missing
    endpoint becomes :func:`unsupported_endpoint`.
    """
    mapped = map_upstream_error(status, raw, headers, upstream)
    if status in _MISSING_ENDPOINT and mapped.code != "model_not_found":
        said = _upstream_message(raw)
        detail = f"its upstream '{upstream}' does not offer this endpoint (HTTP {status}{': ' + said if said else ''})."
        return unsupported_endpoint(model, endpoint, detail)
    return mapped


class OversizedEvent(Exception):
    """An upstream event (or plain answer) larger than the caller allows."""


def oversized_reply(upstream: str, limit: int) -> OpenAIError:
    """The 502 for an upstream event or answer past ``ForwardCall.max_event_bytes``."""
    return OpenAIError(
        502,
        f"The upstream provider '{upstream}' sent an event or answer larger than {limit} bytes.",
        type="upstream_error",
        code="bad_upstream_response",
    )


class SSEDataFramer:
    """An SSE body cut into its ``data:`` payloads (multi-line data joined), fed raw reads.

    The chat parser frames inline for speed; this one serves bodies that are
    passed through whole, where a payload per event is all the caller needs.
    With ``max_event_bytes``, :meth:`feed` raises :class:`OversizedEvent` once
    the event being read grows past it, so a hostile upstream cannot make us
    hold an endless line.
    """

    __slots__ = ("_buffer", "_lines", "_max")

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._buffer = b""
        self._lines: list[bytes] = []
        self._max = max_event_bytes

    def feed(self, raw: bytes) -> list[bytes]:
        """The payloads that ``raw`` completes, in order (``[DONE]`` included)."""
        out: list[bytes] = []
        buffer = self._buffer + raw if self._buffer else raw
        lines = self._lines
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                break
            line = buffer[:newline].rstrip(b"\r")
            buffer = buffer[newline + 1 :]
            if line:
                if line.startswith(b"data:"):
                    lines.append(line[5:].lstrip(b" "))
                continue
            if lines:
                out.append(lines[0] if len(lines) == 1 else b"\n".join(lines))
                lines.clear()
        if self._max is not None and len(buffer) + sum(map(len, lines)) > self._max:
            raise OversizedEvent
        self._buffer = buffer
        return out

    def end(self) -> list[bytes]:
        """A last event the body did not close with a blank line, if any."""
        if self._buffer.startswith(b"data:"):
            self._lines.append(self._buffer.rstrip(b"\r")[5:].lstrip(b" "))
        self._buffer = b""
        out = [b"\n".join(self._lines)] if self._lines else []
        self._lines.clear()
        return out
