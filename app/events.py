"""The internal event stream both modes produce.

A provider (proxy mode) and the agent loop (agent mode) yield these; the
encoder in :mod:`app.encoder` is the only code that turns them into SSE chunks
or a single JSON body. Deltas are kept as plain dicts in OpenAI's own shape so
fields we do not know about (audio, annotations, future additions) pass
through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from toolrelay.app.errors import OpenAIError


@dataclass(slots=True)
class ChoiceDelta:
    """A streamed piece of one choice: ``delta`` as in a chunk's choice."""

    index: int
    delta: dict[str, Any]
    finish_reason: str | None = None
    logprobs: Any = None


@dataclass(slots=True)
class ChoiceMessage:
    """A whole choice at once (an upstream answered without streaming)."""

    index: int
    message: dict[str, Any]
    finish_reason: str | None
    logprobs: Any = None


@dataclass(slots=True)
class UsageReport:
    """Token usage; the last one seen wins. ``estimated`` marks tiktoken counts."""

    usage: dict[str, Any]
    estimated: bool = False


@dataclass(slots=True)
class ResponseMeta:
    """Top-level response fields from the upstream (``system_fingerprint``, ``service_tier``...)."""

    fields: dict[str, Any]


@dataclass(slots=True)
class KeepAlive:
    """Nothing to say yet; the SSE encoder writes a comment line so proxies keep the connection."""


@dataclass(slots=True)
class Failure:
    """An error after the response started: ends the stream with an error event."""

    error: OpenAIError


Event = ChoiceDelta | ChoiceMessage | UsageReport | ResponseMeta | KeepAlive | Failure


def message_as_delta(message: dict[str, Any]) -> dict[str, Any]:
    """A whole message as the one delta that streams it (tool calls get their ``index``).

    The one conversion of a :class:`ChoiceMessage` (an upstream that answered
    a streaming request with a JSON body) into streamed form: the SSE encoder
    (proxy mode) and the agent loop both read such an answer through it.
    """
    delta = {k: v for k, v in message.items() if v is not None}
    if "tool_calls" in delta:
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(delta["tool_calls"])]
    return delta
