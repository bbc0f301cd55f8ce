"""``toolrelay mcp``: the same MCP server over stdio, for desktop hosts that start it as a child.

Who is calling: the host passes an API key in ``TOOLRELAY_MCP_KEY`` (an
environment variable, not an argument: arguments are visible to every user
in ``ps``). It is checked once at start-up like a Bearer key (revoked,
expired and unknown keys are refused; none is needed while the data
directory has no keys, as for ``toolrelay serve`` on loopback), and, as at
``/mcp``, a key whose model allow-list admits no agent model is refused:
these are agent mode's tools. Every tool
call is then admitted for that key (its requests per minute and parallel
slots), run through the same tool registry, and booked in the usage ledger
with mode ``mcp``; memory is that key's own scope; re-exported MCP servers'
tools are the key's ``mcp_servers`` only.

The process calls no model, so no upstream is started (the embedded model
would otherwise load for nothing); the sandbox, memory store and ledger start
as in the server. stdout carries the protocol only; logs go to stderr.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server

from toolrelay.app.errors import OpenAIError
from toolrelay.app.ids import new_request_id
from toolrelay.app.mcp_server.access import not_allowed
from toolrelay.app.mcp_server.catalogue import ToolCatalogue
from toolrelay.app.mcp_server.server import build_server
from toolrelay.app.middleware import RequestInfo

if TYPE_CHECKING:
    from toolrelay.app.services import Services

__all__ = ["EVERY_AGENT_MODEL", "KEY_ENV", "StdioRefused", "serve_stdio"]

KEY_ENV = "TOOLRELAY_MCP_KEY"

#: Stands for models this process cannot name (discovered from an upstream, or
#: reached through a model prefix): only a pattern that admits every agent id
#: (``*``, ``agent/*``) matches this literal id.
EVERY_AGENT_MODEL = "agent/*"


class StdioRefused(Exception):
    """The server cannot serve this host (no agent, a refused key); the message says why."""


class _StdioCaller:
    """What the gate reads of a request (``scope``): the key as a Bearer header, no network address."""

    def __init__(self, key: str | None) -> None:
        headers = [(b"authorization", b"Bearer " + key.encode("latin-1", "replace"))] if key else []
        self.scope: dict[str, Any] = {"type": "stdio", "headers": headers, "client": ("stdio", 0)}


async def serve_stdio(services: Services, catalogue: ToolCatalogue, agent_models: Sequence[str], environ: dict[str, str] | None = None) -> None:
    """Serve MCP on this process's stdin/stdout until the host closes it.

    ``services`` are built by the caller (the CLI, the composition root) without
    upstreams or the ``/mcp`` route; they are started and closed here.
    ``agent_models`` are the agent model ids the configuration serves (the
    services here have no router to ask), checked against the key's allow-list.
    """
    environ = dict(os.environ) if environ is None else environ
    gate = services.gate
    caller = _StdioCaller(environ.get(KEY_ENV, "").strip() or None)
    await services.start()
    try:
        who = RequestInfo(new_request_id())
        try:
            await gate.authenticate(caller, who)
        except OpenAIError as exc:
            raise StdioRefused(f"{exc.message} (the key comes from ${KEY_ENV})") from None
        key_id = who.key_id
        if key_id is not None and not any(gate.allows_model(who, model) for model in agent_models):
            raise StdioRefused(f"{not_allowed().message} (the key comes from ${KEY_ENV})")

        @asynccontextmanager
        async def admitted_call(ctx: ServerRequestContext[Any, Any]) -> AsyncIterator[RequestInfo]:
            info = RequestInfo(new_request_id())
            info.key_id = key_id
            info.mode = "mcp"
            info.metered = True
            try:
                info.ticket = await gate.admit_unpriced(caller, info)
                yield info
                info.status = 200
            except OpenAIError as exc:
                info.status = exc.status
                info.error_code = exc.code
                raise
            finally:
                await gate.release(info)

        server = build_server(catalogue, admitted_call, lambda ctx: key_id)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await services.close()
