"""The agent as the HTTP layer sees it: one call that returns an event stream.

The run itself executes in its own task and writes events into a queue; the
generator returned here reads them, sends a keep-alive when nothing has come
for a while (long tool runs), and cancels the run when the consumer stops
early (client disconnect). Errors before the first event are raised, so the
client gets a real HTTP status; later ones arrive as a ``Failure`` event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import msgspec
from msgspec import UnsetType

from toolrelay.agent.continuations import Continuations
from toolrelay.agent.executor import ToolExecutor
from toolrelay.agent.hints import Hint, hint_for
from toolrelay.agent.loop import AgentRun, Limits, RunHooks, RunOptions, StepCheck
from toolrelay.agent.request import RequestBuilder, ToolOffer
from toolrelay.agent.steps import StepLog
from toolrelay.agent.taint import RunTaint, TaintPolicy
from toolrelay.app.config import AgentSettings
from toolrelay.app.errors import OpenAIError, invalid_request, server_error
from toolrelay.app.events import Event, Failure, KeepAlive
from toolrelay.app.protocol import AgentOptions
from toolrelay.app.providers.router import Route
from toolrelay.app.tokens import TokenCounter
from toolrelay.app.tracing import NOOP_TRACER, Tracer
from toolrelay.memory.scope import scope_for
from toolrelay.tools.base import Source, Tool, ToolContext
from toolrelay.tools.registry import ToolRegistry

log = logging.getLogger("toolrelay.agent")

_END = object()
T = TypeVar("T")

# report_usage(usage of the finished model calls, body of the call in flight or None).
UsageReceiver = Callable[[dict[str, Any], "dict[str, Any] | None"], None]


def _given(option: T | UnsetType | None) -> T | None:
    """An agent option as the runner reads it: absent and ``null`` both mean the server's setting."""
    return None if isinstance(option, UnsetType) else option


def _options(payload: dict[str, Any]) -> AgentOptions:
    raw = payload.get("agent_options")
    if raw is None:
        return AgentOptions()
    try:
        options = msgspec.convert(raw, AgentOptions)
    except msgspec.ValidationError as exc:
        raise invalid_request(f"Invalid 'agent_options': {exc}", param="agent_options", code="invalid_value") from None
    for name in ("max_steps", "max_wall_seconds", "max_total_tokens"):
        value = _given(getattr(options, name))
        if value is not None and value <= 0:
            raise invalid_request(f"Invalid 'agent_options.{name}': expected a value > 0, got {value}.", param=f"agent_options.{name}", code="invalid_value")
    return options


def _lower(server: float, requested: float | None) -> Any:
    return server if requested is None else min(server, max(0, requested))


class AgentRunner:
    def __init__(
        self,
        settings: AgentSettings,
        registry: ToolRegistry,
        continuations: Continuations,
        tokens: TokenCounter,
        *,
        recall: Callable[[str, str, int], Awaitable[str | None]] | None = None,
        tracer: Tracer = NOOP_TRACER,
    ) -> None:
        self.settings = settings
        self.tracer = tracer
        self.registry = registry
        self.continuations = continuations
        self.tokens = tokens
        self.recall = recall
        # Models whose upstream said "no tools"; their runs start constrained.
        self.constrained_models: set[str] = set()
        disabled = set(settings.disabled_tools)
        self.enabled_builtins = [n for n in settings.builtin_tools if n in registry and n not in disabled]
        # Tools that come and go (MCP servers' tools): names offered to a caller, by API key id.
        self._tool_sources: list[Callable[[str | None], list[str]]] = []

    def add_tool_source(self, source: Callable[[str | None], list[str]]) -> None:
        """Offer ``source(key_id)``'s registered tools next to the built-ins, read per request."""
        self._tool_sources.append(source)

    def register_tool(self, tool: Any, *, enabled: bool = True) -> None:
        """Add a built-in tool after start-up (plugins, tests)."""
        self.registry.add(tool)
        if enabled and tool.name not in self.settings.disabled_tools:
            self.enabled_builtins.append(tool.name)

    def builtins_for(self, options: AgentOptions, key_id: str | None = None) -> list[str]:
        enabled = [*self.enabled_builtins, *(n for source in self._tool_sources for n in source(key_id))] if self._tool_sources else self.enabled_builtins
        requested = _given(options.builtin_tools)
        if requested is None:
            return list(enabled)
        unknown = [n for n in requested if n not in enabled]
        if unknown:
            raise invalid_request(
                f"Invalid 'agent_options.builtin_tools': {', '.join(repr(u) for u in unknown)} not available. Available: {', '.join(enabled) or 'none'}.",
                param="agent_options.builtin_tools",
                code="invalid_value",
            )
        return [n for n in enabled if n in requested]

    async def restore(self, messages: list[dict[str, Any]], scope: str) -> tuple[list[dict[str, Any]], int, list[Source], dict[str, str]]:
        """Put back the built-in steps that preceded each client tool-call pause.

        Also returns the step count of the latest restored run, so ``max_steps``
        spans the whole run rather than restarting after each pause, and the
        restored calls that waited for approval (upstream id -> the client's id).
        """
        restored: list[dict[str, Any]] = []
        steps = 0
        sources: list[Source] = []
        # Our call ids -> the upstream's, for the restored runs: the client's
        # tool results must answer the ids the stored history (and the upstream) used.
        upstream_ids: dict[str, str] = {}
        approvals: dict[str, str] = {}
        for message in messages:
            if message.get("role") == "assistant" and message.get("tool_calls"):
                ids = [c["id"] for c in message["tool_calls"] if isinstance(c, dict) and isinstance(c.get("id"), str)]
                record = await self.continuations.find(scope, ids)
                if record is not None:
                    restored.extend(record.messages)
                    steps = int(record.meta.get("steps") or 0)
                    sources.extend(
                        Source(s.get("url", ""), s.get("title", ""), s.get("snippet", "")) for s in record.meta.get("sources") or () if isinstance(s, dict)
                    )
                    mapping = record.meta.get("ids")
                    if isinstance(mapping, dict):
                        upstream_ids.update({k: v for k, v in mapping.items() if k in ids and isinstance(v, str)})
                        waited = record.meta.get("approvals") or ()
                        approvals.update({upstream_ids[k]: k for k in waited if k in ids and k in upstream_ids})
                    continue
            elif message.get("role") == "tool" and message.get("tool_call_id") in upstream_ids:
                message = {**message, "tool_call_id": upstream_ids[message["tool_call_id"]]}
            restored.append(message)
        return restored, steps, sources, approvals

    def run(
        self,
        *,
        payload: dict[str, Any],
        route: Route,
        model: str,
        request: Any,
        info: Any,
        check_step: StepCheck | None = None,
        report_usage: UsageReceiver | None = None,
        step_outputs: bool = False,
        extra_tools: Sequence[Tool] = (),
        approval: Collection[str] = (),
    ) -> AsyncGenerator[Event, None]:
        """The run's events. ``check_step(body, usage so far)`` is awaited before every model
        call and may raise (cost cap, budget); ``report_usage(usage, call in flight)`` gets
        the run's usage when it ends, however it ends (the client may have gone away);
        ``step_outputs`` puts each tool's whole output in its ``tool_result`` record;
        ``extra_tools`` join this run only (per-request MCP servers), and calls of the
        tools named in ``approval`` wait for the client's approval (agent/approvals.py)."""
        if (payload.get("n") or 1) != 1:
            raise invalid_request("Agent models support only n=1.", param="n", code="invalid_value")
        options = _options(payload)
        settings = self.settings
        limits = Limits(
            max_steps=int(_lower(settings.max_steps, _given(options.max_steps))),
            max_wall_seconds=float(_lower(settings.max_wall_seconds, _given(options.max_wall_seconds))),
            max_total_tokens=int(_lower(settings.max_total_tokens, _given(options.max_total_tokens))),
            tool_timeout_seconds=settings.tool_timeout_seconds,
            max_parallel_tools=settings.max_parallel_tools,
        )
        builtin_names = self.builtins_for(options, info.key_id)
        registry = self.registry
        if extra_tools:
            registry = registry.with_tools(extra_tools)
            builtin_names = [*builtin_names, *(t.name for t in extra_tools)]
        builtin_choice = self._builtin_choice(options, builtin_names)
        first_call: Hint | None = None
        if builtin_choice is None and _given(options.tool_choice) is None and route.tool_hints:
            hint = self._hint(payload["messages"], builtin_names)
            if hint is not None:
                builtin_choice = {"type": "function", "function": {"name": hint.tool}}
                # Arguments the request spells out are used as they are: the small
                # models hints exist for copy the schema's descriptions instead.
                first_call = hint if hint.arguments is not None else None
        user = payload.get("user") if isinstance(payload.get("user"), str) else None
        scope = scope_for(info.key_id, user)
        context = ToolContext(scope=scope, request_id=info.request_id, user=user)
        auto_recall = _given(options.auto_recall)
        use_recall = self.recall is not None and (auto_recall if auto_recall is not None else settings.auto_recall)
        return self._stream(
            payload,
            route,
            limits,
            builtin_names,
            context,
            use_recall,
            builtin_choice,
            check_step,
            report_usage,
            first_call=first_call,
            step_outputs=step_outputs,
            registry=registry,
            approval=frozenset(approval),
        )

    def _recall_for(self, scope: str) -> Callable[[str], Awaitable[str | None]] | None:
        """Automatic recall for one run: memories of ``scope`` for the latest user text."""
        recall_memories, limit = self.recall, self.settings.auto_recall_limit
        if recall_memories is None:
            return None

        async def recall(latest_user_text: str) -> str | None:
            return await recall_memories(scope, latest_user_text, limit)

        return recall

    @staticmethod
    def _hint(messages: list[dict[str, Any]], builtin_names: list[str]) -> Hint | None:
        last = messages[-1] if messages else {}
        content = last.get("content")
        if last.get("role") != "user" or not isinstance(content, str):
            return None
        return hint_for(content, builtin_names)

    @staticmethod
    def _builtin_choice(options: AgentOptions, builtin_names: list[str]) -> Any:
        choice = _given(options.tool_choice)
        if choice is None or choice == "auto":
            return None
        if choice == "required":
            return "required"
        if choice in builtin_names:
            return {"type": "function", "function": {"name": choice}}
        raise invalid_request(
            f"Invalid 'agent_options.tool_choice': {choice!r}. Use 'auto', 'required' or one of: {', '.join(builtin_names) or 'no built-in tools'}.",
            param="agent_options.tool_choice",
            code="invalid_value",
        )

    async def _stream(
        self,
        payload: dict[str, Any],
        route: Route,
        limits: Limits,
        builtin_names: list[str],
        context: ToolContext,
        use_recall: bool,
        builtin_choice: Any,
        check_step: StepCheck | None = None,
        report_usage: UsageReceiver | None = None,
        *,
        first_call: Hint | None = None,
        step_outputs: bool = False,
        registry: ToolRegistry | None = None,
        approval: frozenset[str] = frozenset(),
    ) -> AsyncGenerator[Event, None]:
        registry = registry or self.registry
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=256)
        recall = self._recall_for(context.scope) if use_recall else None
        settings = self.settings
        streaming = payload.get("stream") is True
        offer = ToolOffer.for_request(payload, builtin_names, builtin_choice)
        steps = StepLog(streaming=streaming, outputs=step_outputs)
        tools = ToolExecutor(
            registry,
            context,
            taint=RunTaint(
                TaintPolicy(
                    refuse_fetch_after_memory_read=settings.refuse_fetch_after_memory_read,
                    refuse_memory_writes_after_web=settings.refuse_memory_writes_after_web,
                ),
                tool_of=registry.get,
            ),
            steps=steps,
            emit=queue.put,
            tool_timeout_seconds=limits.tool_timeout_seconds,
            max_parallel=limits.max_parallel_tools,
            available_names=[*offer.builtin_names, *sorted(offer.client_names)],
            tracer=self.tracer,
        )
        run = AgentRun(
            route=route,
            offer=offer,
            requests=RequestBuilder(payload, route.upstream_model, offer, registry.schemas(offer.builtin_names)),
            tools=tools,
            steps=steps,
            options=RunOptions(
                limits=limits,
                streaming=streaming,
                constrained=route.tool_calling == "constrained" or route.model_id in self.constrained_models,
                system_prompt=settings.system_prompt,
                continuation_ttl=settings.continuation_ttl_seconds,
                first_call=(first_call.tool, first_call.arguments) if first_call is not None and first_call.arguments is not None else None,
                approval=approval,
            ),
            continuations=self.continuations,
            tokens=self.tokens,
            context=context,
            emit=queue.put,
            hooks=RunHooks(check_step=check_step, recall=recall, on_no_native_tools=lambda: self.constrained_models.add(route.model_id)),
            tracer=self.tracer,
        )

        async def produce() -> None:
            try:
                messages, steps_done, restored_sources, approvals = await self.restore(list(payload["messages"]), context.scope)
                tools.sources.extend(restored_sources)
                await run.execute(messages, steps_done=steps_done, approvals=approvals)
                await queue.put(_END)
            except OpenAIError as err:
                await queue.put(err)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("agent run failed (request %s)", context.request_id)
                err = server_error(f"The agent run failed: {type(exc).__name__}.")
                await queue.put(err)

        task = asyncio.create_task(produce())
        keepalive = max(0.5, self.settings.keepalive_seconds)
        started = False
        try:
            while True:
                try:
                    async with asyncio.timeout(keepalive):
                        item = await queue.get()
                except TimeoutError:
                    started = True
                    yield KeepAlive()
                    continue
                if item is _END:
                    return
                if isinstance(item, OpenAIError):
                    if not started:
                        raise item
                    # An event or a keep-alive already started the response: report in-stream.
                    item = Failure(item)
                started = True
                yield item
                if type(item) is Failure:
                    return
        finally:
            if not task.done():
                task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001, S110 - the run already reported its error as an event
                pass
            finally:
                if report_usage is not None:
                    # After the task ended: no model call can add to the usage any more.
                    report_usage(dict(run.usage), run.pending_call)
