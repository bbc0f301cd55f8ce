"""One agent run: call the model, run built-in tools, repeat, hand client tools back.

The loop owns the run's limits (steps, wall time, tokens, and the caller's
``check_step`` for cost caps and budgets), its usage, and its pauses for the
client's own functions (a continuation, keyed by ids minted here). The parts
it drives are built by the runner (:mod:`agent.runner`) and passed in:

- :class:`agent.request.RequestBuilder`: the upstream body of each turn;
- :mod:`agent.turns`: readers turning a call's events into a :class:`Turn`;
- :class:`agent.executor.ToolExecutor`: the turn's built-in calls.

Events go out through ``emit`` (the runner's queue), so the HTTP side can
interleave keep-alives and cancel the run when the client leaves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import orjson

from toolrelay.agent.approvals import APPROVED, DENIED, denied_text
from toolrelay.agent.citations import find_citations
from toolrelay.agent.continuations import Continuations
from toolrelay.agent.executor import ToolExecutor
from toolrelay.agent.request import RequestBuilder, ToolOffer, upstream_message
from toolrelay.agent.steps import StepLog
from toolrelay.agent.turns import (
    Call,
    ConstrainedTurnReader,
    NativeTurnReader,
    Turn,
    TurnReader,
)
from toolrelay.app.errors import OpenAIError
from toolrelay.app.events import ChoiceDelta, Event, UsageReport
from toolrelay.app.ids import new_approval_request_id, new_run_key, new_tool_call_id
from toolrelay.app.providers.base import UpstreamCall
from toolrelay.app.providers.router import Route
from toolrelay.app.tokens import TokenCounter
from toolrelay.app.tracing import NOOP_TRACER, Span, Tracer
from toolrelay.tools.base import ToolContext
from toolrelay.tools.registry import ToolOutcome

__all__ = ["AgentRun", "LimitReached", "Limits", "RunHooks", "RunOptions"]

log = logging.getLogger("toolrelay.agent")

# check_step(upstream body, usage so far): awaited before every model call, raises OpenAIError to stop the run.
StepCheck = Callable[[dict[str, Any], dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Limits:
    max_steps: int
    max_wall_seconds: float
    max_total_tokens: int
    tool_timeout_seconds: float
    max_parallel_tools: int


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Per-request settings of a run, decided by the runner."""

    limits: Limits
    #: The client asked for a stream: text is streamed as it comes, step records live.
    streaming: bool
    #: Start in constrained mode (the route's setting, or the model said "no tools" before).
    constrained: bool
    #: The native-mode system prompt template (``{names}``: the built-in tools); None for the default.
    system_prompt: str | None
    continuation_ttl: float
    #: A tool hint's call with the arguments the request spelled out (agent/hints.py):
    #: run as the first step instead of asking a model too small to fill them in.
    first_call: tuple[str, dict[str, Any]] | None = None
    #: Tools whose calls wait for the client's approval (agent/approvals.py).
    approval: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RunHooks:
    """What the run calls back into its caller for."""

    check_step: StepCheck | None = None
    #: Memories to put in front of the model for the latest user text (auto_recall), or None.
    recall: Callable[[str], Awaitable[str | None]] | None = None
    #: The upstream said this model takes no ``tools``: later runs start constrained.
    on_no_native_tools: Callable[[], None] | None = None


class LimitReached(Exception):
    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message


def _canonical(arguments: str) -> str:
    try:
        return orjson.dumps(orjson.loads(arguments or "{}"), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        return arguments


def _images_message(calls: Sequence[Call], outcomes: Sequence[ToolOutcome]) -> dict[str, Any] | None:
    """The images tools returned, as one user message of image parts after the step's tool messages.

    A chat ``tool`` message carries text only; a user message is where every
    Chat Completions upstream takes images. None when no tool returned one.
    """
    parts: list[dict[str, Any]] = []
    for call, outcome in zip(calls, outcomes, strict=True):
        if outcome.images:
            parts.append({"type": "text", "text": f"Images returned by {outcome.name} (call {call.id}):"})
            parts.extend({"type": "image_url", "image_url": {"url": url}} for url in outcome.images)
    return {"role": "user", "content": parts} if parts else None


_NO_TOOLS_HINTS = (
    "does not support tools",
    "tool choice requires",
    "tool_choice requires",
    "tools are not supported",
    "does not support tool",
    "tool calling is not supported",
    "enable-auto-tool-choice",
)


def _says_no_tool_support(err: OpenAIError) -> bool:
    message = err.message.lower()
    return err.status in (400, 422, 500, 501) and any(hint in message for hint in _NO_TOOLS_HINTS)


def _latest_user_text(messages: list[dict[str, Any]]) -> str | None:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text") or None
        return None
    return None


class AgentRun:
    def __init__(
        self,
        *,
        route: Route,
        offer: ToolOffer,
        requests: RequestBuilder,
        tools: ToolExecutor,
        steps: StepLog,
        options: RunOptions,
        continuations: Continuations,
        tokens: TokenCounter,
        context: ToolContext,
        emit: Callable[[Event], Awaitable[None]],
        hooks: RunHooks = RunHooks(),
        tracer: Tracer = NOOP_TRACER,
    ) -> None:
        self._route = route
        self._tracer = tracer
        # The span of the step under way (a model turn and the tools it called), while tracing.
        self._step_span: Span | None = None
        self._step_token: object = None
        self._turns = 0
        self._offer = offer
        self._requests = requests
        self._tools = tools
        self._steps = steps
        self._options = options
        self._limits = options.limits
        self._continuations = continuations
        self._tokens = tokens
        self._context = context
        self._emit = emit
        self._hooks = hooks
        self._constrained = options.constrained
        self._first_call = options.first_call
        self._started = time.monotonic()
        self._step = 0
        self._seen_calls: set[tuple[str, str]] = set()
        self._answer = ""
        self._separate_next = False
        # Everything sent as `content`, in order: citation offsets index into this.
        self._content_sent: list[str] = []
        #: Token usage of the finished model calls.
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        #: The body of the model call in flight: a run cut short still owes its prompt.
        self.pending_call: dict[str, Any] | None = None

    # -- plumbing -------------------------------------------------------

    async def _send(self, event: Event) -> None:
        if type(event) is ChoiceDelta:
            text = event.delta.get("content")
            if text:
                self._content_sent.append(text)
        await self._emit(event)

    def _remaining_wall(self) -> float:
        return self._limits.max_wall_seconds - (time.monotonic() - self._started)

    async def _account(self, usage: dict[str, Any] | None, body: dict[str, Any], text: str) -> None:
        if usage is None:
            model = self._route.upstream_model
            # Off the event loop: the history holds the client's messages, any size.
            prompt = await self._tokens.count_messages_async(body.get("messages") or [], model, body.get("tools"))
            usage = {"prompt_tokens": prompt, "completion_tokens": await self._tokens.count_text_async(text, model)}
        for key in ("prompt_tokens", "completion_tokens"):
            self.usage[key] += int(usage.get(key) or 0)
        self.usage["total_tokens"] = self.usage["prompt_tokens"] + self.usage["completion_tokens"]

    def _check_tokens(self) -> None:
        if self.usage["total_tokens"] >= self._limits.max_total_tokens:
            raise LimitReached("max_total_tokens", f"Stopped: the run used {self.usage['total_tokens']} tokens, its limit is {self._limits.max_total_tokens}.")

    # -- one model call -------------------------------------------------

    async def _model_turn(self, messages: list[dict[str, Any]], final: bool = False) -> Turn:
        try:
            return await self._model_turn_once(messages, final)
        except OpenAIError as err:
            if self._constrained or self._route.tool_calling != "auto" or not _says_no_tool_support(err):
                raise
        # The upstream told us this model cannot take `tools` (Ollama, vLLM
        # without a tool parser): switch to the constrained format for good.
        log.info("model %s does not support native tool calls; using constrained steps", self._route.model_id)
        self._constrained = True
        if self._hooks.on_no_native_tools is not None:
            self._hooks.on_no_native_tools()
        return await self._model_turn_once(messages, final)

    async def _model_turn_once(self, messages: list[dict[str, Any]], final: bool) -> Turn:
        constrained = self._constrained
        body = self._requests.build(messages, final=final, first_step=self._step == 0, constrained=constrained)
        if self._hooks.check_step is not None:
            await self._hooks.check_step(body, self.usage)
        self.pending_call = body
        reader: TurnReader
        if constrained:
            reader = ConstrainedTurnReader(self._offer, final=final)
        else:
            reader = NativeTurnReader(self._offer, final=final, streaming=self._options.streaming, separate_first=self._separate_next)
        events: AsyncIterator[Event] = self._route.provider.complete(UpstreamCall(body, stream=True, request_id=self._context.request_id))
        try:
            async for event in events:
                for delta in reader.feed(event):
                    await self._send(delta)
            tail, turn = reader.finish()
            for delta in tail:
                await self._send(delta)
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        if not constrained:
            self._separate_next = turn.separate_next
        await self._account(turn.usage, body, turn.raw_text or turn.content)
        self.pending_call = None
        return turn

    # -- the run ------------------------------------------------------------

    async def execute(self, messages: list[dict[str, Any]], *, steps_done: int = 0, approvals: dict[str, str] | None = None) -> None:
        """Run over ``messages`` (with a paused run's restored steps); ``steps_done`` of them count towards ``max_steps``;
        ``approvals`` maps the upstream id of each restored call that waited for approval to the id the client answered."""
        tracer = self._tracer
        model = self._route.model_id
        span = tracer.start(f"invoke_agent {model}", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "toolrelay", "gen_ai.request.model": model})
        token = tracer.activate(span)
        try:
            await self._execute(messages, steps_done=steps_done, approvals=approvals)
        except BaseException as exc:
            span.set_error(exc.code or str(exc.status) if isinstance(exc, OpenAIError) else type(exc).__name__)
            raise
        finally:
            self._close_step()
            tracer.deactivate(token)
            span.set_attribute("gen_ai.usage.input_tokens", self.usage["prompt_tokens"])
            span.set_attribute("gen_ai.usage.output_tokens", self.usage["completion_tokens"])
            span.end()

    def _open_step(self) -> None:
        """A span per pass of the loop (one model turn and the tools it called), the parent of their spans."""
        self._close_step()
        self._turns += 1
        span = self._step_span = self._tracer.start(f"agent_step {self._turns}", {"toolrelay.agent.step": self._turns})
        self._step_token = self._tracer.activate(span)

    def _close_step(self) -> None:
        span = self._step_span
        if span is not None:
            self._step_span = None
            self._tracer.deactivate(self._step_token)
            span.end()

    async def _execute(self, messages: list[dict[str, Any]], *, steps_done: int, approvals: dict[str, str] | None) -> None:
        self._step = steps_done
        messages = [upstream_message(m) for m in messages]
        if not self._constrained:
            system = self._requests.system_message(self._options.system_prompt)
            if system is not None:
                messages = [system, *messages]
        taint = self._tools.taint
        if self._hooks.recall is not None:
            latest = _latest_user_text(messages)
            if latest:
                memory = await self._hooks.recall(latest)
                if memory:
                    messages = [{"role": "system", "content": memory}, *messages]
                    taint.note_memory_read("auto_recall")
        # A resumed run: built-in steps restored from before the pause count too.
        taint.observe_history(messages)
        new_from = len(messages)
        finish = "stop"
        try:
            with anyio.fail_after(max(0.1, self._remaining_wall())):
                if approvals:
                    await self._answer_approvals(messages, approvals)
                finish = await self._loop(messages, new_from)
        except TimeoutError:
            await self._send(
                self._steps.note("limit", f"Stopped: the run reached its wall-time limit of {self._limits.max_wall_seconds:g} s.", limit="max_wall_seconds")
            )
            finish = "length"
        except LimitReached as limit:
            await self._send(self._steps.note("limit", limit.message, limit=limit.limit))
            finish = "length"
        sources = self._tools.sources
        if sources and self._answer:
            annotations = find_citations("".join(self._content_sent), sources)
            if annotations:
                await self._send(ChoiceDelta(0, {"annotations": annotations}))
        await self._send(ChoiceDelta(0, self._steps.closing_fields(), finish_reason=finish))
        await self._send(UsageReport(dict(self.usage)))

    async def _loop(self, messages: list[dict[str, Any]], new_from: int) -> str:
        offer = self._offer
        limits = self._limits
        force_final = False
        limit_note: str | None = None
        answer_after_hint = False
        while True:
            self._open_step()
            if answer_after_hint:
                force_final, answer_after_hint = True, False
            if self._first_call is not None and self._first_call[0] in offer.builtin_names and not force_final:
                name, arguments = self._first_call
                self._first_call = None
                turn = Turn("", [Call(new_tool_call_id(), name, orjson.dumps(arguments).decode(), "builtin")], "tool_calls", None)
                # The hinted call did what the request asked; the model answers next. Measured:
                # SmolLM2-135M, still offered tools, fed the product back into python until the
                # repeat guard stopped it. (A client tool_choice that requires its own call still applies.)
                answer_after_hint = not offer.required_client_names
            else:
                self._first_call = None
                turn = await self._model_turn(messages, final=force_final)
            if offer.required_client_names and (force_final or not turn.calls) and not any(c.kind == "client" for c in turn.calls):
                if force_final:
                    names = ", ".join(offer.required_client_names)
                    raise OpenAIError(
                        502,
                        f"tool_choice requires a call of one of your functions ({names}), but the model did not make one.",
                        code="tool_choice_not_satisfied",
                    )
                # An answer without the required call (an upstream that ignores tool_choice): ask once more, offering only those functions.
                force_final = True
                continue
            if (force_final and not offer.required_client_names) or not turn.calls:
                self._answer = turn.content
                if limit_note:
                    return "length"
                return turn.finish_reason if turn.finish_reason in ("length", "content_filter") else "stop"
            builtin = [c for c in turn.calls if c.kind in ("builtin", "unknown")]
            client = [c for c in turn.calls if c.kind == "client"]
            waiting = [c for c in builtin if c.kind == "builtin" and c.name in self._options.approval]
            if waiting:
                builtin = [c for c in builtin if c not in waiting]
            repeated = [c for c in builtin if (c.name, _canonical(c.arguments)) in self._seen_calls]
            if repeated and not client and not waiting:
                await self._send(
                    self._steps.note("repeat", f"Stopped a repeated call of {repeated[0].name} with the same arguments; asking for the final answer.")
                )
                force_final = True
                continue
            self._check_tokens()
            if builtin and self._step >= limits.max_steps:
                limit_note = f"Stopped: the run reached its limit of {limits.max_steps} tool steps."
                await self._send(self._steps.note("limit", limit_note, limit="max_steps"))
                force_final = True
                continue
            assistant: dict[str, Any] = {
                "role": "assistant",
                "content": turn.content or None,
                "tool_calls": [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in turn.calls],
            }
            messages.append(assistant)
            if builtin:
                self._step += 1
                for c in builtin:
                    self._seen_calls.add((c.name, _canonical(c.arguments)))
                outcomes = await self._tools.run(builtin, self._step, self._remaining_wall)
                for call, outcome in zip(builtin, outcomes, strict=True):
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": outcome.content})
                shown = _images_message(builtin, outcomes)
                if shown is not None:
                    messages.append(shown)
            if client or waiting:
                for c in waiting:
                    c.client_id = new_approval_request_id()
                    text = f"Waiting for approval to call {c.name}."
                    note = self._steps.note("approval_request", text, call_id=c.client_id, tool=c.name, arguments=c.arguments)
                    await self._send(note)
                await self._pause(messages[new_from:], [*client, *waiting], approvals=[c.client_id for c in waiting])
                return "tool_calls"
            self._check_tokens()

    async def _answer_approvals(self, messages: list[dict[str, Any]], approvals: dict[str, str]) -> None:
        """Run the calls the client approved (with the stored run's arguments); tell the model the others did not run."""
        calls = [c for m in messages if m.get("role") == "assistant" for c in m.get("tool_calls") or () if isinstance(c, dict)]
        functions = {c.get("id"): c.get("function") or {} for c in calls}
        approved: list[tuple[int, Call]] = []
        for position, message in enumerate(messages):
            call_id = message.get("tool_call_id")
            if message.get("role") != "tool" or call_id not in approvals:
                continue
            function = functions.get(call_id) or {}
            name = str(function.get("name") or "")
            answer = message.get("content")
            if answer == APPROVED and name in self._offer.builtin_names:
                approved.append((position, Call(call_id, name, str(function.get("arguments") or "{}"), "builtin", approvals[call_id])))
            elif answer == APPROVED:
                messages[position] = {**message, "content": f"error: {name} was approved, but this request does not offer it any more; it was not run."}
            else:
                reason = answer[len(DENIED) :].strip() if isinstance(answer, str) and answer.startswith(DENIED) else None
                messages[position] = {**message, "content": denied_text(name, reason)}
        if not approved:
            return
        self._step += 1
        outcomes = await self._tools.run([call for _, call in approved], self._step, self._remaining_wall)
        for (position, call), outcome in zip(approved, outcomes, strict=True):
            self._seen_calls.add((call.name, _canonical(call.arguments)))
            messages[position] = {"role": "tool", "tool_call_id": call.id, "content": outcome.content}
        shown = _images_message([call for _, call in approved], outcomes)
        if shown is not None:
            messages.append(shown)

    async def _pause(self, new_messages: list[dict[str, Any]], client: list[Call], *, approvals: list[str] | None = None) -> None:
        """Keep the run's new history until the client answers ``client`` (by the ids it was shown)."""
        await self._continuations.save(
            run_key=new_run_key(),
            scope=self._context.scope,
            call_ids=[c.client_id for c in client],
            messages=new_messages,
            meta={
                "steps": self._step,
                "sources": [{"url": x.url, "title": x.title, "snippet": x.snippet} for x in self._tools.sources],
                # The client answers with our ids; the stored history (and the upstream) knows its own.
                "ids": {c.client_id: c.id for c in client},
                # Of those, the calls waiting for approval: run on resume if approved (agent/approvals.py).
                "approvals": approvals or [],
            },
            ttl=self._options.continuation_ttl,
        )
