"""One agent run: call the model, run built-in tools, repeat, hand client tools back.

The run writes events into a queue (see :mod:`agent.runner`), so the HTTP
side can interleave keep-alives and cancel the run when the client leaves.
History is kept in OpenAI's native shape (assistant ``tool_calls`` + ``tool``
messages) whatever the model's mode; constrained-mode models get it rendered
as plain text at call time (:func:`render_constrained`).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import anyio
import orjson

from toolrelay.agent.citations import find_citations
from toolrelay.agent.constrained import AnswerStreamer, JsonAnswerStreamer, client_answer_schema, instructions, parse_step, step_schema, tool_result_message
from toolrelay.agent.continuations import ContinuationStore
from toolrelay.agent.parsing import TextGate, parse_tool_calls
from toolrelay.agent.steps import StepLog
from toolrelay.agent.taint import RunTaint, TaintPolicy
from toolrelay.app.errors import OpenAIError
from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Event, Failure, UsageReport, message_as_delta
from toolrelay.app.providers.base import UpstreamCall
from toolrelay.app.providers.router import Route
from toolrelay.app.tokens import TokenCounter
from toolrelay.tools.base import ToolContext
from toolrelay.tools.registry import ToolOutcome, ToolRegistry

log = logging.getLogger("toolrelay.agent")

# Fields of the client's request that the loop manages itself per model call.
_MANAGED = ("model", "messages", "tools", "tool_choice", "stream", "stream_options", "n", "agent_options", "functions", "function_call")

NATIVE_SYSTEM_PROMPT = (
    "You can call built-in tools ({names}) whenever they help; their results come back to you. "
    "Use them instead of guessing facts you cannot know. When you have what you need, answer the user directly. "
    "If you used web pages, cite their URLs."
)
FINAL_ANSWER_PROMPT = "Stop using tools now. Using the tool results above, write your final answer to the user's request."
CLIENT_CALL_PROMPT = "Stop using the built-in tools now. Call one of the tools listed above, using the results so far."


@dataclass(slots=True)
class Limits:
    max_steps: int
    max_wall_seconds: float
    max_total_tokens: int
    tool_timeout_seconds: float
    max_parallel_tools: int


class LimitReached(Exception):
    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message


@dataclass(slots=True)
class Call:
    id: str
    name: str
    arguments: str
    kind: str  # "builtin" | "client"
    # Client calls: the id the client sees, minted here. ``id`` stays the
    # upstream's, which the history sent upstream keeps (issue 10 item 14).
    client_id: str = ""


@dataclass(slots=True)
class Turn:
    content: str
    calls: list[Call]
    finish_reason: str | None
    usage: dict[str, Any] | None
    raw_text: str = ""  # constrained mode: the JSON step the model wrote


@dataclass(slots=True)
class _StreamedCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    kind: str | None = None
    client_index: int = -1
    client_id: str = ""
    announced: bool = False


def new_call_id() -> str:
    """An unguessable tool-call id (144 random bits).

    Every client tool call gets one of these, whatever id the upstream gave
    it: llama.cpp and Ollama send predictable, reused ids ("call_0"), and
    paused runs are looked up by the ids the client sends back.
    """
    return "call_" + secrets.token_urlsafe(18)


def _canonical(arguments: str) -> str:
    try:
        return orjson.dumps(orjson.loads(arguments or "{}"), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        return arguments


_NO_TOOLS_HINTS = ("does not support tools", "tool choice requires", "tool_choice requires", "tools are not supported", "does not support tool", "tool calling is not supported", "enable-auto-tool-choice")


def _says_no_tool_support(err: OpenAIError) -> bool:
    message = err.message.lower()
    return err.status in (400, 422, 500, 501) and any(hint in message for hint in _NO_TOOLS_HINTS)


# Our own extension fields on assistant messages a client echoes back; strict
# upstreams refuse unknown message properties (e.g. "reasoning_content is unsupported").
_OWN_FIELDS = ("agent_steps", "reasoning", "reasoning_content", "annotations")


def _upstream_message(message: dict[str, Any]) -> dict[str, Any]:
    if message.get("role") != "assistant" or not any(k in message for k in _OWN_FIELDS):
        return message
    return {k: v for k, v in message.items() if k not in _OWN_FIELDS}


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


def render_constrained(messages: list[dict[str, Any]], system_text: str) -> list[dict[str, Any]]:
    """Native history as plain chat for models without tool support."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    system_parts = [system_text]
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            content = message.get("content")
            system_parts.append(content if isinstance(content, str) else " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict)))
        elif role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                names[call.get("id", "")] = function.get("name", "")
                try:
                    arguments = orjson.loads(function.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    arguments = {}
                out.append({"role": "assistant", "content": orjson.dumps({"tool": function.get("name"), "arguments": arguments}).decode()})
        elif role == "tool":
            content = message.get("content")
            text = content if isinstance(content, str) else orjson.dumps(content).decode()
            out.append(tool_result_message(names.get(message.get("tool_call_id", ""), "tool"), text))
        else:
            out.append(message)
    return [{"role": "system", "content": "\n\n".join(p for p in system_parts if p)}, *out]


class _TurnMeter:
    """Reads one model call's events: the first choice's deltas (a whole message as one delta), its usage, its failure."""

    __slots__ = ("usage",)

    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None

    async def deltas(self, events: Any) -> Any:
        async for event in events:
            kind = type(event)
            if kind is ChoiceDelta:
                if event.index == 0:
                    yield event
            elif kind is ChoiceMessage:
                # The upstream answered our streaming request with one JSON body
                # (issue 10 item 22): read it as the stream proxy mode would send.
                if event.index == 0:
                    yield ChoiceDelta(0, message_as_delta(event.message), event.finish_reason, event.logprobs)
            elif kind is UsageReport:
                self.usage = event.usage
            elif kind is Failure:
                raise event.error


class AgentRun:
    # Set by the runner: awaited with (upstream body, usage so far) before every
    # model call; raises OpenAIError to stop the run (the gate's cost cap and budget).
    before_model_call: Callable[[dict[str, Any], dict[str, Any]], Awaitable[None]] | None = None
    # The body of the model call in flight: a run cut short still owes its prompt.
    pending_call: dict[str, Any] | None = None

    def __init__(
        self,
        *,
        payload: dict[str, Any],
        route: Route,
        registry: ToolRegistry,
        builtin_names: list[str],
        limits: Limits,
        continuations: ContinuationStore,
        continuation_ttl: float,
        tokens: TokenCounter,
        context: ToolContext,
        emit: Callable[[Event], Awaitable[None]],
        system_prompt: str | None,
        recall: Callable[[str], Awaitable[str | None]] | None = None,
        builtin_choice: Any = None,
        on_no_native_tools: Callable[[], None] | None = None,
        taint: RunTaint | None = None,
    ) -> None:
        self.payload = payload
        # Untrusted content seen so far, and the tools it closes (agent/taint.py).
        self.taint = taint or RunTaint(TaintPolicy(refuse_fetch_after_memory_read=False, refuse_memory_writes_after_web=False))
        self.route = route
        self.registry = registry
        self.limits = limits
        self.continuations = continuations
        self.continuation_ttl = continuation_ttl
        self.tokens = tokens
        self.context = context
        self._emit = emit
        self.recall = recall
        self.system_prompt = system_prompt
        self.constrained = route.tool_calling == "constrained"
        self.on_no_native_tools = on_no_native_tools
        self.steps = StepLog(streaming=payload.get("stream") is True)
        self.started = time.monotonic()
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self.emitted = False
        self.step = 0
        self.seen_calls: set[tuple[str, str]] = set()
        self.sources: list[Any] = []
        self.answer = ""
        self.streaming = payload.get("stream") is True
        self.separate_next = False
        # Everything sent as `content`, in order: citation offsets index into this.
        self.content_sent: list[str] = []

        self.client_tools = [t for t in payload.get("tools") or [] if isinstance(t, dict) and t.get("type", "function") == "function"]
        self.client_names = {t["function"]["name"] for t in self.client_tools if isinstance(t.get("function"), dict)}
        # A client function that shares a built-in's name wins: the client asked for it explicitly.
        self.builtin_names = [n for n in builtin_names if n not in self.client_names]
        choice = payload.get("tool_choice")
        self.client_choice = choice if choice is not None else "auto"
        self.parallel_client_calls = payload.get("parallel_tool_calls") is not False
        # agent_options.tool_choice: force the first step to use a built-in ("required" or a name).
        self.builtin_choice = builtin_choice
        # A tool hint's call with the arguments the request spelled out (agent/hints.py):
        # run as the first step instead of asking a model too small to fill them in.
        self.first_call: tuple[str, dict[str, Any]] | None = None
        # Constrained mode: the client's structured-output schema, enforced on the answer branch of each step.
        self.answer_schema = client_answer_schema(payload.get("response_format"))
        # tool_choice "required" (or naming one of the client's functions) with client functions:
        # this request's answer must call one of these; built-ins may run first (docs/agent.md).
        wanted = (self.client_choice.get("function") or {}).get("name") if isinstance(self.client_choice, dict) else None
        self.required_client_names = sorted(self.client_names) if self.client_choice == "required" else [n for n in self.client_names if n == wanted]

    # -- plumbing -------------------------------------------------------

    async def emit(self, event: Event) -> None:
        self.emitted = True
        if type(event) is ChoiceDelta:
            text = event.delta.get("content")
            if text:
                self.content_sent.append(text)
        await self._emit(event)

    def remaining_wall(self) -> float:
        return self.limits.max_wall_seconds - (time.monotonic() - self.started)

    def _tools_for_turn(self, final: bool) -> tuple[list[dict[str, Any]], Any]:
        """(tools offered, upstream tool_choice) for the next model call."""
        builtin = self.registry.schemas(self.builtin_names)
        client = [] if self.client_choice == "none" else self.client_tools
        tools = [*builtin, *client]
        if final and self.required_client_names:
            # The answer must be a client call (step limit, repeat, or an answer without one): offer only those.
            forced = [t for t in client if (t.get("function") or {}).get("name") in self.required_client_names]
            return forced, (self.client_choice if isinstance(self.client_choice, dict) else "required")
        if final:
            # Still offered (a history with tool calls but no tools is refused by
            # some upstreams), but the model may not call any.
            return tools, ("none" if tools else None)
        choice = self.client_choice
        if choice == "none":
            choice = "auto"
        if self.builtin_choice is not None and self.step == 0 and choice == "auto" and builtin:
            choice = self.builtin_choice
        return tools, (choice if tools else None)

    def _body(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], tool_choice: Any, final: bool) -> dict[str, Any]:
        body = {k: v for k, v in self.payload.items() if k not in _MANAGED}
        body["model"] = self.route.upstream_model
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        if self.constrained:
            if "temperature" not in self.payload:
                # Greedy steps: small models pick tools and emit JSON far more reliably.
                body["temperature"] = 0
            forced = final and bool(self.required_client_names)
            offered = [] if final and not forced else tools
            allow_answer = not forced and (final or tool_choice not in ("required",) and not isinstance(tool_choice, dict))
            if isinstance(tool_choice, dict):
                wanted = (tool_choice.get("function") or {}).get("name")
                offered = [t for t in offered if (t.get("function") or {}).get("name") == wanted] or offered
            system = instructions(offered, allow_answer=allow_answer or not offered, answer_schema=self.answer_schema)
            if forced:
                system += "\n" + CLIENT_CALL_PROMPT
            elif final:
                system += "\n" + FINAL_ANSWER_PROMPT
            body["messages"] = render_constrained(messages, system)
            body["response_format"] = step_schema(offered, allow_answer=allow_answer or not offered, answer_schema=self.answer_schema)
            return body
        body["messages"] = messages
        if tools:
            body["tools"] = tools
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        else:
            body.pop("parallel_tool_calls", None)
        return body

    async def _account(self, usage: dict[str, Any] | None, body: dict[str, Any], text: str) -> None:
        if usage is None:
            # Off the event loop: the history holds the client's messages, any size.
            prompt = await self.tokens.count_messages_async(body.get("messages") or [], self.route.upstream_model, body.get("tools"))
            usage = {"prompt_tokens": prompt, "completion_tokens": await self.tokens.count_text_async(text, self.route.upstream_model)}
        for key in ("prompt_tokens", "completion_tokens"):
            self.usage[key] += int(usage.get(key) or 0)
        self.usage["total_tokens"] = self.usage["prompt_tokens"] + self.usage["completion_tokens"]

    async def _show_answer(self, text: str) -> None:
        if self.separate_next:
            self.separate_next = False
            text = "\n\n" + text
        await self.emit(ChoiceDelta(0, {"content": text}))

    def _classify(self, name: str, final: bool) -> str:
        if final:
            return "client" if name in self.required_client_names else "ignored"
        if name in self.builtin_names:
            return "builtin"
        if name in self.client_names and self.client_choice != "none":
            return "client"
        return "unknown"

    # -- one model call -------------------------------------------------

    async def _model_turn(self, messages: list[dict[str, Any]], final: bool = False) -> Turn:
        try:
            return await self._model_turn_once(messages, final)
        except OpenAIError as err:
            if self.constrained or self.route.tool_calling != "auto" or not _says_no_tool_support(err):
                raise
        # The upstream told us this model cannot take `tools` (Ollama, vLLM
        # without a tool parser): switch to the constrained format for good.
        log.info("model %s does not support native tool calls; using constrained steps", self.route.model_id)
        self.constrained = True
        if self.on_no_native_tools is not None:
            self.on_no_native_tools()
        return await self._model_turn_once(messages, final)

    async def _model_turn_once(self, messages: list[dict[str, Any]], final: bool = False) -> Turn:
        tools, tool_choice = self._tools_for_turn(final)
        body = self._body(messages, tools, tool_choice, final)
        if self.before_model_call is not None:
            await self.before_model_call(body, self.usage)
        self.pending_call = body
        events = self.route.provider.complete(UpstreamCall(body, stream=True, request_id=self.context.request_id))
        try:
            if self.constrained:
                turn = await self._read_constrained(events, final)
            else:
                turn = await self._read_native(events, final)
        finally:
            await events.aclose()
        await self._account(turn.usage, body, turn.raw_text or turn.content)
        self.pending_call = None
        return turn

    async def _read_native(self, events: Any, final: bool) -> Turn:
        # No names in a final turn: nothing it writes is run as a call, so nothing is held back.
        gate = TextGate(self.required_client_names if final else {*self.builtin_names, *self.client_names})
        shown: list[str] = []
        streamed: dict[int, _StreamedCall] = {}
        client_count = 0
        finish_reason = None

        async def announce(call: _StreamedCall) -> None:
            nonlocal client_count
            if call.kind is None:
                call.kind = self._classify(call.name, final)
                if call.kind == "client":
                    if self.parallel_client_calls or client_count == 0:
                        call.client_index = client_count
                        client_count += 1
                    else:
                        call.kind = "ignored"
            if call.kind == "client" and not call.announced:
                call.announced = True
                call.client_id = new_call_id()
                await self.emit(ChoiceDelta(0, {"tool_calls": [{"index": call.client_index, "id": call.client_id, "type": "function", "function": {"name": call.name, "arguments": "".join(call.arguments)}}]}))

        meter = _TurnMeter()
        async for event in meter.deltas(events):
            delta = event.delta
            text = delta.get("content")
            if text:
                visible = gate.feed(text)
                if visible and self.streaming:
                    shown.append(visible)
                    await self._show_answer(visible)
            refusal = delta.get("refusal")
            if refusal:
                await self.emit(ChoiceDelta(0, {"refusal": refusal}))
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                await self.emit(ChoiceDelta(0, {"reasoning_content": reasoning, "reasoning": reasoning}))
            for fragment in delta.get("tool_calls") or ():
                position = fragment.get("index", 0)
                call = streamed.get(position)
                if call is None:
                    # A new call starts: the previous ones' names are complete.
                    for earlier in streamed.values():
                        if earlier.name:
                            await announce(earlier)
                    call = streamed[position] = _StreamedCall()
                if fragment.get("id"):
                    call.id = fragment["id"]
                function = fragment.get("function") or {}
                if function.get("name"):
                    call.name += function["name"]
                arguments = function.get("arguments")
                if arguments:
                    if call.kind is None and call.name:
                        call.arguments.append(arguments)
                        await announce(call)
                        continue
                    call.arguments.append(arguments)
                    if call.kind == "client" and call.announced:
                        await self.emit(ChoiceDelta(0, {"tool_calls": [{"index": call.client_index, "function": {"arguments": arguments}}]}))
            if event.finish_reason:
                finish_reason = event.finish_reason
        usage = meter.usage
        for call in streamed.values():
            if call.name:
                await announce(call)

        calls = []
        for c in streamed.values():
            if c.name and c.kind in ("builtin", "client", "unknown"):
                c.id = c.id or new_call_id()
                calls.append(Call(c.id, c.name, "".join(c.arguments) or "{}", c.kind, c.client_id))
        held = gate.rest()
        call_text = ""
        if held and (not final or self.required_client_names):
            parsed = parse_tool_calls(held, {*self.builtin_names, *self.client_names})
            if parsed:
                call_text, held = held, ""
                for p in parsed:
                    call = _StreamedCall(name=p.name, arguments=[p.arguments])
                    await announce(call)
                    if call.kind in ("builtin", "client", "unknown"):
                        call.id = call.id or new_call_id()
                        calls.append(Call(call.id, call.name, p.arguments, call.kind, call.client_id))
        if self.streaming:
            if held:
                await self._show_answer(held)
            text = "".join(shown) + held
            if calls and text.strip():
                # Words beside tool calls were already streamed; keep the next turn's apart from them.
                self.separate_next = True
            return Turn(text, calls, finish_reason, usage)
        text = gate.text[: len(gate.text) - len(call_text)] if call_text else gate.text
        if calls:
            # Words the model said beside its tool calls are a step, not the answer.
            if text.strip():
                note = text.strip() + "\n"
                await self.emit(ChoiceDelta(0, {"reasoning_content": note, "reasoning": note}))
        elif text:
            await self.emit(ChoiceDelta(0, {"content": text}))
        return Turn(text, calls, finish_reason, usage)

    async def _read_constrained(self, events: Any, final: bool) -> Turn:
        json_answer = self.answer_schema is not None
        streamer: AnswerStreamer | JsonAnswerStreamer = JsonAnswerStreamer() if json_answer else AnswerStreamer()
        finish_reason = None
        meter = _TurnMeter()
        async for event in meter.deltas(events):
            text = event.delta.get("content")
            if text:
                answer_piece = streamer.feed(text)
                if answer_piece:
                    await self.emit(ChoiceDelta(0, {"content": answer_piece}))
            if event.finish_reason:
                finish_reason = event.finish_reason
        usage = meter.usage
        raw = streamer.buffer
        answered = ""
        step = parse_step(raw, json_answer=json_answer)
        if step is not None and step[0] == "answer":
            if not streamer._started:
                await self.emit(ChoiceDelta(0, {"content": step[1]}))
                return Turn(step[1], [], finish_reason, usage, raw_text=raw)
            return Turn(streamer.answer, [], finish_reason, usage, raw_text=raw)
        if streamer._started:
            # The answer began streaming but the JSON never closed (max_tokens): keep what was said.
            answered = streamer.answer
            return Turn(answered, [], finish_reason or "length", usage, raw_text=raw)
        if step is not None and step[0] == "call" and (not final or self.required_client_names):
            name, arguments = step[1]
            kind = self._classify(name, final)
            call = Call(new_call_id(), name, arguments, kind, new_call_id())
            if kind == "client":
                await self.emit(ChoiceDelta(0, {"tool_calls": [{"index": 0, "id": call.client_id, "type": "function", "function": {"name": name, "arguments": arguments}}]}))
            return Turn("", [call], "tool_calls", usage, raw_text=raw)
        # Not a valid step (the upstream ignored the schema): read it leniently, else it is the answer.
        known = [*self.builtin_names, *(self.client_names if self.client_choice != "none" else ())]
        parsed = parse_tool_calls(raw, known) if not final or self.required_client_names else []
        if parsed:
            calls = [Call(new_call_id(), p.name, p.arguments, self._classify(p.name, final), new_call_id()) for p in parsed]
            for index, call in enumerate(c for c in calls if c.kind == "client"):
                await self.emit(ChoiceDelta(0, {"tool_calls": [{"index": index, "id": call.client_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]}))
            return Turn("", calls, "tool_calls", usage, raw_text=raw)
        await self.emit(ChoiceDelta(0, {"content": raw}))
        return Turn(raw, [], finish_reason, usage, raw_text=raw)

    # -- tools ------------------------------------------------------------

    async def _run_builtins(self, calls: list[Call]) -> list[ToolOutcome]:
        outcomes: list[ToolOutcome | None] = [None] * len(calls)
        limiter = anyio.CapacityLimiter(max(1, self.limits.max_parallel_tools))
        for call in calls:
            try:
                shown: Any = orjson.loads(call.arguments or "{}")
            except orjson.JSONDecodeError:
                shown = call.arguments
            await self.emit(self.steps.tool_call(self.step, call.id, call.name, shown))

        # Decided before any call of the turn runs: calls of one turn cannot see each other's results.
        refusals = [self.taint.refusal(call.name) if call.kind == "builtin" else None for call in calls]

        async def run_one(i: int, call: Call) -> None:
            async with limiter:
                timeout = max(0.1, min(self.limits.tool_timeout_seconds, self.remaining_wall()))
                if refusals[i] is not None:
                    outcome = ToolOutcome(call.name, "error", refusals[i] or "", 0.0, data={"refused": True})
                elif call.kind == "builtin":
                    outcome = await self.registry.call(call.name, call.arguments, self.context, timeout=timeout)
                else:
                    available = ", ".join([*self.builtin_names, *sorted(self.client_names)])
                    outcome = ToolOutcome(call.name, "unknown_tool", f"error: there is no tool named {call.name!r}. Available tools: {available}.", 0.0)
            outcomes[i] = outcome
            if call.kind == "builtin":
                self.taint.observe(call.name, outcome)
            self.sources.extend(outcome.sources)
            await self.emit(self.steps.tool_result(self.step, call.id, outcome))

        async with anyio.create_task_group() as tg:
            for i, call in enumerate(calls):
                tg.start_soon(run_one, i, call)
        return [o for o in outcomes if o is not None]

    # -- the run ------------------------------------------------------------

    async def execute(self, messages: list[dict[str, Any]], history_prefix_len: int) -> None:
        messages = [_upstream_message(m) for m in messages]
        if self.builtin_names and not self.constrained:
            prompt = (self.system_prompt or NATIVE_SYSTEM_PROMPT).format(names=", ".join(self.builtin_names))
            messages = [{"role": "system", "content": prompt}, *messages]
            history_prefix_len += 1
        if self.recall is not None:
            latest = _latest_user_text(messages)
            if latest:
                memory = await self.recall(latest)
                if memory:
                    messages = [{"role": "system", "content": memory}, *messages]
                    history_prefix_len += 1
                    self.taint.note_memory_read("auto_recall")
        # A resumed run: built-in steps restored from before the pause count too.
        self.taint.observe_history(messages)
        new_from = len(messages)
        finish = "stop"
        try:
            with anyio.fail_after(max(0.1, self.remaining_wall())):
                finish = await self._loop(messages, new_from)
        except TimeoutError:
            await self.emit(self.steps.note("limit", f"Stopped: the run reached its wall-time limit of {self.limits.max_wall_seconds:g} s.", limit="max_wall_seconds"))
            finish = "length"
        except LimitReached as limit:
            await self.emit(self.steps.note("limit", limit.message, limit=limit.limit))
            finish = "length"
        if self.sources and self.answer:
            annotations = find_citations("".join(self.content_sent), self.sources)
            if annotations:
                await self.emit(ChoiceDelta(0, {"annotations": annotations}))
        await self.emit(ChoiceDelta(0, self.steps.closing_fields(), finish_reason=finish))
        await self.emit(UsageReport(dict(self.usage)))

    def _check_tokens(self) -> None:
        if self.usage["total_tokens"] >= self.limits.max_total_tokens:
            raise LimitReached("max_total_tokens", f"Stopped: the run used {self.usage['total_tokens']} tokens, its limit is {self.limits.max_total_tokens}.")

    async def _loop(self, messages: list[dict[str, Any]], new_from: int) -> str:
        force_final = False
        limit_note: str | None = None
        answer_after_hint = False
        while True:
            if answer_after_hint:
                force_final, answer_after_hint = True, False
            if self.first_call is not None and self.first_call[0] in self.builtin_names and not force_final:
                name, arguments = self.first_call
                self.first_call = None
                turn = Turn("", [Call(new_call_id(), name, orjson.dumps(arguments).decode(), "builtin")], "tool_calls", None)
                # The hinted call did what the request asked; the model answers next. Measured:
                # SmolLM2-135M, still offered tools, fed the product back into python until the
                # repeat guard stopped it. (A client tool_choice that requires its own call still applies.)
                answer_after_hint = not self.required_client_names
            else:
                self.first_call = None
                turn = await self._model_turn(messages, final=force_final)
            if self.required_client_names and (force_final or not turn.calls) and not any(c.kind == "client" for c in turn.calls):
                if force_final:
                    names = ", ".join(self.required_client_names)
                    raise OpenAIError(502, f"tool_choice requires a call of one of your functions ({names}), but the model did not make one.", code="tool_choice_not_satisfied")
                # An answer without the required call (an upstream that ignores tool_choice): ask once more, offering only those functions.
                force_final = True
                continue
            if (force_final and not self.required_client_names) or not turn.calls:
                self.answer = turn.content
                if limit_note:
                    return "length"
                return turn.finish_reason if turn.finish_reason in ("length", "content_filter") else "stop"
            builtin = [c for c in turn.calls if c.kind in ("builtin", "unknown")]
            client = [c for c in turn.calls if c.kind == "client"]
            repeated = [c for c in builtin if (c.name, _canonical(c.arguments)) in self.seen_calls]
            if repeated and not client:
                await self.emit(self.steps.note("repeat", f"Stopped a repeated call of {repeated[0].name} with the same arguments; asking for the final answer."))
                force_final = True
                continue
            self._check_tokens()
            if builtin and self.step >= self.limits.max_steps:
                limit_note = f"Stopped: the run reached its limit of {self.limits.max_steps} tool steps."
                await self.emit(self.steps.note("limit", limit_note, limit="max_steps"))
                force_final = True
                continue
            assistant: dict[str, Any] = {
                "role": "assistant",
                "content": turn.content or None,
                "tool_calls": [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in turn.calls],
            }
            messages.append(assistant)
            if builtin:
                self.step += 1
                for c in builtin:
                    self.seen_calls.add((c.name, _canonical(c.arguments)))
                outcomes = await self._run_builtins(builtin)
                for call, outcome in zip(builtin, outcomes):
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": outcome.content})
            if client:
                await self.continuations.save(
                    run_key="run_" + os.urandom(12).hex(),
                    scope=self.context.scope,
                    call_ids=[c.client_id for c in client],
                    messages=messages[new_from:],
                    meta={
                        "steps": self.step,
                        "sources": [{"url": x.url, "title": x.title, "snippet": x.snippet} for x in self.sources],
                        # The client answers with our ids; the stored history (and the upstream) knows its own.
                        "ids": {c.client_id: c.id for c in client},
                    },
                    ttl=self.continuation_ttl,
                )
                return "tool_calls"
            self._check_tokens()
