"""A per-request MCP server: a URL a client named, connected for one request only.

The client chooses the URL, so it is an SSRF attempt until proven otherwise:
it passes fetch_page's :class:`~toolrelay.tools.network_guard.NetworkGuard`
(resolved by us, every address public or in the operator's allowed networks,
not an address of this host), and every HTTP request of the session goes to
a vetted address only (original ``Host`` header and TLS name), so a DNS answer
that changes after the check cannot turn the session inward. Redirects are
not followed: a redirect answer fails the session, so no hop escapes the check.

The SDK's transport and ``ClientSession`` are task-group context managers
that one task must enter and leave, so the connection lives in a task of its
own from :meth:`RequestServer.open` to :meth:`RequestServer.close`. The
headers the client gave (credentials for its server) are sent to that server
and nowhere else: never logged, never stored.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from toolrelay.tools.network_guard import FetchRefused, NetworkGuard, VettedTarget, parse_ip, parse_url

__all__ = ["RequestServer", "RequestServerError", "vet_server_url"]

log = logging.getLogger("toolrelay.mcp")

_CLIENT_INFO = types.Implementation(name="toolrelay", version="1")
_MAX_LIST_PAGES = 20


class RequestServerError(Exception):
    """The server could not be reached or listed; the message names no header value."""


async def vet_server_url(guard: NetworkGuard, raw: str) -> VettedTarget:
    """Where ``raw`` may be reached; raises :class:`FetchRefused` with the reason."""
    return await guard.vet(parse_url(raw))


class _PinnedTransport(httpx2.AsyncBaseTransport):
    """Sends each request to the vetted addresses of one origin, never to a fresh DNS answer."""

    def __init__(self, target: VettedTarget) -> None:
        self._target = target
        self._inner = httpx2.AsyncHTTPTransport(trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        target = self._target
        url = request.url
        if url.scheme != target.url.scheme or url.host.lower() != target.host or (url.port or (443 if url.scheme == "https" else 80)) != target.port:
            raise httpx2.ConnectError(f"refused: {url.scheme}://{url.host} is not the vetted MCP server", request=request)
        host_header = f"[{target.host}]" if ":" in target.host else target.host
        if url.port is not None:
            host_header += f":{url.port}"
        request.headers["Host"] = host_header
        if url.scheme == "https" and parse_ip(target.host) is None:
            request.extensions["sni_hostname"] = target.host
        last: httpx2.ConnectError | None = None
        for ip in target.ips[:3]:
            request.url = url.copy_with(host=ip)
            try:
                return await self._inner.handle_async_request(request)
            except httpx2.ConnectError as exc:
                last = exc
        assert last is not None  # noqa: S101 (narrows: the loop ran at least once)
        raise last

    async def aclose(self) -> None:
        await self._inner.aclose()


class RequestServer:
    """One per-request server: :meth:`open` connects and lists, :meth:`call` runs a tool, :meth:`close` ends it."""

    def __init__(self, label: str, target: VettedTarget, headers: dict[str, str], *, timeout: float, lifetime: float) -> None:
        self.name = label
        self._lifetime = lifetime
        self._target = target
        self._headers = headers
        self._timeout = timeout
        self._session: ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._failure: BaseException | None = None
        self.tools: list[types.Tool] = []

    async def open(self) -> list[types.Tool]:
        """Connect, initialize and list the tools within the timeout; raises :class:`RequestServerError`."""
        self._task = asyncio.get_running_loop().create_task(self._serve(), name=f"mcp-request:{self.name}")
        try:
            async with asyncio.timeout(self._timeout):
                await self._ready.wait()
        except TimeoutError:
            await self.close()
            raise RequestServerError(f"MCP server {self.name!r} did not answer within {self._timeout:g} s") from None
        if self._failure is not None:
            await self.close()
            raise RequestServerError(f"MCP server {self.name!r} could not be reached: {_describe(self._failure)}")
        return self.tools

    async def close(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            with anyio.move_on_after(5):
                with suppress(asyncio.CancelledError, Exception):
                    await asyncio.shield(task)
            if not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await task
        self._session = None

    async def call(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        session = self._session
        if session is None:
            raise RequestServerError(f"MCP server {self.name!r} is not connected")
        result = await session.call_tool(tool, arguments)
        if not isinstance(result, types.CallToolResult):
            raise RequestServerError(f"MCP server {self.name!r} answered tools/call with a {type(result).__name__}")
        return result

    async def _serve(self) -> None:
        try:
            transport = _PinnedTransport(self._target)
            # No redirects (a hop would escape the check), no proxies or cookies from the environment.
            async with (
                httpx2.AsyncClient(
                    transport=transport,
                    headers=self._headers,
                    follow_redirects=False,
                    trust_env=False,
                    timeout=httpx2.Timeout(self._timeout, read=300.0),
                ) as client,
                streamable_http_client(str(self._target.url), http_client=client) as (read, write),
                ClientSession(read, write, client_info=_CLIENT_INFO) as session,
            ):
                await session.initialize()
                cursor: str | None = None
                for _ in range(_MAX_LIST_PAGES):
                    page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
                    self.tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self._session = session
                self._ready.set()
                # Bounded: a request whose end never closed this (a bug, a lost task) cannot keep it open.
                with anyio.move_on_after(self._lifetime):
                    await self._stop.wait()
        except Exception as exc:  # noqa: BLE001 - any failure is the request's to report
            self._failure = exc
        finally:
            self._session = None
            self._ready.set()


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, FetchRefused):
        return str(exc)
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    # The type only: an exception's text may quote a request, and its headers are the client's secrets.
    return type(exc).__name__
