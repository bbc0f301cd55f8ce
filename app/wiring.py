"""Plug the subsystems (agent loop, built-in tools, memory, admin API) into the services.

Each tool gets its dependencies here, from settings, and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

from agent.continuations import ContinuationStore
from agent.runner import AgentRunner
from app.auth import AuthGate
from app.auth.admin import build_admin_handlers
from app.config import section
from app.services import Services
from tools.current_time import CurrentTimeTool
from tools.fetch_page import FetchPageSettings, FetchPageTool
from tools.registry import ToolRegistry
from tools.web_search import WebSearchSettings, WebSearchTool

log = logging.getLogger("toolrelay")


def build_registry(services: Services) -> ToolRegistry:
    settings = services.settings
    agent = settings.agent
    registry = ToolRegistry(max_output_chars=agent.max_tool_output_chars, default_timeout=agent.tool_timeout_seconds)
    registry.add(CurrentTimeTool())

    search = WebSearchTool(section(settings, "web_search", WebSearchSettings))
    registry.add(search)
    services.on_close(search.aclose)
    fetch = FetchPageTool(section(settings, "fetch_page", FetchPageSettings))
    registry.add(fetch)
    services.on_close(fetch.aclose)
    return registry


def extend_services(services: Services) -> list[Any]:
    """Attach subsystems to ``services`` and return their extra route handlers."""
    settings = services.settings
    handlers: list[Any] = []
    if settings.agent.enabled:
        registry = build_registry(services)
        continuations = ContinuationStore(services.data_dir / "agent.db")
        services.agent = AgentRunner(settings.agent, registry, continuations, services.tokens)

        async def close_continuations() -> None:
            continuations.close()

        services.on_close(close_continuations)
    if isinstance(services.gate, AuthGate):
        handlers.extend(build_admin_handlers(services.gate))
    return handlers
