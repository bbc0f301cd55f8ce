"""An entry: the whole completion as stored, and the events that replay it.

An entry is the assembled answer (each choice's merged message, finish
reason and logprobs, the upstream's usage and top-level fields), not the
bytes a client was sent: the chat route replays it through the one encoder
(:mod:`app.encoder`), as one JSON body or as a stream, whichever the new
request asks for, with a fresh id, ``created`` and the client's own model
name. The events are the ones an upstream that answered without streaming
produces (:class:`~app.events.ChoiceMessage`), so nothing downstream knows
the answer came from here.
"""

from __future__ import annotations

from typing import Any

import orjson

from toolrelay.app.accumulate import CompletionAccumulator
from toolrelay.app.events import ChoiceMessage, Event, ResponseMeta, UsageReport

__all__ = ["entry_bytes", "replay_events"]


def entry_bytes(completion: CompletionAccumulator, *, tool_calls: bool) -> bytes | None:
    """The stored form of a finished answer, or None when it must not be stored: an error, no
    choice, a choice without a finish reason (a stream that stopped short), or (unless
    ``tool_calls``) a choice that calls tools. Merges the choices: call once."""
    if completion.error is not None or not completion.choices:
        return None
    choices: list[dict[str, Any]] = []
    for index in sorted(completion.choices):
        choice = completion.choices[index]
        if choice.finish_reason is None:
            return None
        message = choice.merged_message()
        if not tool_calls and (message.get("tool_calls") or message.get("function_call")):
            return None
        choices.append({"index": index, "message": message, "finish_reason": choice.finish_reason, "logprobs": choice.logprobs})
    return orjson.dumps({"choices": choices, "usage": completion.usage, "meta": completion.meta})


def replay_events(entry: bytes) -> list[Event]:
    """The events of a stored answer, in the order an upstream sends them."""
    stored: dict[str, Any] = orjson.loads(entry)
    events: list[Event] = []
    meta = stored.get("meta")
    if meta:
        events.append(ResponseMeta(meta))
    events.extend(ChoiceMessage(c["index"], c["message"], c["finish_reason"], c.get("logprobs")) for c in stored["choices"])
    usage = stored.get("usage")
    if isinstance(usage, dict):
        events.append(UsageReport(usage))
    return events
