#!/usr/bin/env python3
"""CPU the agent loop itself spends per step, without model or tool time.

Runs real :class:`agent.runner.AgentRunner` runs in-process against an
in-memory provider that answers instantly (a tool call for N turns, then a
streamed answer of 30 tokens) and an instant built-in tool, and divides the
process CPU time by the number of steps. What remains is the loop: building
each upstream request, reading the streamed turn, classifying calls,
validating arguments, running the tool through the registry, step records,
the queue to the HTTP side, continuation lookups, usage accounting. A step
here is one model turn plus the built-in call it makes.

    python bench/agent_overhead.py [--runs 300] [--steps 4]

Target (issue 3): below 2 ms per step.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toolrelay.agent.continuations import ContinuationStore
from toolrelay.agent.runner import AgentRunner
from toolrelay.app.config import AgentSettings, UpstreamSettings
from toolrelay.app.events import ChoiceDelta, Event, UsageReport
from toolrelay.app.middleware import RequestInfo
from toolrelay.app.providers.base import ForwardCall, Health, UpstreamCall
from toolrelay.app.providers.router import Route
from toolrelay.app.tokens import TokenCounter
from toolrelay.tools.current_time import CurrentTimeTool
from toolrelay.tools.registry import ToolRegistry

ANSWER = [f"word{i} " for i in range(30)]


class InstantProvider:
    """Answers like a streaming upstream would, with zero latency."""

    kind = "openai"

    def __init__(self, steps: int) -> None:
        self.name = "bench"
        self.settings = UpstreamSettings(base_url="http://unused")
        self.steps = steps

    async def complete(self, call: UpstreamCall) -> AsyncIterator[Event]:
        done = sum(1 for m in call.body["messages"] if m.get("role") == "tool")
        if done < self.steps:
            yield ChoiceDelta(
                0,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"index": 0, "id": f"call_{done}", "type": "function", "function": {"name": "current_time", "arguments": ""}}],
                },
            )
            yield ChoiceDelta(0, {"tool_calls": [{"index": 0, "function": {"arguments": '{"timezone": '}}]})
            yield ChoiceDelta(0, {"tool_calls": [{"index": 0, "function": {"arguments": f'"Etc/GMT+{done % 12}"}}'}}]})
            yield ChoiceDelta(0, {}, finish_reason="tool_calls")
        else:
            yield ChoiceDelta(0, {"role": "assistant", "content": ""})
            for token in ANSWER:
                yield ChoiceDelta(0, {"content": token})
            yield ChoiceDelta(0, {}, finish_reason="stop")
        yield UsageReport({"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130})

    async def forward(self, call: ForwardCall) -> AsyncIterator[bytes]:
        raise NotImplementedError("the agent loop calls chat only")
        yield b""  # an async generator, as the protocol's providers are

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def health(self) -> Health:
        return Health(self.name, self.kind, True)

    async def list_models(self) -> list[str]:
        return []


async def measure(runs: int, steps: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="toolrelay-agent-bench-"))
    settings = AgentSettings(max_steps=steps + 1, builtin_tools=["current_time"], keepalive_seconds=60)
    registry = ToolRegistry([CurrentTimeTool()])
    runner = AgentRunner(settings, registry, ContinuationStore(work / "agent.db"), TokenCounter())
    route = Route("bench-model", InstantProvider(steps), "bench-model", "native")
    payload = {"model": "agent/bench-model", "messages": [{"role": "user", "content": "What time is it in a few zones?"}], "stream": True}

    async def one() -> int:
        events = runner.run(payload=payload, route=route, model="agent/bench-model", request=None, info=RequestInfo("req_bench"))
        count = 0
        async for _ in events:
            count += 1
        return count

    for _ in range(20):  # warm caches, imports, the JSON Schema validator
        await one()
    per_step = []
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    for _ in range(runs):
        cpu = time.process_time()
        await one()
        per_step.append((time.process_time() - cpu) * 1000 / steps)
    total_cpu = time.process_time() - started_cpu
    wall = time.perf_counter() - started_wall
    return {
        "runs": runs,
        "steps_per_run": steps,
        "cpu_ms_per_step_mean": total_cpu * 1000 / (runs * steps),
        "cpu_ms_per_step_p50": statistics.median(per_step),
        "cpu_ms_per_step_p90": statistics.quantiles(per_step, n=10)[-1],
        "wall_s": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(measure(args.runs, args.steps))
    print(f"agent loop overhead: {result['runs']} runs x {result['steps_per_run']} steps (+ a 30-token streamed answer)")
    print(
        f"  CPU per step: mean {result['cpu_ms_per_step_mean']:.3f} ms, p50 {result['cpu_ms_per_step_p50']:.3f} ms, "
        f"p90 {result['cpu_ms_per_step_p90']:.3f} ms (target < 2 ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
