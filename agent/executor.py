"""Running the built-in tool calls of one turn, concurrently, with their step records."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import orjson

from toolrelay.agent.steps import StepLog
from toolrelay.agent.taint import RunTaint
from toolrelay.agent.turns import Call
from toolrelay.app.events import Event
from toolrelay.app.tracing import NOOP_TRACER, Tracer
from toolrelay.tools.base import Source, ToolContext
from toolrelay.tools.registry import ToolOutcome, ToolRegistry

__all__ = ["ToolExecutor"]


class ToolExecutor:
    """Runs a turn's ``builtin`` and ``unknown`` calls; owns the run's taint and the sources its tools returned.

    Calls of one turn run concurrently, at most ``max_parallel`` at a time
    (an anyio task group with a capacity limiter). Each gets a ``tool_call``
    step record before any runs and a ``tool_result`` record as it ends.
    """

    __slots__ = ("_context", "_emit", "_max_parallel", "_registry", "_steps", "_timeout", "_tracer", "_unknown_hint", "sources", "taint")

    def __init__(
        self,
        registry: ToolRegistry,
        context: ToolContext,
        *,
        taint: RunTaint,
        steps: StepLog,
        emit: Callable[[Event], Awaitable[None]],
        tool_timeout_seconds: float,
        max_parallel: int,
        available_names: Sequence[str],
        sources: list[Source] | None = None,
        tracer: Tracer = NOOP_TRACER,
    ) -> None:
        self._registry = registry
        self._tracer = tracer
        self._context = context
        # Untrusted content seen so far, and the tools it closes (agent/taint.py).
        self.taint = taint
        self._steps = steps
        self._emit = emit
        self._timeout = tool_timeout_seconds
        self._max_parallel = max(1, max_parallel)
        # Named in the error result of a call of a tool that does not exist.
        self._unknown_hint = ", ".join(available_names)
        # Sources the tools returned (restored ones first), in the order their results came: for citations.
        self.sources: list[Source] = sources if sources is not None else []

    async def run(self, calls: list[Call], step: int, remaining_wall: Callable[[], float]) -> list[ToolOutcome]:
        """The outcomes of ``calls``, in their order; none runs past the run's remaining wall time."""
        outcomes: list[ToolOutcome | None] = [None] * len(calls)
        limiter = anyio.CapacityLimiter(self._max_parallel)
        for call in calls:
            try:
                shown: Any = orjson.loads(call.arguments or "{}")
            except orjson.JSONDecodeError:
                shown = call.arguments
            # A builtin call with a client id is one the client approved (agent/approvals.py).
            extra = {"approval_request_id": call.client_id} if call.client_id and call.kind == "builtin" else {}
            await self._emit(self._steps.tool_call(step, call.id, call.name, shown, **extra))

        # Decided before any call of the turn runs: calls of one turn cannot see each other's results.
        refusals = [self.taint.refusal(call.name) if call.kind == "builtin" else None for call in calls]

        async def run_one(i: int, call: Call) -> None:
            # GenAI semantic conventions; the arguments and the result stay out of the span (user data).
            span = self._tracer.start(
                f"execute_tool {call.name}",
                {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call.name, "gen_ai.tool.call.id": call.id, "gen_ai.tool.type": "function"},
            )
            token = self._tracer.activate(span)
            try:
                outcome = await run_call(i, call)
                if outcome.status != "ok":
                    span.set_error(outcome.status)
            finally:
                self._tracer.deactivate(token)
                span.end()
            outcomes[i] = outcome
            if call.kind == "builtin":
                self.taint.observe(call.name, outcome)
            self.sources.extend(outcome.sources)
            await self._emit(self._steps.tool_result(step, call.id, outcome))

        async def run_call(i: int, call: Call) -> ToolOutcome:
            async with limiter:
                timeout = max(0.1, min(self._timeout, remaining_wall()))
                refusal = refusals[i]
                if refusal is not None:
                    outcome = ToolOutcome(call.name, "error", refusal, 0.0, data={"refused": True})
                elif call.kind == "builtin":
                    outcome = await self._registry.call(call.name, call.arguments, self._context, timeout=timeout)
                else:
                    outcome = ToolOutcome(
                        call.name, "unknown_tool", f"error: there is no tool named {call.name!r}. Available tools: {self._unknown_hint}.", 0.0
                    )
            return outcome

        async with anyio.create_task_group() as tg:
            for i, call in enumerate(calls):
                tg.start_soon(run_one, i, call)
        return [o for o in outcomes if o is not None]
