"""Plug the subsystems (agent loop, built-in tools, memory, admin API) into the services.

Each tool gets its dependencies here, from settings, and nowhere else.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from toolrelay.agent.continuations import Continuations, ContinuationStore, RedisContinuationStore
from toolrelay.agent.runner import AgentRunner
from toolrelay.app.auth import AuthGate
from toolrelay.app.auth.admin import build_admin_handlers
from toolrelay.app.auth.admin_reports import build_report_handlers
from toolrelay.app.mcp_server import ToolCatalogue, build_mcp_handler
from toolrelay.app.private_files import secure_dir
from toolrelay.app.protocol import AgentOptions
from toolrelay.app.responses import ResponseStorage, ResponseStore
from toolrelay.app.routes.admin_memories import build_admin_memory_handlers
from toolrelay.app.routes.memories import build_memory_handlers
from toolrelay.app.routes.responses import build_responses_handlers
from toolrelay.app.services import Services
from toolrelay.app.ui import build_ui_handlers
from toolrelay.memory import MemoryLimits, MemoryStore
from toolrelay.tools.current_time import CurrentTimeTool
from toolrelay.tools.fetch_page import FetchPageTool
from toolrelay.tools.host_addresses import parse_addresses
from toolrelay.tools.mcp import McpServers
from toolrelay.tools.memory_tools import memory_tools, recall
from toolrelay.tools.python import PythonTool
from toolrelay.tools.registry import ToolRegistry
from toolrelay.tools.sandbox.base import DisabledSandbox, Sandbox
from toolrelay.tools.sandbox.selector import select_sandbox
from toolrelay.tools.sandbox.uidclaim import UidClaim, UidClaimError, claim_uid_range
from toolrelay.tools.web_search import WebSearchTool

log = logging.getLogger("toolrelay")


def build_registry(services: Services, memory_store: MemoryStore | None) -> ToolRegistry:
    settings = services.settings
    agent = settings.agent
    registry = ToolRegistry(
        max_output_chars=agent.max_tool_output_chars,
        default_timeout=agent.tool_timeout_seconds,
        on_outcome=services.metrics.record_tool,
    )
    registry.add(CurrentTimeTool())

    search = WebSearchTool(settings.web_search)
    registry.add(search)
    services.on_close(search.aclose)
    # The bind address counts as this host's own even when no interface shows it (NAT, containers).
    fetch = FetchPageTool(
        settings.fetch_page,
        server_addresses=sorted(parse_addresses([settings.server.host]), key=str),
    )
    registry.add(fetch)
    services.on_close(fetch.aclose)
    if memory_store is not None:
        for tool in memory_tools(memory_store):
            registry.add(tool)
    return registry


async def start_sandbox(services: Services, agent: AgentRunner) -> None:
    """Pick the sandbox backend by its self-test (fails closed) and offer the python tool."""
    settings = services.settings
    if "python" not in settings.agent.builtin_tools or "python" in settings.agent.disabled_tools:
        return
    config = settings.sandbox
    claim: UidClaim | None = None
    sandbox: Sandbox
    try:
        claim = claim_uid_range(config, services.data_dir)
    except (UidClaimError, OSError) as exc:
        # Fail closed but keep serving: the python tool says why it is off.
        sandbox = DisabledSandbox(f"no sandbox uid range could be claimed: {exc}", config)
    else:
        sandbox = await select_sandbox(claim.settings)

    async def close_sandbox() -> None:
        await sandbox.aclose()
        if claim is not None:
            claim.release()

    services.on_close(close_sandbox)
    services.set_ready_extra("sandbox", sandbox.status)
    agent.register_tool(PythonTool(sandbox, max_output_chars=settings.agent.max_tool_output_chars))
    if not sandbox.available:
        log.warning("python tool disabled: %s", sandbox.status().get("reason", "no sandbox backend passed its self-test"))


def attach_mcp_servers(services: Services, agent: AgentRunner) -> McpServers:
    """Connect the configured MCP servers at start-up and offer their tools next to the built-ins."""
    servers = McpServers(services.settings.mcp, services.settings.agent, agent.registry)
    services.on_start(servers.start)
    services.on_close(servers.close)
    services.set_ready_extra("mcp", servers.status)
    gate = services.gate
    # A key's `mcp_servers` allow-list decides which servers' tools its runs are offered.
    agent.add_tool_source(lambda key_id: servers.tool_names(gate.mcp_servers_for(key_id)))
    return servers


def build_continuations(services: Services) -> Continuations:
    """Paused agent runs: in the shared database or Redis when configured (any host can resume), else SQLite in
    the data directory. The database wins over Redis: a paused run is durable state, not a counter."""
    if services.database is not None:
        from toolrelay.agent.continuations_pg import PostgresContinuationStore

        return PostgresContinuationStore(services.database)
    redis = services.settings.redis
    if redis.url:
        store = RedisContinuationStore(
            redis.url,
            prefix=redis.prefix,
            socket_timeout=redis.socket_timeout,
            connect_timeout=redis.connect_timeout,
        )
        services.on_close(store.aclose)
        return store
    sqlite_store = ContinuationStore(services.data_dir / "agent.db")

    async def close() -> None:
        sqlite_store.close()

    services.on_close(close)
    return sqlite_store


def build_memory(services: Services) -> MemoryStore | None:
    config = services.settings.memory
    if not config.enabled:
        return None
    path = Path(config.path) if config.path else services.data_dir / "memory.db"
    options: dict[str, Any] = {"search_budget_ms": config.search_budget_ms} if config.search_budget_ms is not None else {}
    options["limits"] = MemoryLimits(
        max_memories_per_scope=config.max_memories_per_scope,
        max_bytes_per_scope=config.max_bytes_per_scope,
        max_memories_per_key=config.max_memories_per_key,
        max_bytes_per_key=config.max_bytes_per_key,
    )
    if services.database is not None:
        # The shared database: every host finds the memories saved through any other (memory/pg_store.py).
        from toolrelay.memory.pg_store import PgMemoryStore

        options.pop("search_budget_ms", None)
        pg = PgMemoryStore(services.database, language=config.language, search_budget_ms=config.search_budget_ms, **options)
        store = MemoryStore.from_sync(pg)
    else:
        store = MemoryStore(path, **options)
    services.on_close(store.aclose)
    return store


def build_response_store(services: Services) -> ResponseStorage:
    """Stored responses of ``/v1/responses``: in the shared database when configured, else in the data directory."""
    config = services.settings.responses
    store: ResponseStorage
    if services.database is not None:
        from toolrelay.app.responses.store_pg import PostgresResponseStore

        store = PostgresResponseStore(
            services.database,
            retention_days=config.retention_days,
            max_per_key=config.max_stored_per_key,
            max_bytes_per_key=config.max_stored_bytes_per_key,
        )
    else:
        store = ResponseStore(
            services.data_dir / "responses.db",
            retention_days=config.retention_days,
            max_per_key=config.max_stored_per_key,
            max_bytes_per_key=config.max_stored_bytes_per_key,
        )

    async def close() -> None:
        store.close()

    services.on_close(close)
    return store


def build_tool_catalogue(services: Services, agent: AgentRunner) -> ToolCatalogue:
    """The tools served over MCP: the agent's enabled built-ins (read live: python joins once its sandbox is up),
    and the agent's other tools for the caller's key (the aggregated MCP servers' that are up, of the servers the
    key may use), served only with ``[mcp_server] reexport_mcp_tools``. Asked of the runner rather than of the
    servers, so ``toolrelay mcp``, which builds the services without the /mcp route, re-exports the same tools."""

    def aggregated(key_id: str | None) -> list[str]:
        builtins = set(agent.enabled_builtins)
        return [n for n in agent.builtins_for(AgentOptions(), key_id) if n not in builtins]

    return ToolCatalogue(agent.registry, services.settings.mcp_server, offered=lambda: agent.enabled_builtins, aggregated=aggregated)


def extend_services(services: Services) -> list[Any]:
    """Attach subsystems to ``services`` and return their extra route handlers."""
    settings = services.settings
    handlers: list[Any] = []
    secure_dir(services.data_dir)
    memory_store = build_memory(services)
    if memory_store is not None:
        handlers.extend(build_memory_handlers(services, memory_store))
    handlers.extend(build_responses_handlers(services, build_response_store(services)))
    if settings.agent.enabled:
        registry = build_registry(services, memory_store)
        continuations = build_continuations(services)
        agent = AgentRunner(
            settings.agent,
            registry,
            continuations,
            services.tokens,
            recall=partial(recall, memory_store) if memory_store is not None else None,
            tracer=services.tracer,
        )
        services.agent = agent
        services.on_start(lambda: start_sandbox(services, agent))
        if settings.mcp.servers:
            attach_mcp_servers(services, agent)
        if settings.mcp_server.enabled:
            handlers.append(build_mcp_handler(services, build_tool_catalogue(services, agent)))
    if isinstance(services.gate, AuthGate):
        handlers.extend(build_admin_handlers(services.gate))
        handlers.extend(build_report_handlers(services.gate, services.metrics))
        if memory_store is not None:
            handlers.extend(build_admin_memory_handlers(services.gate, memory_store))
    # The web console: static pages that call the API above like any client (app/ui/).
    handlers.extend(build_ui_handlers())
    return handlers
