"""MCP servers' tools in agent mode: connections, the tool adapter, names and result translation."""

from toolrelay.tools.mcp.connection import McpConnection, McpUnavailableError, RestartPolicy, ServerStatus
from toolrelay.tools.mcp.names import tool_name
from toolrelay.tools.mcp.servers import McpServers
from toolrelay.tools.mcp.tool import McpTool

__all__ = ["McpConnection", "McpServers", "McpTool", "McpUnavailableError", "RestartPolicy", "ServerStatus", "tool_name"]
