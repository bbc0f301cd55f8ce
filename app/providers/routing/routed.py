"""Failover for one served model: retries before the first byte, fallbacks, breakers.

:class:`RoutedProvider` is a :class:`~toolrelay.app.providers.base.Provider`,
put on the :class:`~toolrelay.app.providers.router.Route` of every model with
deployments or fallbacks, so each path that calls an upstream (chat, the agent
loop, Responses translated and native, embeddings, legacy completions) gets
the same behaviour without knowing of it. Models served the old way (one
upstream, nothing declared) keep the plain provider: no cost on their path.

An attempt ends at the upstream's first event (or first payload): before it,
a connection refused, a timeout, a 429 or a 5xx sends the request to another
deployment (or, with no other free one, to the same after its retry-after);
after it nothing is retried, so a client never gets two answers spliced. A
connection dropped after the request was written is not retried either (the
upstream may have processed and billed it) unless ``retry_after_send``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio

from toolrelay.app.errors import OpenAIError, UpstreamDisconnected, invalid_request
from toolrelay.app.events import Event, Failure, UsageReport
from toolrelay.app.providers.base import ForwardCall, Health, UpstreamCall
from toolrelay.app.providers.routing.deployments import Deployment, DeploymentGroup
from toolrelay.app.providers.routing.state import Routing

log = logging.getLogger("toolrelay.routing")

__all__ = ["RoutedProvider", "classify"]

T = TypeVar("T")

# Outcomes (the ``outcome`` label of toolrelay_upstream_attempts_total).
OK = "ok"
RATE_LIMITED = "rate_limited"
ERROR = "error"
DROPPED = "dropped"
BAD_RESPONSE = "bad_response"
CONTEXT = "context_length"
REFUSED = "refused"
STREAM_ERROR = "stream_error"
_BREAKER_FAILURES = frozenset((ERROR, DROPPED, BAD_RESPONSE, STREAM_ERROR))


def classify(err: OpenAIError) -> str:
    """What an upstream's error before the first byte means for routing."""
    if isinstance(err, UpstreamDisconnected):
        return DROPPED
    if err.code == "context_length_exceeded":
        return CONTEXT
    if err.status == 429:
        return RATE_LIMITED
    if err.code == "bad_upstream_response":
        return BAD_RESPONSE  # it answered (and may have billed): not worth a second call
    if err.status >= 500 or err.status == 408:
        return ERROR
    return REFUSED  # the request's own fault: every deployment would say the same


def _retry_after(err: OpenAIError) -> float:
    headers = err.headers
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000.0)
        return max(0.0, float(headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


class _Exhausted(Exception):
    """Every attempt of one model failed; ``error`` is the last upstream error (None: none was free)."""

    def __init__(self, error: OpenAIError | None, context: bool = False) -> None:
        super().__init__()
        self.error = error
        self.context = context


class RoutedProvider:
    """The provider of a model with deployments or fallbacks (see the module docstring)."""

    def __init__(self, group: DeploymentGroup, *, fallbacks: list[str], context_fallbacks: list[str], routing: Routing) -> None:
        first = group.deployments[0].provider
        # The first deployment's upstream stands for the model where one name is needed
        # (pricing, the native-Responses decision, the ledger until a deployment answers).
        self.name = first.name
        self.kind = first.kind
        self.group = group
        self.fallbacks = fallbacks
        self.context_fallbacks = context_fallbacks
        self._routing = routing

    async def start(self) -> None:
        """Nothing: the deployments' providers are started with the upstreams."""

    async def close(self) -> None:
        """Nothing: the deployments' providers are closed with the upstreams."""

    async def health(self) -> Health:
        return await self.group.deployments[0].provider.health()

    async def list_models(self) -> list[str]:
        return []

    def complete(self, call: UpstreamCall) -> AsyncIterator[Event]:
        def open_call(d: Deployment) -> AsyncIterator[Event]:
            return d.provider.complete(UpstreamCall({**call.body, "model": d.model}, call.stream, call.request_id, call.headers))

        return self._run(open_call, call.request_id, call.body)

    def forward(self, call: ForwardCall) -> AsyncIterator[bytes]:
        def open_call(d: Deployment) -> AsyncIterator[bytes]:
            body = {**call.body, "model": d.model}
            return d.provider.forward(ForwardCall(call.path, body, call.stream, call.model, call.endpoint, call.request_id, call.max_event_bytes, call.headers))

        return self._run(open_call, call.request_id, None)

    async def _too_large(self, group: DeploymentGroup, chat_body: dict[str, Any] | None, request_id: str) -> OpenAIError | None:
        """The context error for a chat body that cannot fit the group's known window (estimated, not sent)."""
        window = group.context_window
        tokens = self._routing.tokens
        if not window or chat_body is None or tokens is None:
            return None
        prompt = await tokens.count_prompt(chat_body, group.deployments[0].model, request_id or None)
        wanted = chat_body.get("max_completion_tokens") or chat_body.get("max_tokens") or 0
        if not isinstance(wanted, int):
            wanted = 0
        if prompt + wanted <= window:
            return None
        return invalid_request(
            f"This model's maximum context length is {window} tokens. However, your messages resulted in about {prompt} tokens"
            + (f" and you requested {wanted} tokens for the completion" if wanted else "")
            + ". Please reduce the length of the messages or completion.",
            param="messages",
            code="context_length_exceeded",
        )

    async def _run(self, open_call: Callable[[Deployment], AsyncIterator[T]], request_id: str, chat_body: dict[str, Any] | None) -> AsyncIterator[T]:
        routing = self._routing
        policy = routing.policy
        deadline = time.monotonic() + policy.max_retry_seconds
        order = [self.group.model_id, *self.fallbacks]
        switched = False
        last: OpenAIError | None = None
        i = 0
        while i < len(order):
            group = self.group if i == 0 and not switched else routing.group(order[i])
            i += 1
            if group is None:
                continue
            context_error: OpenAIError | None = None
            if (switched or self.context_fallbacks) and group.context_window:
                context_error = await self._too_large(group, chat_body, request_id)
            if context_error is None:
                tried: set[int] = set()
                attempts = 0
                while attempts < policy.max_attempts and time.monotonic() < deadline:
                    now = time.monotonic()
                    d = group.choose(now, tried)
                    if d is None:
                        wait = group.soonest_rest(now)
                        if wait is None or wait > policy.max_retry_after_seconds or now + wait >= deadline:
                            break
                        log.info("model %s: every deployment is resting after a 429; retrying in %.2f s (request %s)", group.model_id, wait, request_id)
                        await anyio.sleep(wait)
                        tried.clear()
                        continue
                    tried.add(d.index)
                    if d.breaker.open_until and not await routing.claim_probe(d, now):
                        continue
                    attempts += 1
                    d.started(now)
                    iterator = open_call(d)
                    try:
                        first = await anext(iterator)
                    except StopAsyncIteration:
                        d.inflight -= 1
                        routing.attempted(d, OK, time.monotonic() - now, request_id)
                        await routing.succeeded(d)
                        routing.answered(d)
                        return
                    except OpenAIError as err:
                        d.inflight -= 1
                        await _aclose(iterator)
                        outcome = classify(err)
                        routing.attempted(d, outcome, time.monotonic() - now, request_id, err)
                        if outcome == RATE_LIMITED:
                            d.rest_until = time.monotonic() + _retry_after(err)
                        elif outcome in _BREAKER_FAILURES:
                            await routing.failed(d)
                        if outcome == CONTEXT:
                            context_error = err
                            break
                        if outcome in (REFUSED, BAD_RESPONSE) or (outcome == DROPPED and not policy.retry_after_send):
                            raise
                        last = err
                        continue
                    except BaseException:
                        d.inflight -= 1
                        await _aclose(iterator)
                        raise
                    elapsed = time.monotonic() - now
                    if type(first) is Failure:
                        # The stream broke before anything useful: the upstream had the request, so no retry.
                        routing.attempted(d, STREAM_ERROR, elapsed, request_id, first.error)
                        await routing.failed(d)
                    else:
                        d.answered(elapsed)
                        routing.attempted(d, OK, elapsed, request_id)
                        if d.breaker.open_until or d.breaker.failures:
                            await routing.succeeded(d)
                    routing.answered(d)
                    try:
                        yield first
                        if d.tpm:
                            async for item in iterator:
                                if type(item) is UsageReport:
                                    d.used_tokens(time.monotonic(), int(item.usage.get("total_tokens") or 0))
                                yield item
                        else:
                            async for item in iterator:
                                yield item
                    finally:
                        d.inflight -= 1
                        await _aclose(iterator)
                    return
            if context_error is not None:
                last = context_error
                if not switched and self.context_fallbacks:
                    log.info("model %s: request too large, trying its context fallbacks (request %s)", group.model_id, request_id)
                    order = list(self.context_fallbacks)
                    i = 0
                    switched = True
                    continue
                if not switched:
                    raise context_error
                continue
            if not switched and i < len(order):
                log.warning("model %s: no deployment answered; trying fallback %s (request %s)", group.model_id, order[i], request_id)
        if last is None:
            raise routing.unavailable(self.group)
        raise last
