"""One configured MCP server: its connection, kept alive by a supervisor task.

The SDK's transports and ``ClientSession`` are async context managers whose
task groups must be entered and left by the same task, so each server gets one
long-lived task that owns them: it connects (spawning a stdio child, or
opening the HTTP session), lists the tools, then waits until the connection
ends, a ``notifications/tools/list_changed`` arrives (re-list), or a ping is
due. When the connection ends or fails (a child died, a ping went
unanswered), the tools go away and the task reconnects after a delay that
doubles up to a maximum, so a crashing server cannot spin the host.

A stdio child gets a minimal environment (the SDK's default: PATH, HOME and
the like) plus the variables ``env`` maps from ours; never our whole
environment, which holds upstream keys. Values are read at each (re)start and
never logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.message import SessionMessage

from toolrelay.app.settings import McpServerSettings

__all__ = ["McpConnection", "McpUnavailableError", "RestartPolicy", "ServerStatus"]

log = logging.getLogger("toolrelay.mcp")

_CLIENT_INFO = types.Implementation(name="toolrelay", version="1")
# Pages of tools/list read per listing: a server whose cursor never ends cannot hang us.
_MAX_LIST_PAGES = 20

_Streams = tuple[Any, Any]


class ServerStatus(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DOWN = "down"
    STOPPED = "stopped"


class McpUnavailableError(Exception):
    """The server is not connected right now (starting, restarting, or stopped)."""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    initial_seconds: float
    max_seconds: float
    ping_interval_seconds: float


class _MissingVariableError(Exception):
    pass


async def _relay(
    source: Any,
    sink: MemoryObjectSendStream[SessionMessage | Exception],
    ended: Callable[[], None],
) -> None:
    """Forward the transport's messages to the session, and say when the transport's stream ends (a child exited)."""
    try:
        async with sink:
            async for item in source:
                await sink.send(item)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
        pass
    finally:
        ended()


class McpConnection:
    """The supervised connection to the server ``name``; ``call`` runs one tool on it."""

    def __init__(
        self,
        name: str,
        config: McpServerSettings,
        policy: RestartPolicy,
        *,
        on_tools: Callable[[McpConnection, list[types.Tool]], None],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.policy = policy
        self.status = ServerStatus.STARTING
        # Why the server is down (never holds a secret: names of variables only).
        self.error: str | None = None
        self.restarts = 0
        self.tool_count = 0
        self._on_tools = on_tools
        self._environ = environ
        self._session: ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()
        self._wake: anyio.Event | None = None
        self._ended = False
        self._relist = False

    @property
    def transport(self) -> str:
        return "stdio" if self.config.command else self.config.transport

    async def start(self) -> None:
        """Start the supervisor; return once the first connection attempt succeeded or failed."""
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"mcp:{self.name}")
        with anyio.move_on_after(self.config.connect_timeout_seconds + 5):
            await self._attempted.wait()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.status = ServerStatus.STOPPED
        self._session = None

    async def call(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        session = self._session
        if session is None or self.status is not ServerStatus.READY:
            raise McpUnavailableError(f"MCP server {self.name!r} is {self.status.value}" + (f" ({self.error})" if self.error else ""))
        result = await session.call_tool(tool, arguments)
        if not isinstance(result, types.CallToolResult):
            raise McpUnavailableError(f"MCP server {self.name!r} answered tools/call with a {type(result).__name__}, which toolrelay does not handle")
        return result

    # ------------------------------------------------------------------ supervision

    async def _supervise(self) -> None:
        delay = self.policy.initial_seconds
        while True:
            ready_at: float | None = None
            try:
                ready_at = await self._connect_and_serve()
                self.error = self.error or "the connection closed"
            except _MissingVariableError as exc:
                self.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - any failure of a server is reported and retried
                self.error = _describe(exc)
            self._session = None
            self.tool_count = 0
            self.status = ServerStatus.DOWN
            self._on_tools(self, [])
            self._attempted.set()
            if ready_at is not None and time.monotonic() - ready_at >= self.policy.max_seconds:
                delay = self.policy.initial_seconds  # it had been healthy for a while: a fresh failure
            log.warning("MCP server %r is down (%s); reconnecting in %.1f s", self.name, self.error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.policy.max_seconds)
            self.restarts += 1
            self.status = ServerStatus.STARTING

    async def _connect_and_serve(self) -> float | None:
        """Connect, list the tools, and serve until the connection ends; the time it became ready."""
        self._ended = False
        self._relist = False
        async with AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._transport())
            to_session: MemoryObjectSendStream[SessionMessage | Exception]
            from_relay: MemoryObjectReceiveStream[SessionMessage | Exception]
            to_session, from_relay = anyio.create_memory_object_stream[SessionMessage | Exception](0)
            relays = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(relays.cancel_scope.cancel)
            relays.start_soon(_relay, read, to_session, self._connection_ended)
            session = await stack.enter_async_context(ClientSession(from_relay, write, message_handler=self._on_message, client_info=_CLIENT_INFO))
            with anyio.fail_after(self.config.connect_timeout_seconds):
                await session.initialize()
                tools = await self._list_tools(session)
            self._session = session
            self.status = ServerStatus.READY
            self.error = None
            self._publish(tools)
            self._attempted.set()
            ready_at = time.monotonic()
            log.info("MCP server %r ready (%s, %d tools)", self.name, self.transport, len(tools))
            while not self._ended:
                if self._relist:
                    self._relist = False
                    with anyio.fail_after(self.config.connect_timeout_seconds):
                        tools = await self._list_tools(session)
                    self._publish(tools)
                    continue
                wake = self._wake = anyio.Event()
                with anyio.move_on_after(self.policy.ping_interval_seconds) as idle:
                    await wake.wait()
                if idle.cancelled_caught:
                    # An HTTP server that went away closes nothing we could watch: ask it.
                    with anyio.fail_after(self.config.connect_timeout_seconds):
                        await session.send_ping()
            self._session = None
            return ready_at

    def _publish(self, tools: list[types.Tool]) -> None:
        self.tool_count = len(tools)
        self._on_tools(self, tools)

    def _connection_ended(self) -> None:
        self._ended = True
        self._session = None
        if self._wake is not None:
            self._wake.set()

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._relist = True
            if self._wake is not None:
                self._wake.set()
        elif isinstance(message, Exception):
            log.debug("MCP server %r: transport error %s", self.name, type(message).__name__)
        await anyio.lowlevel.checkpoint()

    async def _list_tools(self, session: ClientSession) -> list[types.Tool]:
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_LIST_PAGES):
            page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    # ------------------------------------------------------------------ transports

    def _variables(self, mapping: Mapping[str, str], what: str) -> dict[str, str]:
        environ = os.environ if self._environ is None else self._environ
        values: dict[str, str] = {}
        for target, source in mapping.items():
            value = environ.get(source)
            if value is None:
                raise _MissingVariableError(f"environment variable {source} (for {what} {target}) is not set")
            values[target] = value
        return values

    def _transport(self) -> AbstractAsyncContextManager[_Streams]:
        config = self.config
        if config.command:
            params = StdioServerParameters(
                command=config.command[0], args=list(config.command[1:]), env=self._variables(config.env, "the variable"), cwd=config.cwd
            )
            return stdio_client(params, errlog=sys.stderr)
        headers = {**config.headers, **self._variables(config.headers_env, "the header")}
        if config.transport == "sse":
            return sse_client(config.url, headers=headers, timeout=config.connect_timeout_seconds)
        return self._streamable_http(config.url, headers)

    @staticmethod
    @asynccontextmanager
    async def _streamable_http(url: str, headers: dict[str, str]) -> AsyncIterator[_Streams]:
        async with create_mcp_http_client(headers=headers) as client, streamable_http_client(url, http_client=client) as streams:
            yield streams


def _describe(exc: BaseException) -> str:
    """A short reason for /ready and the log; exception groups are opened to their first cause."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "timed out connecting"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
