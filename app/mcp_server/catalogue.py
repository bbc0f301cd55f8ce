"""Which tools toolrelay serves over MCP, and the one way an MCP client calls one.

The tools are the agent's own (:class:`toolrelay.tools.registry.ToolRegistry`):
an MCP call goes through :meth:`ToolRegistry.call` exactly like a model's
call, so the client's arguments are validated against the tool's JSON
Schema, the tool runs under its timeout, its output is capped, a failure
becomes an error result, and the tool metrics count it. Code runs only in
the python tool's sandbox.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import mcp_types as types

from toolrelay.app.settings import McpEndpointSettings
from toolrelay.tools.base import ToolContext
from toolrelay.tools.registry import ToolOutcome, ToolRegistry

__all__ = ["ToolCatalogue", "outcome_result"]


@dataclass(frozen=True, slots=True)
class ToolCatalogue:
    """The served subset of ``registry``, decided per listing (the python tool joins once its sandbox is up).

    ``offered`` names the agent's enabled built-ins (read when asked);
    ``aggregated(key_id)`` names the tools of MCP servers toolrelay itself
    uses that this key may use (its ``mcp_servers`` allow-list), served only
    when ``settings.reexport_mcp_tools`` allows it.
    """

    registry: ToolRegistry
    settings: McpEndpointSettings
    offered: Callable[[], Iterable[str]]
    aggregated: Callable[[str | None], Iterable[str]] = lambda key_id: ()

    def names(self, key_id: str | None = None) -> list[str]:
        """The tools served to the caller with API key ``key_id``."""
        wanted = set(self.settings.tools)
        names = [n for n in self.offered() if not wanted or n in wanted]
        if self.settings.reexport_mcp_tools:
            names += [n for n in self.aggregated(key_id) if (not wanted or n in wanted) and n not in names]
        return [n for n in names if n in self.registry]

    def serves(self, name: str, key_id: str | None = None) -> bool:
        return name in self.names(key_id)

    def listing(self, key_id: str | None = None) -> types.ListToolsResult:
        tools: list[types.Tool] = []
        for name in self.names(key_id):
            tool = self.registry.get(name)
            if tool is not None:
                tools.append(types.Tool(name=tool.name, description=tool.description, input_schema=dict(tool.parameters)))
        return types.ListToolsResult(tools=tools)

    async def call(self, name: str, arguments: dict[str, object] | None, context: ToolContext, key_id: str | None = None) -> ToolOutcome:
        """Run one tool served to ``key_id``; a name not served is answered like an unknown one, never run."""
        served = self.names(key_id)
        if name not in served:
            # Not the registry's own answer: it would name the tools this endpoint does not serve.
            shown = name[:_SHOWN_NAME_CHARS]
            return ToolOutcome(
                name=shown, status="unknown_tool", content=f"error: there is no tool named {shown!r}. Available tools: {', '.join(served)}.", duration_ms=0.0
            )
        return await self.registry.call(name, dict(arguments or {}), context)


_SHOWN_NAME_CHARS = 100


def outcome_result(outcome: ToolOutcome) -> types.CallToolResult:
    """The MCP result of a registry outcome: its text, ``isError`` unless it succeeded."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=outcome.content)], is_error=outcome.status != "ok")
