"""Built-in tools for the agent tests, following :mod:`tools.base`.

They run inside the relay's event loop (a uvicorn thread); what they observe
is recorded under a lock so the test thread can read it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from toolrelay.tools.base import ToolContext, ToolResult


@dataclass
class ToolEvent:
    kind: str  # "start" | "end" | "cancelled"
    at: float
    arguments: dict[str, Any]
    context: ToolContext | None = None


class RecordingTool:
    """Base: records every start/end/cancellation with monotonic timestamps."""

    name = "recording"
    description = "A test tool."
    parameters: dict[str, Any] = {"type": "object", "properties": {}}
    timeout = 30.0

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.events: list[ToolEvent] = []

    def reset(self) -> None:
        with self._lock:
            self.events.clear()

    def _note(self, kind: str, arguments: dict[str, Any], context: ToolContext | None = None) -> None:
        with self._lock:
            self.events.append(ToolEvent(kind, time.monotonic(), dict(arguments), context))
            self._lock.notify_all()

    def of(self, kind: str) -> list[ToolEvent]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[ToolEvent]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [e for e in self.events if e.kind == kind]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.name}: expected {count} {kind!r} events, got {[(e.kind, e.arguments) for e in self.events]}")
                self._lock.wait(remaining)


class EchoTool(RecordingTool):
    name = "echo"
    description = "Repeat the given text back."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 1}},
        "required": ["text"],
        "additionalProperties": False,
    }
    timeout = 5.0

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        self._note("start", arguments, context)
        self._note("end", arguments, context)
        return ToolResult(content=f"echo: {arguments['text']}")


class SlowTool(RecordingTool):
    """Sleeps ``seconds`` (default 1); records whether it was cancelled."""

    name = "slow"
    description = "Wait for a number of seconds, then report."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0}, "tag": {"type": "string"}},
        "additionalProperties": False,
    }
    timeout = 60.0

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        self._note("start", arguments, context)
        try:
            await asyncio.sleep(float(arguments.get("seconds", 1.0)))
        except asyncio.CancelledError:
            self._note("cancelled", arguments, context)
            raise
        self._note("end", arguments, context)
        return ToolResult(content=f"slept {arguments.get('seconds', 1.0)} s (tag {arguments.get('tag', '-')})")


class HangTool(SlowTool):
    """Like SlowTool but with its own short timeout (the tool's ``timeout`` attribute)."""

    name = "hang"
    description = "Never finishes in time."
    timeout = 0.5


class RaisingTool(RecordingTool):
    name = "boom"
    description = "Always fails."
    timeout = 5.0

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        self._note("start", arguments, context)
        raise RuntimeError("kaboom 42")


class BadOutputTool(RecordingTool):
    name = "bad_output"
    description = "Returns something that is not a ToolResult."
    timeout = 5.0

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        self._note("start", arguments, context)
        return {"content": "a dict, not a ToolResult"}


class HugeOutputTool(RecordingTool):
    name = "huge"
    description = "Returns a lot of text."
    timeout = 5.0
    size = 10_000

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        self._note("start", arguments, context)
        return ToolResult(content="x" * self.size)


@dataclass
class TestTools:
    echo: EchoTool = field(default_factory=EchoTool)
    slow: SlowTool = field(default_factory=SlowTool)
    hang: HangTool = field(default_factory=HangTool)
    boom: RaisingTool = field(default_factory=RaisingTool)
    bad_output: BadOutputTool = field(default_factory=BadOutputTool)
    huge: HugeOutputTool = field(default_factory=HugeOutputTool)

    __test__ = False  # not a pytest test class

    def all(self) -> list[RecordingTool]:
        return [self.echo, self.slow, self.hang, self.boom, self.bad_output, self.huge]

    def names(self) -> list[str]:
        return [t.name for t in self.all()]

    def reset(self) -> None:
        for tool in self.all():
            tool.reset()

    def register(self, server: Any) -> None:
        for tool in self.all():
            server.services.agent.register_tool(tool)
