"""What a Responses request's ``mcp`` entries give its agent run (the I/O half of app/responses/mcp_items.py).

:class:`RequestMcp` resolves the entries of one request: configured servers
by label (their tools already live in the agent's registry), per-request
servers by URL (off unless ``[mcp] allow_request_servers``; the URL vetted by
fetch_page's network guard; connected with the ``mcp`` SDK's streamable HTTP
client for this request only, within ``request_server_connect_timeout_seconds``).
The result, :class:`McpRun`, holds the extra tools, the names needing approval,
the ``mcp_list_tools`` items, the label and server-side name of every MCP tool
(for ``mcp_call`` items), and closes the per-request connections when the run's
events end.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import anyio

from toolrelay.app.errors import OpenAIError, invalid_request
from toolrelay.app.events import Event
from toolrelay.app.responses.mcp_items import McpEntry, list_tools_item, listed_tool, needs_approval
from toolrelay.app.settings import FetchPageSettings, Settings
from toolrelay.tools.host_addresses import parse_addresses
from toolrelay.tools.mcp.request_server import RequestServer, RequestServerError, vet_server_url
from toolrelay.tools.mcp.request_tools import adapt_tools
from toolrelay.tools.mcp.tool import McpTool
from toolrelay.tools.network_guard import FetchRefused, NetworkGuard
from toolrelay.tools.registry import ToolRegistry

__all__ = ["McpRun", "RequestMcp"]


@dataclass(slots=True)
class McpRun:
    """The MCP side of one agent run on ``/v1/responses``."""

    extra_tools: list[McpTool] = field(default_factory=list)
    approval: set[str] = field(default_factory=set)
    listings: list[dict[str, Any]] = field(default_factory=list)
    #: The model's name -> (server label, the server's tool name), every MCP tool the run may see.
    labels: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Tool names of the configured servers the request listed; None: it listed none (all are offered).
    selected: list[str] | None = None
    servers: list[RequestServer] = field(default_factory=list)
    #: Per-request entries not connected yet (:meth:`RequestMcp.connect`).
    pending: list[McpEntry] = field(default_factory=list)

    @property
    def names(self) -> dict[tuple[str, str], str]:
        return {pair: name for name, pair in self.labels.items()}

    async def aclose(self) -> None:
        for server in self.servers:
            await server.close()
        self.servers = []

    async def closing(self, events: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
        """``events``, then the per-request connections closed (however the consumer stops)."""
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()
            with anyio.CancelScope(shield=True):
                await self.aclose()


def _configured(registry: ToolRegistry, offered: list[str]) -> dict[str, list[McpTool]]:
    """The configured servers' tools among ``offered``, by server."""
    by_server: dict[str, list[McpTool]] = {}
    for name in offered:
        tool = registry.get(name)
        if isinstance(tool, McpTool):
            by_server.setdefault(tool.server, []).append(tool)
    return by_server


def _refused(entry: McpEntry, message: str, field_name: str = "") -> OpenAIError:
    param = f"tools[{entry.position}]" + (f".{field_name}" if field_name else "")
    return invalid_request(message, param=param, code="unsupported_value")


class RequestMcp:
    """Resolves requests' ``mcp`` entries; one per handler (it holds the network guard)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings.mcp
        self._tool_timeout = settings.agent.tool_timeout_seconds
        # A connection outlives no run: closed when the run's events end, and at the latest after this.
        self._lifetime = settings.agent.max_wall_seconds + settings.mcp.request_server_connect_timeout_seconds + 60
        guard_settings = FetchPageSettings(
            allow_private=False,
            allow_networks=settings.mcp.request_server_allow_networks,
            # MCP servers live on any port; the address rules still apply.
            allowed_ports=(),
        )
        self._guard = NetworkGuard(guard_settings, server_addresses=sorted(parse_addresses([settings.server.host]), key=str))

    def prepare(self, entries: list[McpEntry], registry: ToolRegistry, offered: list[str]) -> McpRun:
        """The run's MCP side before admission (configured servers, the checks that cost nothing);
        ``offered`` are the tool names the agent offers this key (built-ins and configured servers')."""
        configured = _configured(registry, offered)
        run = McpRun(labels={t.name: (t.server, t.remote_name) for tools in configured.values() for t in tools})
        remote = [e for e in entries if e.url is not None]
        self._check(entries, remote, configured)
        selected: list[str] = []
        for entry in entries:
            if entry.url is not None:
                continue
            tools = [t for t in configured.get(entry.label, []) if entry.allowed is None or t.remote_name in entry.allowed]
            selected.extend(t.name for t in tools)
            run.approval.update(t.name for t in tools if needs_approval(entry, t.remote_name))
            prefix = f"[MCP server {entry.label}] "
            run.listings.append(list_tools_item(entry.label, [listed_tool(t.remote_name, t.parameters, t.description.removeprefix(prefix)) for t in tools]))
        if len(remote) < len(entries):
            run.selected = selected
        run.pending = remote
        return run

    def _check(self, entries: list[McpEntry], remote: list[McpEntry], configured: dict[str, list[McpTool]]) -> None:
        labels: set[str] = set()
        for entry in entries:
            if entry.label in labels:
                raise _refused(entry, f"Duplicate MCP server_label {entry.label!r}.", "server_label")
            labels.add(entry.label)
            if entry.url is None and entry.label not in configured and entry.label not in self._settings.servers:
                raise _refused(
                    entry, f"No MCP server named {entry.label!r} is configured on this server; name one of [mcp.servers] or give a server_url.", "server_label"
                )
        if not remote:
            return
        if not self._settings.allow_request_servers:
            raise _refused(
                remote[0],
                "MCP servers given in a request (server_url) are not enabled on this server; the operator can allow them ([mcp] allow_request_servers).",
            )
        if len(remote) > self._settings.max_request_servers:
            raise _refused(
                remote[self._settings.max_request_servers], f"At most {self._settings.max_request_servers} MCP servers with a server_url per request."
            )
        for entry in remote:
            if entry.label in self._settings.servers:
                raise _refused(entry, f"server_label {entry.label!r} names a configured MCP server; choose another label for a server_url.", "server_label")

    async def connect(self, run: McpRun, registry: ToolRegistry) -> None:
        """Vet, connect and list the per-request servers (after admission: this costs connections)."""
        remote, run.pending = run.pending, []
        if not remote:
            return
        timeout = self._settings.request_server_connect_timeout_seconds
        servers: list[tuple[McpEntry, RequestServer]] = []
        for entry in remote:
            try:
                target = await vet_server_url(self._guard, entry.url or "")
            except FetchRefused as exc:
                raise _refused(entry, f"MCP server URL refused: {exc}.", "server_url") from None
            servers.append((entry, RequestServer(entry.label, target, entry.headers, timeout=timeout, lifetime=self._lifetime)))
        failures: list[tuple[McpEntry, str]] = []

        async def open_one(entry: McpEntry, server: RequestServer) -> None:
            try:
                await server.open()
            except RequestServerError as exc:
                failures.append((entry, str(exc)))

        run.servers = [server for _, server in servers]
        try:
            async with anyio.create_task_group() as group:
                for entry, server in servers:
                    group.start_soon(open_one, entry, server)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run.aclose()
            raise
        if failures:
            await run.aclose()
            entry, reason = min(failures, key=lambda failure: failure[0].position)
            # OpenAI's status for an MCP server it could not list.
            raise OpenAIError(
                424,
                f"Error retrieving tool list from MCP server: {entry.label!r}. {reason}",
                type="external_connector_error",
                param=f"tools[{entry.position}]",
                code="mcp_list_tools_failed",
            )
        taken = set(registry.names())
        for entry, server in servers:
            listed = [t for t in server.tools if entry.allowed is None or t.name in entry.allowed]
            adapters = adapt_tools(server, listed, settings=self._settings, taken=taken, timeout=self._tool_timeout, allowed=entry.allowed)
            taken.update(a.name for a in adapters)
            run.extra_tools.extend(adapters)
            run.labels.update({a.name: (entry.label, a.remote_name) for a in adapters})
            run.approval.update(a.name for a in adapters if needs_approval(entry, a.remote_name))
            kept = {a.remote_name for a in adapters}
            run.listings.append(
                list_tools_item(entry.label, [listed_tool(t.name, t.input_schema, t.description, t.annotations) for t in listed if t.name in kept])
            )
