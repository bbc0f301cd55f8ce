"""Every deployment's live state: attempts counted, breakers (shared through Redis when configured), /ready and /metrics views."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from toolrelay.app.errors import OpenAIError
from toolrelay.app.middleware import current_request
from toolrelay.app.providers.routing.breaker import BreakerState
from toolrelay.app.providers.routing.deployments import Deployment, DeploymentGroup
from toolrelay.app.providers.routing.shared import RedisBreakers
from toolrelay.app.settings import RoutingSettings

if TYPE_CHECKING:
    from toolrelay.app.tokens import TokenCounter

log = logging.getLogger("toolrelay.routing")

__all__ = ["Routing"]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Routing:
    """The deployments of every routed model (and of plain models used as fallbacks), in one place."""

    def __init__(
        self,
        policy: RoutingSettings,
        *,
        tokens: TokenCounter | None = None,
        shared: RedisBreakers | None = None,
        plain_group: Callable[[str], DeploymentGroup | None] | None = None,
    ) -> None:
        self.policy = policy
        self.tokens = tokens
        self._shared = shared
        self._groups: dict[str, DeploymentGroup] = {}
        # Builds the one-deployment group of a model served the old way, when it is a fallback.
        self._plain_group = plain_group
        self.attempts: dict[tuple[str, str, str], int] = defaultdict(int)
        self._sync_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ registry

    def add(self, group: DeploymentGroup) -> None:
        self._groups[group.model_id] = group

    def group(self, model_id: str) -> DeploymentGroup | None:
        group = self._groups.get(model_id)
        if group is None and self._plain_group is not None:
            group = self._plain_group(model_id)
            if group is not None:
                self._groups[model_id] = group
        return group

    def deployments(self) -> list[Deployment]:
        return [d for group in self._groups.values() for d in group.deployments]

    # ------------------------------------------------------------------ one request's attempts

    def attempted(self, d: Deployment, outcome: str, seconds: float, request_id: str, error: OpenAIError | None = None) -> None:
        self.attempts[(d.model_id, d.name, outcome)] += 1
        if error is not None:
            # No body, key or header: the status, our code and the upstream's name say what happened.
            log.warning(
                "upstream attempt model=%s deployment=%s upstream=%s outcome=%s status=%d code=%s after=%.1fms request=%s",
                d.model_id, d.name, d.upstream, outcome, error.status, error.code, seconds * 1000, request_id,
            )  # fmt: skip
        elif log.isEnabledFor(logging.DEBUG):
            log.debug(
                "upstream attempt model=%s deployment=%s upstream=%s outcome=%s after=%.1fms request=%s",
                d.model_id, d.name, d.upstream, outcome, seconds * 1000, request_id,
            )  # fmt: skip

    def answered(self, d: Deployment) -> None:
        """Note on the request who answered: the response headers and the ledger's upstream."""
        info = current_request.get()
        if info is not None:
            info.upstream = d.upstream
            info.deployment = d.name
            info.served_model = d.model_id

    async def failed(self, d: Deployment) -> None:
        now = time.monotonic()
        opened = d.breaker.failed(now)
        if opened:
            log.warning("deployment %s of model %s is out for %.0f s after repeated failures", d.name, d.model_id, d.breaker.open_until - now)
        if self._shared is not None:
            seconds = await self._shared.failed(
                d.key, limit=self.policy.breaker_failures, window=self.policy.breaker_window_seconds, cooldown=d.breaker.cooldown, reopen=opened
            )
            if seconds and not opened:
                d.breaker.trip(time.monotonic(), seconds)
                log.warning("deployment %s of model %s is out for %.0f s (failures counted across processes)", d.name, d.model_id, seconds)

    async def succeeded(self, d: Deployment) -> None:
        if d.breaker.succeeded():
            log.info("deployment %s of model %s is back in service", d.name, d.model_id)
        if self._shared is not None:
            await self._shared.succeeded(d.key)

    async def claim_probe(self, d: Deployment, now: float) -> bool:
        """For a half-open deployment: True when this request is its one probe."""
        if self._shared is not None and not await self._shared.claim_probe(d.key, d.breaker.cooldown):
            d.breaker.claim_probe(now)  # another process probes: stay away meanwhile
            return False
        d.breaker.claim_probe(now)
        log.info("deployment %s of model %s: probing it after its cooldown", d.name, d.model_id)
        return True

    def unavailable(self, group: DeploymentGroup) -> OpenAIError:
        now = time.monotonic()
        waits = [max(d.breaker.open_until, d.rest_until) - now for d in group.deployments]
        retry = max(1, math.ceil(min((w for w in waits if w > 0), default=1.0)))
        return OpenAIError(
            503,
            f"No deployment of model '{group.model_id}' is available right now (all cooling down after failures); retry later.",
            type="server_error",
            code="deployments_unavailable",
            headers={"retry-after": str(retry), "retry-after-ms": str(retry * 1000)},
        )

    # ------------------------------------------------------------------ shared state

    async def start(self) -> None:
        if self._shared is None:
            return
        await self._shared.start()
        self._sync_task = asyncio.get_running_loop().create_task(self.run_sync(), name="toolrelay-breaker-sync")

    async def run_sync(self) -> None:
        """Read the breakers other processes opened, every ``breaker_sync_seconds``, until cancelled."""
        shared = self._shared
        if shared is None:
            return
        while True:
            await anyio.sleep(self.policy.breaker_sync_seconds)
            deployments = self.deployments()
            remote = await shared.open_seconds([d.key for d in deployments])
            if remote is None:
                continue
            now = time.monotonic()
            for d, seconds in zip(deployments, remote, strict=True):
                breaker = d.breaker
                if seconds > 0:
                    if breaker.open_until < now + seconds - 0.5:
                        breaker.trip(now, seconds)
                elif breaker.state(now) is BreakerState.OPEN:
                    breaker.succeeded()  # closed by another process's successful probe

    async def close(self) -> None:
        task, self._sync_task = self._sync_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._shared is not None:
            await self._shared.close()

    # ------------------------------------------------------------------ what operators see

    def ready(self) -> dict[str, Any]:
        now = time.monotonic()
        out = []
        for d in self.deployments():
            state = d.state(now)
            entry: dict[str, Any] = {
                "model": d.model_id,
                "deployment": d.name,
                "upstream": d.upstream,
                "state": state.name.lower(),
                "inflight": d.inflight,
                "recent_failures": d.breaker.failures,
            }
            if state is BreakerState.OPEN:
                entry["retry_in_seconds"] = round(d.breaker.open_until - now, 1)
            if d.rest_until > now:
                entry["rate_limited_for_seconds"] = round(d.rest_until - now, 1)
            if d.latency is not None:
                entry["latency_ms"] = round(d.latency * 1000, 1)
            out.append(entry)
        return {"deployments": out}

    def any_open(self) -> bool:
        now = time.monotonic()
        return any(d.state(now) is BreakerState.OPEN for d in self.deployments())

    def metric_lines(self) -> list[str]:
        """This process's breaker states; the attempts (:attr:`attempts`) are a counter the metrics sum over workers."""
        lines = [
            "# HELP toolrelay_deployment_state Breaker state of each deployment: 0 closed, 1 half-open (probing), 2 open.",
            "# TYPE toolrelay_deployment_state gauge",
        ]
        now = time.monotonic()
        lines.extend(
            f'toolrelay_deployment_state{{model="{_escape(d.model_id)}",deployment="{_escape(d.name)}"}} {int(d.state(now))}' for d in self.deployments()
        )
        return lines
