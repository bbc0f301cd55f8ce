"""An MCP server written for the tests with the official SDK (MCPServer, once FastMCP).

Run over stdio (``python mcp_test_server.py stdio``) or streamable HTTP
(``python mcp_test_server.py http <port>``). Its tools are deterministic:
``add`` and ``echo`` answer at once, ``slow`` sleeps, ``fail`` raises (an
``isError`` result), ``pixel`` returns a PNG, ``crash`` kills its own process,
``grow`` adds a tool and announces ``notifications/tools/list_changed``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

# A 1x1 transparent PNG.
PIXEL_PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def build(name: str) -> MCPServer:
    # Quiet: the SDK logs through rich, which is slow to render on a loaded machine.
    server = MCPServer(name, log_level="ERROR")

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Echo the text back, with this server's name and the TEST_SECRET variable it was given.")
    def echo(text: str) -> str:
        return f"{name}:{text}:{os.environ.get('TEST_SECRET', '-')}"

    @server.tool(description="Sleep for the given number of seconds, then answer.")
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool(description="Always fails.")
    def fail(reason: str = "broken") -> str:
        raise ToolError(f"failing on purpose: {reason}")

    @server.tool(description="Return a 1x1 PNG image.")
    def pixel() -> Image:
        return Image(data=PIXEL_PNG, format="png")

    @server.tool(description="Kill this server's process.")
    def crash() -> str:
        os._exit(3)

    @server.tool(description="Add a tool named 'extra' and announce the new tool list.")
    async def grow(ctx: Context) -> str:
        if "extra" not in {t.name for t in server._tool_manager.list_tools()}:

            def extra() -> str:
                return "extra here"

            server.add_tool(extra, name="extra", description="A tool added at run time.")
        await ctx.session.send_tool_list_changed()
        return "grown"

    return server


def main() -> None:
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    name = os.environ.get("TEST_SERVER_NAME", "test")
    server = build(name)
    if transport == "stdio":
        server.run("stdio")
    elif transport == "sse":  # the older HTTP+SSE transport: GET /sse, POST /messages/
        server.run("sse", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]), json_response=transport == "http-json")


if __name__ == "__main__":
    main()
