#!/usr/bin/env python3
"""CPU that failover routing adds to one upstream call, measured in-process.

A model with two deployments runs every call through
:class:`~toolrelay.app.providers.routing.RoutedProvider` (choose a deployment,
count the attempt, note who answered, relay each event). This times that
layer alone, with a provider that answers at once, against calling the same
provider directly, so the difference is the routing's own cost per request,
free of the network and load-generator noise an end-to-end run carries
(bench/proxy.py --deployments 2 measures the whole request).

    python bench/routing_overhead.py            # non-streamed (3 events) and streamed (22 events)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Event, UsageReport
from toolrelay.app.providers.base import Health, UpstreamCall
from toolrelay.app.providers.routing import Deployment, DeploymentGroup, RoutedProvider, Routing
from toolrelay.app.settings import RoutingSettings


class _Instant:
    """A provider whose answer is ready at once: ``events`` text deltas, usage, done."""

    kind = "openai"

    def __init__(self, name: str, events: int) -> None:
        self.name = name
        self._events = events

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def health(self) -> Health:
        raise NotImplementedError

    async def list_models(self) -> list[str]:
        return []

    async def complete(self, call: UpstreamCall) -> AsyncIterator[Event]:
        if self._events == 1:
            yield ChoiceMessage(0, {"role": "assistant", "content": "hi " * 20}, "stop")
        else:
            for _ in range(self._events):
                yield ChoiceDelta(0, {"content": "hi "})
            yield ChoiceDelta(0, {}, "stop")
        yield UsageReport({"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25})

    def forward(self, call: Any) -> AsyncIterator[bytes]:
        raise NotImplementedError


async def _drain(iterator: AsyncIterator[Event]) -> None:
    async for _ in iterator:
        pass


async def _per_call_us(provider: Any, call: UpstreamCall, n: int) -> float:
    for _ in range(1000):
        await _drain(provider.complete(call))
    start = time.process_time()
    for _ in range(n):
        await _drain(provider.complete(call))
    return (time.process_time() - start) / n * 1e6


async def main() -> None:
    policy = RoutingSettings()
    body = {"model": "m", "messages": [{"role": "user", "content": "Say hello in twenty short words."}], "max_tokens": 20}
    for label, events in (("non-streamed", 1), ("streamed, 20 chunks", 20)):
        providers = [_Instant(f"up{i}", events) for i in range(2)]
        deployments = [Deployment(model_id="m", name=p.name, provider=p, model="m", index=i, policy=policy) for i, p in enumerate(providers)]
        routing = Routing(policy)
        group = DeploymentGroup("m", deployments, "weighted", None, random.random)
        routing.add(group)
        routed = RoutedProvider(group, fallbacks=[], context_fallbacks=[], routing=routing)
        call = UpstreamCall(body, events > 1, "req_bench")
        n = 20000
        direct = min([await _per_call_us(providers[0], call, n) for _ in range(3)])
        through = min([await _per_call_us(routed, call, n) for _ in range(3)])
        print(f"{label:22s} direct {direct:6.1f} us   two deployments {through:6.1f} us   routing adds {through - direct:5.1f} us per request")


if __name__ == "__main__":
    asyncio.run(main())
