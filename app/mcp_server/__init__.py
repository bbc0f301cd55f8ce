"""toolrelay's tools served over the Model Context Protocol: ``/mcp`` and ``toolrelay mcp`` (stdio)."""

from toolrelay.app.mcp_server.catalogue import ToolCatalogue, outcome_result
from toolrelay.app.mcp_server.http import MCP_PATH, build_mcp_handler
from toolrelay.app.mcp_server.server import Admission, build_server

__all__ = ["MCP_PATH", "Admission", "ToolCatalogue", "build_mcp_handler", "build_server", "outcome_result"]
