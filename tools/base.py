"""The contract every built-in tool follows.

A tool is an object with a name, a description, a JSON Schema for its
arguments, a timeout and an async ``run``. The agent loop validates the
arguments against the schema before ``run`` is called, enforces the timeout,
and caps the size of what comes back, so a tool only has to do its job.

Tools receive their long-lived dependencies (sandbox, memory store, HTTP
client, settings) through their constructor, and per-call facts (whose memory
scope, which request) through :class:`ToolContext`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Source:
    """A web page a tool result is based on; answers cite these."""

    url: str
    title: str = ""
    snippet: str = ""


@dataclass(slots=True)
class ToolResult:
    """What a tool hands back.

    ``content`` is the text the model reads (the loop truncates it to the
    configured output limit). ``is_error`` marks a failure the model should
    see and may recover from. ``data`` is a small JSON-able summary for the
    step record shown to the client; ``sources`` feed citations.
    ``images`` are ``data:`` URLs the model is shown next to the result (a
    chat ``tool`` message holds text only, so the loop adds them as a user
    message's image parts).
    """

    content: str
    is_error: bool = False
    data: dict[str, Any] | None = None
    sources: list[Source] = field(default_factory=list)
    images: tuple[str, ...] = ()

    @classmethod
    def error(cls, message: str, **data: Any) -> ToolResult:
        return cls(content=f"error: {message}", is_error=True, data=data or None)


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Per-call facts a tool may need.

    ``scope`` identifies whose long-term memory is addressed: the API key's id
    and, within it, the request's ``user`` field. Tools must never widen it.
    """

    scope: str
    request_id: str = ""
    user: str | None = None


@runtime_checkable
class Tool(Protocol):
    name: str
    description: str
    parameters: dict[str, Any]
    timeout: float

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult: ...


def tool_schema(tool: Tool) -> dict[str, Any]:
    """The OpenAI ``tools[]`` entry that offers ``tool`` to a model."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }
