"""Deployments (one upstream serving a model) and the group of them behind one served id."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from toolrelay.app.providers.base import Provider
from toolrelay.app.providers.routing.breaker import Breaker, BreakerState
from toolrelay.app.providers.routing.strategy import Candidate, pick
from toolrelay.app.settings import RoutingSettings, RoutingStrategy

__all__ = ["Deployment", "DeploymentGroup"]

_MINUTE = 60.0
# Weight of the newest time-to-first-byte in the smoothed latency.
_LATENCY_ALPHA = 0.3


class Deployment:
    """One upstream serving one model id, with its live numbers (this process's)."""

    __slots__ = (
        "breaker",
        "index",
        "inflight",
        "key",
        "latency",
        "model",
        "model_id",
        "name",
        "priority",
        "provider",
        "rest_until",
        "rpm",
        "tpm",
        "upstream",
        "weight",
        "_requests",
        "_tokens",
        "_token_sum",
    )

    def __init__(
        self,
        *,
        model_id: str,
        name: str,
        provider: Provider,
        model: str,
        index: int,
        policy: RoutingSettings,
        weight: float = 1.0,
        priority: int = 0,
        rpm: int = 0,
        tpm: int = 0,
    ) -> None:
        self.model_id = model_id
        self.name = name
        self.provider = provider
        self.upstream = provider.name
        self.model = model
        self.index = index
        self.weight = weight
        self.priority = priority
        self.rpm = rpm
        self.tpm = tpm
        # The shared-state key (Redis): model and deployment, which together are unique.
        self.key = f"{model_id}|{name}"
        self.breaker = Breaker(limit=policy.breaker_failures, window=policy.breaker_window_seconds, cooldown=policy.breaker_cooldown_seconds)
        self.inflight = 0
        self.latency: float | None = None
        # A 429's retry-after: not used before then (this process only).
        self.rest_until = 0.0
        self._requests: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_sum = 0

    def has_room(self, now: float) -> bool:
        """Below its rpm and tpm for the last minute (always, when neither is set)."""
        if self.rpm:
            requests = self._requests
            while requests and requests[0] <= now - _MINUTE:
                requests.popleft()
            if len(requests) >= self.rpm:
                return False
        if self.tpm:
            tokens = self._tokens
            while tokens and tokens[0][0] <= now - _MINUTE:
                self._token_sum -= tokens.popleft()[1]
            if self._token_sum >= self.tpm:
                return False
        return True

    def started(self, now: float) -> None:
        self.inflight += 1
        if self.rpm:
            self._requests.append(now)

    def used_tokens(self, now: float, tokens: int) -> None:
        if self.tpm and tokens > 0:
            self._tokens.append((now, tokens))
            self._token_sum += tokens

    def answered(self, seconds: float) -> None:
        latency = self.latency
        self.latency = seconds if latency is None else latency + _LATENCY_ALPHA * (seconds - latency)

    def state(self, now: float) -> BreakerState:
        return self.breaker.state(now)


class DeploymentGroup:
    """The deployments of one served id and how an attempt picks among them."""

    __slots__ = ("context_window", "deployments", "model_id", "random", "strategy")

    def __init__(
        self, model_id: str, deployments: list[Deployment], strategy: RoutingStrategy, context_window: int | None, random: Callable[[], float]
    ) -> None:
        self.model_id = model_id
        self.deployments = deployments
        self.strategy: RoutingStrategy = strategy
        self.context_window = context_window
        self.random = random

    def choose(self, now: float, tried: set[int]) -> Deployment | None:
        """A deployment not yet tried by this request, usable (breaker, rest) and, if any has room, with room."""
        usable = [d for d in self.deployments if d.index not in tried and d.rest_until <= now and d.breaker.usable(now)]
        if not usable:
            return None
        roomy = [d for d in usable if d.has_room(now)] if len(usable) > 1 else usable
        pool = roomy or usable
        if len(pool) == 1:
            return pool[0]
        chosen = pick(self.strategy, [Candidate(d.index, d.weight, d.priority, d.inflight, d.latency) for d in pool], self.random)
        return self.deployments[chosen] if chosen is not None else None

    def soonest_rest(self, now: float) -> float | None:
        """Seconds until the first resting (429) deployment is usable again, if one is resting."""
        waits = [d.rest_until - now for d in self.deployments if d.rest_until > now and d.breaker.usable(d.rest_until)]
        return min(waits) if waits else None
