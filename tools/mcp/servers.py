"""The configured MCP servers, and their tools in the agent's registry.

Each server's tools are registered under ``<server>__<tool>`` names when it
lists them, replaced when it re-lists, and withdrawn from what runs are
offered while it is down (a run that already holds one gets an error result
naming the server's state). Tools a server declares are hostile input: the
count, schema size and depth, and description length are bounded, and
``allowed_tools`` filters by the server's own names.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

import anyio
import mcp_types as types

from toolrelay.app.settings import AgentSettings, McpSettings
from toolrelay.tools.mcp.connection import McpConnection, RestartPolicy, ServerStatus
from toolrelay.tools.mcp.names import tool_name
from toolrelay.tools.mcp.schema import SchemaLimits, bounded_parameters
from toolrelay.tools.mcp.tool import McpTool
from toolrelay.tools.registry import ToolRegistry

__all__ = ["McpServers"]

log = logging.getLogger("toolrelay.mcp")


class McpServers:
    def __init__(self, settings: McpSettings, agent: AgentSettings, registry: ToolRegistry, *, environ: Mapping[str, str] | None = None) -> None:
        self._settings = settings
        self._agent = agent
        self._registry = registry
        self._limits = SchemaLimits(max_bytes=settings.max_schema_bytes, max_depth=settings.max_schema_depth)
        policy = RestartPolicy(
            initial_seconds=settings.restart_initial_seconds,
            max_seconds=settings.restart_max_seconds,
            ping_interval_seconds=settings.ping_interval_seconds,
        )
        self._connections = {name: McpConnection(name, config, policy, on_tools=self._update, environ=environ) for name, config in settings.servers.items()}
        # Registered tool names per server, in the order the server listed them.
        self._tools: dict[str, list[str]] = {name: [] for name in self._connections}
        # Why a declared tool was left out, per server (for /ready).
        self._skipped: dict[str, list[str]] = {name: [] for name in self._connections}

    async def start(self) -> None:
        """Connect every server concurrently; a server that fails keeps retrying in the background."""
        async with anyio.create_task_group() as tg:
            for connection in self._connections.values():
                tg.start_soon(connection.start)

    async def close(self) -> None:
        for connection in self._connections.values():
            await connection.close()

    def tool_names(self, servers: Collection[str] | None = None) -> list[str]:
        """The tools of the servers that are up now (of ``servers`` only, when given), in configuration order."""
        names: list[str] = []
        for server, connection in self._connections.items():
            if connection.status is ServerStatus.READY and (servers is None or server in servers):
                names.extend(self._tools[server])
        return names

    def server_names(self) -> list[str]:
        return list(self._connections)

    def status(self) -> dict[str, Any]:
        """``{"servers": [each server's state]}`` for /ready (errors name variables, never their values)."""
        out: list[dict[str, Any]] = []
        for name, connection in self._connections.items():
            entry: dict[str, Any] = {
                "name": name,
                "transport": connection.transport,
                "status": connection.status.value,
                "ok": connection.status is ServerStatus.READY,
                "tools": len(self._tools[name]) if connection.status is ServerStatus.READY else 0,
                "restarts": connection.restarts,
            }
            if connection.error:
                entry["detail"] = connection.error
            if self._skipped[name]:
                entry["skipped_tools"] = list(self._skipped[name])
            out.append(entry)
        return {"servers": out}

    def _update(self, connection: McpConnection, tools: list[types.Tool]) -> None:
        server = connection.name
        if not tools and connection.status is not ServerStatus.READY:
            return  # down: keep the names (runs are offered none), so they come back unchanged
        for name in self._tools[server]:
            self._registry.remove(name)
        config = connection.config
        allowed = None if config.allowed_tools is None else set(config.allowed_tools)
        timeout = min(config.timeout_seconds or self._agent.tool_timeout_seconds, self._agent.tool_timeout_seconds)
        registered: list[str] = []
        skipped: list[str] = []
        seen: set[str] = set()
        for tool in tools:
            if allowed is not None and tool.name not in allowed:
                continue
            if tool.name in seen:
                skipped.append(f"{tool.name[:100]}: declared twice")
                continue
            seen.add(tool.name)
            if len(registered) >= self._settings.max_tools_per_server:
                skipped.append(f"{tool.name[:100]}: more than {self._settings.max_tools_per_server} tools")
                continue
            parameters, problem = bounded_parameters(tool.input_schema, self._limits)
            if parameters is None:
                skipped.append(f"{tool.name[:100]}: {problem}")
                continue
            description = (tool.description or tool.title or tool.name)[: self._settings.max_description_chars]
            name = tool_name(server, tool.name, self._registry.names())
            adapter = McpTool(
                connection,
                name=name,
                remote_name=tool.name,
                description=f"[MCP server {server}] {description}",
                parameters=parameters,
                timeout=timeout,
                max_output_chars=config.max_output_chars,
                trust=config.trust,
                images_to_model=config.image_results == "model",
            )
            try:
                self._registry.add(adapter)
            except Exception as exc:  # noqa: BLE001 - a schema the validator refuses skips that tool only
                skipped.append(f"{tool.name[:100]}: {type(exc).__name__}")
                continue
            registered.append(name)
        self._tools[server] = registered
        self._skipped[server] = skipped
        for reason in skipped:
            log.warning("MCP server %r: tool skipped (%s)", server, reason)
