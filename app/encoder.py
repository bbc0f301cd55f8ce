"""The one place that knows the Chat Completions wire format.

:class:`SSEEncoder` turns events into ``data: {chunk}\\n\\n`` lines with the
rules strict clients depend on (one id and ``created`` for the whole stream,
``role`` in the first delta of each choice, a ``finish_reason`` key on every
choice, ``usage: null`` on every chunk only when usage was asked for, a
usage-only chunk with ``choices: []`` before ``[DONE]``).

:class:`BodyCollector` folds the same events into one ``chat.completion``
object for non-streaming requests, merging deltas the way the OpenAI SDK's
stream accumulator does (:mod:`app.accumulate`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from toolrelay.app.accumulate import META_FIELDS, CompletionAccumulator
from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Event, Failure, KeepAlive, ResponseMeta, UsageReport, message_as_delta
from toolrelay.app.ids import new_completion_id

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


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
        # Dispatch on the exact type (cheaper than isinstance per chunk); the
        # checker does not narrow through `kind`, hence the ignores.
        kind = type(event)
        if kind is ChoiceDelta:
            return self._chunk([self._choice(event.index, event.delta, event.finish_reason, event.logprobs)])  # type: ignore[union-attr]
        if kind is UsageReport:
            self.usage = event.usage  # type: ignore[union-attr]
            self.usage_estimated = event.estimated  # type: ignore[union-attr]
            return b""
        if kind is KeepAlive:
            return KEEPALIVE
        if kind is ResponseMeta:
            for key in META_FIELDS:
                if event.fields.get(key) is not None:  # type: ignore[union-attr]
                    self.meta[key] = event.fields[key]  # type: ignore[union-attr]
            return b""
        if kind is ChoiceMessage:
            first = self._choice(event.index, message_as_delta(event.message), None, event.logprobs)  # type: ignore[union-attr]
            return self._chunk([first]) + self._chunk([self._choice(event.index, {}, event.finish_reason, None)])  # type: ignore[union-attr]
        if kind is Failure:
            self.failed = True
            return sse_event(event.error.payload())  # type: ignore[union-attr]
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


class BodyCollector(CompletionAccumulator):
    """Events in (:meth:`add`), one ``chat.completion`` object out (:meth:`body`)."""

    __slots__ = ()

    def body(self, *, model: str, completion_id: str | None = None, created: int | None = None) -> dict[str, Any]:
        choices = []
        for index in sorted(self.choices):
            choice = self.choices[index]
            choices.append(
                {
                    "index": index,
                    "message": choice.merged_message(),
                    "logprobs": choice.logprobs,
                    "finish_reason": choice.finish_reason or "stop",
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
