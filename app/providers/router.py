"""Which upstream serves a model id, and under what name."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolrelay.app.config import Settings
from toolrelay.app.model_ids import AGENT_PREFIX, split_agent_model
from toolrelay.app.providers.base import Provider
from toolrelay.app.providers.routing import Deployment, DeploymentGroup, RedisBreakers, RoutedProvider, Routing

if TYPE_CHECKING:
    from toolrelay.app.tokens import TokenCounter

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
    def __init__(self, settings: Settings, providers: dict[str, Provider], *, tokens: TokenCounter | None = None) -> None:
        self._settings = settings
        self._providers = providers
        self._routes: dict[str, Route] = {}
        self._prefixes: list[tuple[str, Provider]] = []
        redis = settings.redis
        shared = (
            RedisBreakers(redis.url, prefix=redis.prefix, socket_timeout=redis.socket_timeout, connect_timeout=redis.connect_timeout) if redis.url else None
        )
        self.routing = Routing(settings.routing, tokens=tokens, shared=shared, plain_group=self._plain_group)
        # Models with deployments or fallbacks first: their declaration wins over an upstream's `models` list.
        for model_id, model in settings.models.items():
            if model.deployments or model.fallbacks or model.context_fallbacks:
                self._add_routed(model_id)
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

    def _add_routed(self, model_id: str) -> None:
        """The route of a model with deployments or fallbacks: a :class:`RoutedProvider` over its deployments."""
        model = self._settings.models[model_id]
        if model.deployments:
            counts: dict[str, int] = {}
            deployments: list[Deployment] = []
            for index, spec in enumerate(model.deployments):
                counts[spec.upstream] = counts.get(spec.upstream, 0) + 1
                name = spec.name or (spec.upstream if counts[spec.upstream] == 1 else f"{spec.upstream}#{counts[spec.upstream]}")
                deployments.append(
                    Deployment(
                        model_id=model_id,
                        name=name,
                        provider=self._providers[spec.upstream],
                        model=spec.model or model_id,
                        index=index,
                        policy=self._settings.routing,
                        weight=spec.weight,
                        priority=spec.priority,
                        rpm=spec.rpm,
                        tpm=spec.tpm,
                    )
                )
        else:
            # Fallbacks only: the one upstream that lists the id.
            owner = next((name for name, upstream in self._settings.upstreams.items() if model_id in upstream.models), None)
            if owner is None:
                log.warning("model %s has fallbacks but neither deployments nor an upstream serving it; not served", model_id)
                return
            deployments = [Deployment(model_id=model_id, name=owner, provider=self._providers[owner], model=model_id, index=0, policy=self._settings.routing)]
        self._add(model_id, deployments[0].provider, deployments[0].model)
        base = self._routes[model_id]
        window = base.context_window
        group = DeploymentGroup(model_id, deployments, model.strategy, window, random.random)
        self.routing.add(group)
        provider = RoutedProvider(group, fallbacks=list(model.fallbacks), context_fallbacks=list(model.context_fallbacks), routing=self.routing)
        # With context fallbacks the routed provider checks the window itself (and moves the
        # request on), so callers' own check (services.check_context) is skipped.
        self._routes[model_id] = Route(model_id, provider, base.upstream_model, base.tool_calling, None if model.context_fallbacks else window, base.tool_hints)

    def _plain_group(self, model_id: str) -> DeploymentGroup | None:
        """A model served the old way, as a one-deployment group: the fallback of a routed model."""
        route = self.resolve(model_id)
        if route is None:
            return None
        if isinstance(route.provider, RoutedProvider):
            return route.provider.group
        d = Deployment(model_id=model_id, name=route.provider.name, provider=route.provider, model=route.upstream_model, index=0, policy=self._settings.routing)
        return DeploymentGroup(model_id, [d], "weighted", route.context_window, random.random)

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
