"""``POST /v1/chat/completions``: validate, route by model id, encode the events.

Both modes end here: proxy mode gets its events from a provider, agent mode
from the agent loop; :mod:`app.encoder` writes either as SSE or one JSON body.
Errors known before the first event become an HTTP error status; after that,
one ``data: {"error": ...}`` event ends the stream without ``[DONE]``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import orjson
from litestar import Request, post
from litestar.response import Response

from toolrelay.app.accumulate import CompletionAccumulator
from toolrelay.app.cache import CACHE_HEADER
from toolrelay.app.disconnect import answer_unless_gone
from toolrelay.app.encoder import BodyCollector, SSEEncoder, new_completion_id
from toolrelay.app.errors import OpenAIError, error_response
from toolrelay.app.events import Event, Failure, UsageReport
from toolrelay.app.json_response import JSONBytes
from toolrelay.app.jsonbody import parse_json_body
from toolrelay.app.middleware import RequestInfo, request_info
from toolrelay.app.model_ids import AGENT_PREFIX, split_agent_model
from toolrelay.app.providers.base import UpstreamCall
from toolrelay.app.providers.router import Route
from toolrelay.app.routes.openapi_docs import ChatCompletionOperation
from toolrelay.app.schema_check import SchemaChecker, SchemaLimits
from toolrelay.app.sse_response import SSEStream
from toolrelay.app.usage import RequestUsage
from toolrelay.app.validation import check_request

if TYPE_CHECKING:
    from toolrelay.app.services import Services

log = logging.getLogger("toolrelay.chat")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class UsageTracker:
    """Watches the events (:attr:`observe`) and, when the upstream reports no usage, estimates it with tiktoken."""

    __slots__ = ("services", "route", "payload", "info", "observe", "_completion", "_pending")

    def __init__(self, services: Services, route: Route, payload: dict[str, Any], info: RequestInfo) -> None:
        self.services = services
        self.route = route
        self.payload = payload
        self.info = info
        self._pending: dict[str, Any] | None = None
        # The usage report and the generated text's pieces, joined only if an estimate is needed.
        self._completion = CompletionAccumulator()
        # Once per streamed chunk: the accumulator's own method, no call in between.
        self.observe: Callable[[Event], None] = self._completion.add_generated

    @property
    def usage(self) -> dict[str, Any] | None:
        return self._completion.usage

    @usage.setter
    def usage(self, usage: dict[str, Any] | None) -> None:
        self._completion.usage = usage

    @property
    def estimated(self) -> bool:
        return self._completion.usage_estimated

    @estimated.setter
    def estimated(self, estimated: bool) -> None:
        self._completion.usage_estimated = estimated

    def take_run_usage(self, usage: dict[str, Any], pending: dict[str, Any] | None) -> None:
        """An agent run ended: the usage of its finished model calls, and the body of the
        call still in flight (cut short), if any. Its final UsageReport, when it sent one, wins."""
        if self.usage is None:
            self.usage = dict(usage)
            self._pending = pending

    async def estimate(self) -> UsageReport | None:
        """Usage for the record when the upstream sent none (many local servers)."""
        tokens = self.services.tokens
        model = self.route.upstream_model
        pending, self._pending = self._pending, None
        if pending is not None and self.usage is not None:
            # An agent run stopped during a model call: the upstream read that prompt.
            prompt = await tokens.count_messages_async(pending.get("messages") or [], model, pending.get("tools"))
            usage = self.usage
            usage["prompt_tokens"] = int(usage.get("prompt_tokens") or 0) + prompt
            usage["total_tokens"] = usage["prompt_tokens"] + int(usage.get("completion_tokens") or 0)
            self.estimated = True
            return None
        if self.usage is not None:
            return None
        # Off the event loop; the prompt was usually counted at admission already.
        prompt = await tokens.count_prompt(self.payload, model, self.info.request_id)
        completion = await tokens.count_text_async(self._completion.generated_text(), model)
        self.usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        self.estimated = True
        return UsageReport(self.usage, estimated=True)

    async def result(self, *, estimate: bool) -> RequestUsage | None:
        """What the request used, for the books; with ``estimate``, counted when the upstream reported
        nothing (an answer, or a client that left: the upstream billed what it did so far)."""
        if estimate:
            await self.estimate()
        return RequestUsage.from_report(self.usage, estimated=self.estimated)


class _ReplayTracker(UsageTracker):
    """The tracker of an answer replayed from the response cache: booked as a cache hit, at no cost."""

    __slots__ = ()

    async def result(self, *, estimate: bool) -> RequestUsage | None:
        usage = await super().result(estimate=estimate)
        return RequestUsage(cache_hit=True) if usage is None else dataclasses.replace(usage, cache_hit=True)


async def proxy_events(
    services: Services,
    request: Request[Any, Any, Any],
    info: RequestInfo,
    route: Route,
    payload: dict[str, Any],
    stream: bool,
    headers: Mapping[str, str],
    tracker: UsageTracker,
    *,
    check_context: bool = True,
) -> tuple[AsyncGenerator[Event, None], UsageTracker, Mapping[str, str]]:
    """The events of a proxied chat payload (Chat Completions, or a Responses request translated to
    chat): the upstream's, or an answer replayed from the response cache when it is on and holds
    one; with the tracker that books them and the response headers (the cache's status added)."""
    cache = services.cache
    lookup = None
    if cache is not None:  # all the response cache costs while off (the default)
        lookup = await cache.lookup(
            payload, scope=info.key_id, upstream=route.provider.name, model=route.upstream_model, cache_control=request.headers.get("cache-control")
        )
        headers = {**headers, CACHE_HEADER: lookup.status}
    if lookup is not None and lookup.replay is not None:
        return lookup.replay, _ReplayTracker(services, route, payload, info), headers
    if check_context and route.context_window:
        await services.check_context(payload, route, info.request_id)
    # Providers' complete() are async generators (the protocol says AsyncIterator).
    events = cast("AsyncGenerator[Event, None]", route.provider.complete(UpstreamCall(upstream_body(payload, route, stream), stream, info.request_id)))
    if lookup is not None and lookup.write and cache is not None:
        events = cache.recording(events, lookup.key)
    return events, tracker, headers


def upstream_body(payload: dict[str, Any], route: Route, stream: bool) -> dict[str, Any]:
    body = dict(payload)
    body["model"] = route.upstream_model
    if stream:
        # We meter every request, so usage is always requested; the encoder
        # strips it again when the client did not ask for it.
        options = payload.get("stream_options")
        body["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    return body


def build_chat_handler(services: Services) -> Any:
    settings = services.settings
    server = settings.server
    schema_checker = SchemaChecker(SchemaLimits.from_server(server))

    @post(
        ["/v1/chat/completions", "/chat/completions"],
        status_code=200,
        summary="Create a chat completion",
        description=(
            "OpenAI Chat Completions. A plain model id is proxied to its upstream; `agent/<model>` (or `agent:<model>`) runs the agent loop"
            " on <model>. See docs/agent.md."
        ),
        tags=["chat"],
        operation_class=ChatCompletionOperation,
    )
    async def chat_completions(request: Request[Any, Any, Any]) -> Response[bytes]:
        info = request_info(request.scope)
        # Booked and released by the outer ASGI layer (app/middleware.py), however it ends.
        info.metered = True
        try:
            await services.gate.authenticate(request, info)
            # Litestar enforces server.max_body_bytes while reading (413, app/server.py).
            raw = await request.body()
            payload = parse_json_body(raw)
            check_request(payload, max_messages=server.max_messages, max_tools=server.max_tools, schema_limits=schema_checker.limits)
            model = payload.get("model") or settings.default_model or ""
            agent_mode, base_model = split_agent_model(model)
            # The books (access, limits, ledger, metrics) see one spelling; the answer echoes the client's.
            info.model = AGENT_PREFIX + base_model if agent_mode else model
            route = services.router.resolve(base_model)
            if route is None or (agent_mode and services.agent is None):
                raise services.model_not_found(info, model)
            info.mode = "agent" if agent_mode else "proxy"
            info.upstream = route.provider.name
            ticket = info.ticket = await services.gate.admit(request, info, payload, route)
            # The slow part of validation, only for callers the gate let in.
            await schema_checker.check(payload)
            stream = payload.get("stream") is True
            options = payload.get("stream_options")
            include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
            tracker = UsageTracker(services, route, payload, info)
            headers = ticket.headers
            events: AsyncGenerator[Event, None]
            agent = services.agent
            if agent_mode and agent is not None:
                # The gate checks the cost cap and budget before each model call; the
                # tracker gets the run's usage however the run ends (failure, disconnect).
                events = agent.run(
                    payload=payload,
                    route=route,
                    model=model,
                    request=request,
                    info=info,
                    check_step=functools.partial(services.gate.check_step, info),
                    report_usage=tracker.take_run_usage,
                )
            else:
                events, tracker, headers = await proxy_events(services, request, info, route, payload, stream, headers, tracker)
            # Until the response starts, nobody else reads `receive`; watch it so a
            # client that gives up stops the upstream call (and the agent run).
            if stream:
                return await answer_unless_gone(request, _stream_response(events, tracker, model, include_usage, info, headers))
            return await answer_unless_gone(request, _json_response(events, tracker, model, info, headers))
        except OpenAIError as err:
            return error_response(err, info)

    return chat_completions


async def _json_response(
    events: AsyncGenerator[Event, None], tracker: UsageTracker, model: str, info: RequestInfo, headers: Mapping[str, str]
) -> Response[bytes]:
    collector = BodyCollector()
    try:
        try:
            async for event in events:
                tracker.observe(event)
                collector.add(event)
                if collector.error is not None:
                    break
        finally:
            await events.aclose()
        if collector.error is not None:
            return error_response(collector.error, info)
        estimated = await tracker.estimate()
        if estimated is not None:
            collector.add(estimated)
        body = collector.body(model=model)
    finally:
        # Also on cancellation (client gone): the books get the usage so far.
        info.usage = await tracker.result(estimate=info.error_code == "client_disconnected")
    return JSONBytes(orjson.dumps(body), headers=headers)


async def _stream_response(
    events: AsyncGenerator[Event, None], tracker: UsageTracker, model: str, include_usage: bool, info: RequestInfo, headers: Mapping[str, str]
) -> Response[bytes]:
    encoder = SSEEncoder(model=model, include_usage=include_usage, completion_id=new_completion_id(), created=int(time.time()))
    # Pull until the first event that produces output, so an error the
    # upstream reports up front still gets its real HTTP status.
    head: list[bytes] = []
    try:
        async for event in events:
            if type(event) is Failure:
                await events.aclose()
                info.usage = await tracker.result(estimate=False)
                return error_response(event.error, info)
            tracker.observe(event)
            chunk = encoder.encode(event)
            if chunk:
                head.append(chunk)
                break
        else:
            head.append(await _stream_tail(encoder, tracker))
    except BaseException:
        # Refused (an agent run may have made model calls already), cancelled (client
        # gone) or broken before the first byte: stop the upstream call, keep its usage.
        await events.aclose()
        info.usage = await tracker.result(estimate=info.error_code == "client_disconnected")
        raise

    async def body() -> AsyncGenerator[bytes, None]:
        completed = bool(head) and head[-1].endswith(b"[DONE]\n\n")
        try:
            for chunk in head:
                yield chunk
            if completed:
                return
            async for event in events:
                tracker.observe(event)
                chunk = encoder.encode(event)
                if chunk:
                    yield chunk
                if encoder.failed:
                    info.error_code = "stream_error"
                    return
            yield await _stream_tail(encoder, tracker)
        finally:
            await events.aclose()  # at once: a client that left stops the upstream call

    chunks = body()

    async def ending() -> None:
        # Run once by the outer ASGI layer before release, never cancelled (app/middleware.py): closes
        # a body left suspended (the client left during a send) and estimates a cut stream.
        await chunks.aclose()
        await events.aclose()
        info.usage = await tracker.result(estimate=True)

    info.ending = ending
    return SSEStream(chunks, headers={**SSE_HEADERS, **headers})


async def _stream_tail(encoder: SSEEncoder, tracker: UsageTracker) -> bytes:
    estimated = await tracker.estimate()
    if estimated is not None:
        encoder.encode(estimated)
    return encoder.close()
