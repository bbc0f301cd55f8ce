"""The long-lived parts of a running server, built once from settings.

Route handlers receive this object explicitly; nothing lives in module
globals, so tests can build as many independent servers as they like.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from toolrelay.app.auth import build_gate
from toolrelay.app.bind import Exposure
from toolrelay.app.cache import ResponseCache, build_cache
from toolrelay.app.config import Settings, resolve_api_key
from toolrelay.app.database import DatabaseHealth, open_database
from toolrelay.app.errors import OpenAIError, invalid_request, model_not_found
from toolrelay.app.gate import Gate
from toolrelay.app.metrics import Metrics
from toolrelay.app.model_ids import AGENT_PREFIX
from toolrelay.app.private_files import secure_dir
from toolrelay.app.providers.anthropic import AnthropicProvider
from toolrelay.app.providers.base import Provider
from toolrelay.app.providers.gemini import GeminiProvider
from toolrelay.app.providers.local import LocalProvider
from toolrelay.app.providers.openai import OpenAIProvider
from toolrelay.app.providers.router import ModelRouter, Route
from toolrelay.app.tokens import TokenCounter
from toolrelay.app.tracing import NOOP_TRACER, Tracer, build_tracer

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from toolrelay.agent.runner import AgentRunner
    from toolrelay.app.middleware import RequestInfo

log = logging.getLogger("toolrelay")


def build_providers(settings: Settings, tracer: Tracer = NOOP_TRACER) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for name, upstream in settings.upstreams.items():
        if upstream.kind == "local":
            providers[name] = LocalProvider(name, upstream)
        elif upstream.kind == "anthropic":
            providers[name] = AnthropicProvider(name, upstream, resolve_api_key(upstream))
        elif upstream.kind == "gemini":
            providers[name] = GeminiProvider(name, upstream, resolve_api_key(upstream))
        else:
            providers[name] = OpenAIProvider(name, upstream, resolve_api_key(upstream))
    if tracer.enabled:
        from toolrelay.app.tracing.upstream import TracedProvider

        # Below the failover router: each attempt is a client span of its own.
        providers = {name: TracedProvider(p, tracer, settings.upstreams[name].base_url) for name, p in providers.items()}
    return providers


Hook = Callable[[], Awaitable[None]]
# A /ready detail (the sandbox's status), computed when asked.
ReadyExtra = Callable[[], dict[str, Any]]


class Services:
    # Set by app/wiring.py when [agent] is enabled; None serves proxy mode only.
    agent: AgentRunner | None

    def __init__(self, settings: Settings, *, gate: Gate | None = None) -> None:
        self.settings = settings
        self.data_dir = Path(settings.server.data_dir)
        # Resolved once: the CLI's refusal and banner and the gate read this.
        self.exposure = Exposure.of(settings.server)
        # 0700 before anything (keys.db, usage.db) is created in it (issue 10 item 16).
        secure_dir(self.data_dir)
        # The shared database ([database] url), or None for SQLite files in data_dir: opened (and checked)
        # before any store is built, so an unreachable server refuses to start; stores receive it explicitly.
        self.database: ConnectionPool[Any] | None = open_database(settings.database)
        self.database_health = (
            DatabaseHealth(self.database, settings.database.url or "", timeout=settings.database.connect_timeout_seconds) if self.database is not None else None
        )
        server = settings.server
        self.tokens = TokenCounter(
            cache_dir=self.data_dir / "cache" / "tiktoken", threads=server.token_count_threads, exact_chars=server.token_count_exact_chars
        )
        # NOOP_TRACER unless [tracing] enabled: the OpenTelemetry SDK is imported only then.
        self.tracer: Tracer = build_tracer(settings.tracing)
        self.router = ModelRouter(settings, build_providers(settings, self.tracer), tokens=self.tokens)
        self.gate: Gate = gate if gate is not None else build_gate(settings, self.tokens, force_auth=self.exposure.requires_auth, database=self.database)
        self.gate.use_model_catalogue(self.model_ids)
        self.agent = None
        self.metrics = Metrics(is_served=lambda model: self.router.resolve(model) is not None)
        routing = self.router.routing
        if routing.deployments():
            self.metrics.add_counter(
                "toolrelay_upstream_attempts_total",
                "Upstream attempts of routed models by model, deployment and outcome.",
                ("model", "deployment", "outcome"),
                routing.attempts,  # pyright: ignore[reportArgumentType] - keys are (model, deployment, outcome)
            )
            self.metrics.add_lines(routing.metric_lines)
        self.started_at = int(time.time())
        self._closers: list[Hook] = []
        self._starters: list[Hook] = []
        self._ready_extras: dict[str, ReadyExtra] = {}
        if routing.deployments():
            self.set_ready_extra("routing", routing.ready)
        # [cache] (app/cache/): None while off, the default, so the chat route checks one attribute.
        self.cache: ResponseCache | None = build_cache(settings.cache, settings.redis)
        if self.cache is not None:
            self.metrics.add_counter(
                "toolrelay_cache_lookups_total", "Response cache lookups of chat completions by result (hit, miss, bypass).", ("result",), self.cache.lookups
            )
            self.metrics.add_counter("toolrelay_cache_stored_total", "Answers stored in the response cache.", ("backend",), self.cache.stored)
            self.on_start(self.cache.start)
            self.on_close(self.cache.close)

    async def start(self) -> None:
        secure_dir(self.data_dir)
        # Unpack the offline vocabularies now (cheap: files only); they load on first use.
        await anyio.to_thread.run_sync(self.tokens.install)
        async with anyio.create_task_group() as tg:
            for provider in self.router.providers.values():
                tg.start_soon(provider.start)
        await self.router.discover()
        await self.router.routing.start()
        await self.gate.start()
        for starter in self._starters:
            await starter()

    def on_start(self, starter: Hook) -> None:
        """Run ``starter`` (async, no arguments) after the core is up, in registration order."""
        self._starters.append(starter)

    async def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:
                log.exception("error while shutting down")
        await self.gate.close()
        await self.router.routing.close()
        for provider in self.router.providers.values():
            await provider.close()
        if self.database is not None:  # last: the stores closed above flush into it
            await anyio.to_thread.run_sync(self.database.close)
        if self.tracer.enabled:  # the spans still buffered (a bounded, blocking export)
            await anyio.to_thread.run_sync(self.tracer.shutdown)

    def on_close(self, closer: Hook) -> None:
        self._closers.append(closer)

    def set_ready_extra(self, key: str, value: ReadyExtra) -> None:
        self._ready_extras[key] = value

    def ready_extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {key: value() for key, value in self._ready_extras.items()}
        extras["models"] = len(self.router.served_models())
        return extras

    def model_ids(self) -> list[str]:
        """Every model id a client can name: the served ids and aliases, and their ``agent/`` forms when agent mode is on."""
        plain = [model for model, _ in self.router.served_models()]
        return plain + [AGENT_PREFIX + model for model in plain] if self.agent is not None else plain

    def model_not_found(self, info: RequestInfo, model: str) -> OpenAIError:
        """The 404 for ``model``, naming the models the caller's key may use (computed only on this error path)."""
        return model_not_found(model, [m for m in self.model_ids() if self.gate.allows_model(info, m)])

    async def check_context(self, payload: dict[str, Any], route: Route, request_id: str | None = None) -> None:
        """Refuse a prompt that cannot fit the model's context window before spending a call on it."""
        window = route.context_window
        if not window:
            return
        prompt = await self.tokens.count_prompt(payload, route.upstream_model, request_id)
        wanted = payload.get("max_completion_tokens") or payload.get("max_tokens") or 0
        if prompt + wanted > window:
            raise invalid_request(
                f"This model's maximum context length is {window} tokens. However, your messages resulted in about {prompt} tokens"
                + (f" and you requested {wanted} tokens for the completion" if wanted else "")
                + ". Please reduce the length of the messages or completion.",
                param="messages",
                code="context_length_exceeded",
            )
