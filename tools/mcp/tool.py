"""An MCP server's tool as one of the agent's tools (the :class:`~toolrelay.tools.base.Tool` contract).

The registry validates the arguments against the (bounded) schema, enforces
the timeout and caps the output, exactly as for a built-in; this adapter only
forwards the call and translates the result.
"""

from __future__ import annotations

from typing import Any, Protocol

import mcp_types as types
from mcp.shared.exceptions import MCPError

from toolrelay.tools.base import ToolContext, ToolResult
from toolrelay.tools.mcp.connection import McpUnavailableError
from toolrelay.tools.mcp.request_server import RequestServerError
from toolrelay.tools.mcp.results import tool_result

__all__ = ["McpTool", "ToolServer"]


class ToolServer(Protocol):
    """What runs the calls: a configured server's supervised connection or a per-request server."""

    @property
    def name(self) -> str: ...

    async def call(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult: ...


class McpTool:
    __slots__ = ("_connection", "description", "images_to_model", "max_output_chars", "name", "parameters", "remote_name", "timeout", "trust")

    def __init__(
        self,
        connection: ToolServer,
        *,
        name: str,
        remote_name: str,
        description: str,
        parameters: dict[str, Any],
        timeout: float,
        max_output_chars: int | None,
        trust: str = "untrusted",
        images_to_model: bool = True,
    ) -> None:
        self._connection = connection
        self.name = name
        self.remote_name = remote_name
        self.description = description
        self.parameters = parameters
        self.timeout = timeout
        # Read by the registry: lowers its output cap for this tool.
        self.max_output_chars = max_output_chars
        # Read by the taint rules (agent/taint.py): a third-party tool is assumed to read untrusted content and send data out.
        self.trust = trust
        # Images in results shown to the model as image parts ([mcp.servers.x] image_results = "model"), or only described.
        self.images_to_model = images_to_model

    @property
    def server(self) -> str:
        return self._connection.name

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        try:
            result = await self._connection.call(self.remote_name, arguments)
        except (McpUnavailableError, RequestServerError) as exc:
            return ToolResult.error(str(exc), server=self.server)
        except MCPError as exc:
            return ToolResult.error(f"MCP server {self.server!r} refused the call: {exc.error.message[:500]}", server=self.server)
        translated = tool_result(result, images_to_model=self.images_to_model)
        translated.data = {"server": self.server, **(translated.data or {})}
        return translated
