"""How the agent's intermediate steps reach the client.

Each step is emitted twice in one delta: as readable text in
``reasoning_content`` and ``reasoning`` (what chat UIs show), and as a
structured record in the ``agent_steps`` extension field (what programs
read). Records carry a unique integer ``index`` because the OpenAI SDK's
stream accumulator merges list entries by ``index`` and raises on entries
without one; with unique indexes the accumulated message holds every record,
exactly like a non-streaming response's ``message.agent_steps``.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.events import ChoiceDelta

STEPS_FIELD = "agent_steps"
_SUMMARY_CHARS = 300


def summarize(text: str, limit: int = _SUMMARY_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class StepLog:
    """Numbers step records and renders them as deltas."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def _delta(self, record: dict[str, Any], text: str) -> ChoiceDelta:
        record = {"index": len(self.records), **record}
        self.records.append(record)
        return ChoiceDelta(0, {"reasoning_content": text, "reasoning": text, STEPS_FIELD: [record]})

    def tool_call(self, step: int, call_id: str, name: str, arguments: Any) -> ChoiceDelta:
        shown = orjson.dumps(arguments).decode() if not isinstance(arguments, str) else arguments
        return self._delta(
            {"type": "tool_call", "step": step, "call_id": call_id, "tool": name, "arguments": arguments},
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
        verb = "returned" if outcome.status == "ok" else f"failed ({outcome.status})"
        return self._delta(record, f"{outcome.name} {verb}: {summarize(outcome.content, 200)}\n")

    def note(self, kind: str, message: str, **extra: Any) -> ChoiceDelta:
        return self._delta({"type": kind, "message": message, **extra}, message + "\n")
