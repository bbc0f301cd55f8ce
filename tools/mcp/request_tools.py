"""The tools of per-request MCP servers, as adapters for one run.

A per-request server's declarations get the same bounds as a configured
server's (count, schema size and depth, description length); names are
``<label>__<tool>`` made unique against every name the run already has, so a
client's server cannot shadow a built-in, a configured server's tool or another
of its own servers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import mcp_types as types

from toolrelay.app.settings import McpSettings
from toolrelay.tools.mcp.names import tool_name
from toolrelay.tools.mcp.schema import SchemaLimits, bounded_parameters
from toolrelay.tools.mcp.tool import McpTool, ToolServer

__all__ = ["RunMcpTools", "adapt_tools"]


@dataclass(slots=True)
class RunMcpTools:
    """Tools a run gets on top of the server's own, and those of them that need the client's approval."""

    tools: list[McpTool] = field(default_factory=list)
    #: Names (as offered to the model) whose calls wait for an ``mcp_approval_response``.
    approval: set[str] = field(default_factory=set)


def adapt_tools(
    server: ToolServer,
    tools: Iterable[types.Tool],
    *,
    settings: McpSettings,
    taken: Collection[str],
    timeout: float,
    max_output_chars: int | None = None,
    allowed: Collection[str] | None = None,
) -> list[McpTool]:
    """Adapters for ``tools`` of ``server`` (filtered by ``allowed``, bounded), named clear of ``taken``."""
    limits = SchemaLimits(max_bytes=settings.max_schema_bytes, max_depth=settings.max_schema_depth)
    names = set(taken)
    adapters: list[McpTool] = []
    seen: set[str] = set()
    for tool in tools:
        if (allowed is not None and tool.name not in allowed) or tool.name in seen or len(adapters) >= settings.max_tools_per_server:
            continue
        seen.add(tool.name)
        parameters, _problem = bounded_parameters(tool.input_schema, limits)
        if parameters is None:
            continue
        description = (tool.description or tool.title or tool.name)[: settings.max_description_chars]
        name = tool_name(server.name, tool.name, names)
        names.add(name)
        adapters.append(
            McpTool(
                server,
                name=name,
                remote_name=tool.name,
                description=f"[MCP server {server.name}] {description}",
                parameters=parameters,
                timeout=timeout,
                max_output_chars=max_output_chars,
            )
        )
    return adapters
