"""The MCP server: toolrelay's tools behind the official SDK's low-level ``Server``.

One server definition serves both transports. What differs is who the
caller is and how a call is booked, which the transport supplies as a
:data:`Admission`: over HTTP the ``/mcp`` request was already authenticated
and admitted by the route's guard, so a call only reads the request's
``RequestInfo``; over stdio each call is admitted and released here
(:mod:`toolrelay.app.mcp_server.stdio`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from toolrelay.app import __version__
from toolrelay.app.errors import OpenAIError
from toolrelay.app.mcp_server.catalogue import ToolCatalogue, outcome_result
from toolrelay.app.middleware import RequestInfo
from toolrelay.memory import scope_for
from toolrelay.tools.base import ToolContext

__all__ = ["Admission", "Caller", "build_server"]

# The request a tool call belongs to, admitted for the caller (raises the gate's refusal),
# kept for the call's duration.
Admission = Callable[[ServerRequestContext[Any, Any]], AbstractAsyncContextManager[RequestInfo]]
# The API key id of the caller of a message (None: no key, auth off), for what it may list.
Caller = Callable[[ServerRequestContext[Any, Any]], "str | None"]

INSTRUCTIONS = (
    "toolrelay's tools: run Python in an isolated sandbox, search the web, fetch a page as text, "
    "save/search/forget long-term memories (private to your API key), and get the current time."
)


def build_server(catalogue: ToolCatalogue, admission: Admission, caller: Caller) -> Server[Any]:
    async def list_tools(ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return catalogue.listing(caller(ctx))

    async def call_tool(ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            async with admission(ctx) as info:
                if catalogue.serves(params.name, info.key_id):
                    # The ledger's model column names what was used; only our own names, never client text.
                    info.model = "tool:" + params.name
                # Memory is the key's own scope: MCP has no `user`, and a client cannot name another scope.
                context = ToolContext(scope=scope_for(info.key_id, None), request_id=info.request_id)
                outcome = await catalogue.call(params.name, params.arguments, context, info.key_id)
                if outcome.status != "ok":
                    info.error_code = f"tool_{outcome.status}"
                return outcome_result(outcome)
        except OpenAIError as exc:
            # A refusal at admission (over stdio: the key's limits), shown as the tool's error.
            return types.CallToolResult(content=[types.TextContent(type="text", text=f"error: {exc.message}")], is_error=True)

    return Server("toolrelay", version=__version__, instructions=INSTRUCTIONS, on_list_tools=list_tools, on_call_tool=call_tool)
