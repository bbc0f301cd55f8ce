"""How the agent's intermediate steps reach the client.

Each step is emitted as readable text in ``reasoning_content`` and
``reasoning`` (what chat UIs show) and as a structured record (what programs
read). Records carry a unique integer ``index``.

Non-streaming, the records are the message's ``agent_steps`` list. Streaming,
two SDK stream accumulators disagree on unknown delta fields: the Python SDK's
``accumulate_delta`` merges list entries by ``index`` (and adds numbers and
concatenates strings of an entry sent twice, so a record must never be re-sent
in the same field), while the Node SDK's ``ChatCompletionStream`` does
``Object.assign(message, delta)``, keeping only the last value of the field.
So each record is streamed once, live, in ``agent_steps_delta`` (a one-entry
list), and the complete ``agent_steps`` list is sent once, in the chunk that
carries the finish reason: both accumulators then end with every record in
``message.agent_steps``, exactly like a non-streaming response.
"""

from __future__ import annotations

from typing import Any

import orjson

from toolrelay.app.events import ChoiceDelta

STEPS_FIELD = "agent_steps"
# Streaming only: the records new in this chunk (see the module docstring).
LIVE_STEPS_FIELD = "agent_steps_delta"
_SUMMARY_CHARS = 300


def summarize(text: str, limit: int = _SUMMARY_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class StepLog:
    """Numbers step records and renders them as deltas."""

    def __init__(self, *, streaming: bool = False, outputs: bool = False) -> None:
        self.records: list[dict[str, Any]] = []
        self.streaming = streaming
        # The whole tool output in each tool_result record (``output``): the Responses API shows it
        # as a server-side item's output; chat keeps its records small (``summary``).
        self.outputs = outputs

    def _delta(self, record: dict[str, Any], text: str) -> ChoiceDelta:
        record = {"index": len(self.records), **record}
        self.records.append(record)
        field = LIVE_STEPS_FIELD if self.streaming else STEPS_FIELD
        return ChoiceDelta(0, {"reasoning_content": text, "reasoning": text, field: [record]})

    def closing_fields(self) -> dict[str, Any]:
        """Fields for the stream's finishing delta: every record, once, for SDKs that keep only a field's last value."""
        if not self.streaming or not self.records:
            return {}
        return {STEPS_FIELD: list(self.records)}

    def tool_call(self, step: int, call_id: str, name: str, arguments: Any, **extra: Any) -> ChoiceDelta:
        shown = orjson.dumps(arguments).decode() if not isinstance(arguments, str) else arguments
        return self._delta(
            {"type": "tool_call", "step": step, "call_id": call_id, "tool": name, "arguments": arguments, **extra},
            f"Calling {name}({summarize(shown, 200)})\n",
        )

    def tool_result(self, step: int, call_id: str, outcome: Any) -> ChoiceDelta:
        record: dict[str, Any] = {
            "type": "tool_result",
            "step": step,
            "call_id": call_id,
            "tool": outcome.name,
            "status": outcome.status,
            "summary": summarize(outcome.content),
            "duration_ms": outcome.duration_ms,
        }
        if outcome.truncated:
            record["truncated"] = True
        if outcome.sources:
            record["sources"] = [{"url": s.url, "title": s.title} for s in outcome.sources]
        if outcome.data:
            record["data"] = outcome.data
        if self.outputs:
            record["output"] = outcome.content
        verb = "returned" if outcome.status == "ok" else f"failed ({outcome.status})"
        return self._delta(record, f"{outcome.name} {verb}: {summarize(outcome.content, 200)}\n")

    def note(self, kind: str, message: str, **extra: Any) -> ChoiceDelta:
        return self._delta({"type": kind, "message": message, **extra}, message + "\n")
