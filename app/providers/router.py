"""Which upstream serves a model id, and under what name."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from toolrelay.app.config import Settings
from toolrelay.app.model_ids import AGENT_PREFIX, split_agent_model
from toolrelay.app.providers.base import Provider

log = logging.getLogger("toolrelay.models")

__all__ = ["AGENT_PREFIX", "ModelRouter", "Route"]  # AGENT_PREFIX: re-exported for callers that import it from here


@dataclass(frozen=True, slots=True)
class Route:
    model_id: str
    provider: Provider
    upstream_model: str
    tool_calling: str = "auto"
    context_window: int | None = None
    tool_hints: bool = False


class ModelRouter:
    def __init__(self, settings: Settings, providers: dict[str, Provider]) -> None:
        self._settings = settings
        self._providers = providers
        self._routes: dict[str, Route] = {}
        self._prefixes: list[tuple[str, Provider]] = []
        for name, upstream in settings.upstreams.items():
            provider = providers[name]
            for model in upstream.models:
                self._add(model, provider, model)
            if upstream.model_prefix:
                self._prefixes.append((upstream.model_prefix, provider))
        self._aliases = dict(settings.aliases)

    def _add(self, model_id: str, provider: Provider, upstream_model: str) -> None:
        if model_id in self._routes or split_agent_model(model_id)[0]:
            return
        upstream = self._settings.upstreams[provider.name]
        override = self._settings.models.get(model_id)
        tool_calling = (override.tool_calling if override and override.tool_calling else None) or upstream.tool_calling
        if tool_calling == "auto" and upstream.kind == "local":
            # The bundled model ignores `tools` entirely (measured); force JSON.
            tool_calling = "constrained"
        context_window = (override.context_window if override else None) or upstream.context_window
        if context_window is None and upstream.kind == "local":
            context_window = upstream.n_ctx
        hints = override.tool_hints if override and override.tool_hints is not None else upstream.tool_hints
        if hints is None:
            hints = upstream.kind == "local"
        self._routes[model_id] = Route(model_id, provider, upstream_model, tool_calling, context_window, hints)

    async def discover(self) -> None:
        """Add the models upstreams with ``discover_models`` list; an unreachable one is skipped, not fatal."""
        for name, upstream in self._settings.upstreams.items():
            if not upstream.discover_models:
                continue
            provider = self._providers[name]
            try:
                models = await provider.list_models()
            except Exception as exc:  # noqa: BLE001 - discovery is best effort by design
                log.warning("could not list models of upstream %s: %s", name, type(exc).__name__)
                continue
            for model in models:
                self._add(model, provider, model)

    def resolve(self, model_id: str) -> Route | None:
        route = self._routes.get(model_id)
        if route is not None:
            return route
        target = self._aliases.get(model_id)
        if target is not None:
            base = self._routes.get(target) or self._prefixed(target)
            if base is not None:
                return Route(model_id, base.provider, base.upstream_model, base.tool_calling, base.context_window, base.tool_hints)
            return None
        return self._prefixed(model_id)

    def _prefixed(self, model_id: str) -> Route | None:
        for prefix, provider in self._prefixes:
            if model_id.startswith(prefix) and len(model_id) > len(prefix):
                upstream = self._settings.upstreams[provider.name]
                return Route(model_id, provider, model_id[len(prefix) :], upstream.tool_calling, upstream.context_window, bool(upstream.tool_hints))
        return None

    def served_models(self) -> list[tuple[str, str]]:
        """(model id, owner) for every id a client can name, aliases included."""
        out = [(model_id, route.provider.name) for model_id, route in self._routes.items()]
        for alias in self._aliases:
            route = self.resolve(alias)
            if route is not None and alias not in self._routes:
                out.append((alias, route.provider.name))
        return out

    @property
    def providers(self) -> dict[str, Provider]:
        return self._providers
