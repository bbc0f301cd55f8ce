"""``/mcp``: the MCP server over streamable HTTP, mounted in the Litestar app.

Each HTTP request is one JSON-RPC message and passes the gate like a
``/v1/memories`` request (:func:`toolrelay.app.guards.metered_key_guard`):
authenticated on its headers (401), counted against the key's requests per
minute and parallel slots (429), booked in the usage ledger with mode
``mcp`` by the outer ASGI layer, refusals included; a tool call's row names
the tool (``tool:<name>``). The request guard (:mod:`toolrelay.app.http_guard`)
runs before all of it, so a web page cannot drive the tools (foreign
``Origin``, ``Sec-Fetch-Site: cross-site``, a rebound ``Host``).

The SDK's session manager runs stateless with JSON answers: no session
outlives its request, so nothing holds a parallel slot between calls and
any worker process can serve any request. Hence only ``POST``: a ``GET``
stream would stay open (holding a slot) without anything to carry, and a
stateless server has no session to ``DELETE``; both get 405, which MCP
clients expect from such servers.

The body is read here first, bounded by ``[mcp_server] max_body_bytes``, and
parsed by the API's strict JSON parser (:mod:`toolrelay.app.jsonbody`), so
``NaN``, lone surrogates and deep nesting are refused as on every other
endpoint before the SDK sees the message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

from litestar.handlers import asgi
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from toolrelay.app.errors import OpenAIError
from toolrelay.app.guards import metered_key_guard
from toolrelay.app.jsonbody import parse_json_body
from toolrelay.app.mcp_server.access import not_allowed
from toolrelay.app.mcp_server.catalogue import ToolCatalogue
from toolrelay.app.mcp_server.server import build_server
from toolrelay.app.middleware import RequestInfo, request_info

if TYPE_CHECKING:
    from toolrelay.app.services import Services

__all__ = ["MCP_PATH", "build_mcp_handler"]

MCP_PATH = "/mcp"

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _request_info(ctx: ServerRequestContext[Any, Any]) -> RequestInfo:
    request = ctx.request
    if request is None:  # the SDK attaches the HTTP request to every message it reads from one
        raise RuntimeError("an MCP message without its HTTP request")
    return request_info(cast("dict[str, Any]", request.scope))


@asynccontextmanager
async def _admitted_request(ctx: ServerRequestContext[Any, Any]) -> AsyncIterator[RequestInfo]:
    # The route's guard admitted this HTTP request; the outer ASGI layer releases it.
    yield _request_info(ctx)


def _caller(ctx: ServerRequestContext[Any, Any]) -> str | None:
    return _request_info(ctx).key_id


def _method_not_allowed(method: str) -> OpenAIError:
    return OpenAIError(
        405,
        f"Method {method} is not allowed for {MCP_PATH}: this MCP server is stateless and answers POST only (no server-sent stream, no session to delete).",
        type="invalid_request_error",
        code="method_not_allowed",
        headers={"allow": "POST"},
    )


def _too_large(limit: int) -> OpenAIError:
    return OpenAIError(413, f"MCP message larger than {limit} bytes.", type="invalid_request_error", code="request_too_large")


async def _read_body(scope: Message, receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None when the client left; 413 beyond ``limit`` (declared or sent)."""
    for name, value in scope.get("headers") or ():
        if name == b"content-length" and value.strip().isdigit() and int(value) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` with ``body`` handed out first (read already), then the real messages (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


class _ManagerTask:
    """Runs the session manager (its task group) in a task of its own from start-up to shutdown.

    Litestar runs the start and shutdown hooks in different cancel scopes, so a
    task group entered in one hook cannot be exited in the other (anyio refuses:
    "exit a cancel scope that isn't the current task's current cancel scope").
    """

    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        self._manager = manager
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        started = asyncio.Event()

        async def run() -> None:
            async with self._manager.run():
                started.set()
                await self._stop.wait()

        self._task = asyncio.get_running_loop().create_task(run(), name="mcp-session-manager")
        waiter = asyncio.ensure_future(started.wait())
        await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():
            waiter.cancel()
            await self._task  # raises what stopped it

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


def build_mcp_handler(services: Services, catalogue: ToolCatalogue) -> Any:
    """The ``/mcp`` route handler; the SDK's session manager runs for the life of ``services``."""
    settings = services.settings.mcp_server
    gate = services.gate
    manager = StreamableHTTPSessionManager(
        app=build_server(catalogue, _admitted_request, _caller),
        json_response=True,
        stateless=True,
        # Host and Origin are checked for every route by app/http_guard.py, with the operator's settings.
        security_settings=None,
        max_request_body_size=settings.max_body_bytes,
    )
    lifetime = _ManagerTask(manager)
    services.on_start(lifetime.start)
    services.on_close(lifetime.stop)

    def may_use_tools(info: RequestInfo) -> None:
        # As for /v1/memories: these are agent mode's tools, for keys allowed an agent model.
        if info.key_id is None or info.key_id == "admin":
            return
        if not any(gate.allows_model(info, "agent/" + model_id) for model_id, _ in services.router.served_models()):
            raise not_allowed()

    @asgi(
        MCP_PATH,
        is_mount=True,
        guards=[metered_key_guard(gate, mode="mcp", check=may_use_tools)],
        include_in_schema=False,
        # The request's RequestInfo lives in the scope; the SDK reads it through the same dict.
        copy_scope=False,
    )
    async def mcp_endpoint(scope: Message, receive: Receive, send: Send) -> None:
        method = scope.get("method", "")
        if method != "POST":
            raise _method_not_allowed(method)
        body = await _read_body(scope, receive, settings.max_body_bytes)
        if body is None:
            return
        parse_json_body(body)  # 400 invalid_json for what the API refuses everywhere
        await manager.handle_request(cast("Any", scope), cast("Any", _replaying(body, receive)), cast("Any", send))

    return mcp_endpoint
