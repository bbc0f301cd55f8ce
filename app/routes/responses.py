"""``/v1/responses``: the OpenAI Responses API, proxy and agent mode.

``POST`` takes the chat route's steps in the chat route's order (authenticate
before the body is read, strict JSON, validation with ``param``, route by
model, ``gate.admit`` with the translated chat body so tokens-per-minute and
cost are estimated as for chat, the schema check, the context check), sends
the translated body through the model's provider (:class:`UpstreamCall`) and
translates the events back (:mod:`app.responses`). The request is booked in
the ledger with mode ``responses``; the outer ASGI layer releases it.

``GET``/``DELETE /v1/responses/{id}`` and ``GET .../input_items`` read the
store (:class:`app.responses.ResponseStorage`) behind the same guard as
``/v1/memories`` (:func:`app.guards.metered_key_guard`): only the key that
made a response can see it; any other gets the 404 OpenAI gives for an
unknown id, never the content.

Agent models (``agent/<m>``, ``agent:<m>``) run chat agent mode's loop on the
translated body; :class:`app.responses.agent_items.AgentStreamWriter` turns
its steps into hosted-tool items. An upstream that speaks the Responses API
itself gets the request passed through (:mod:`app.responses.passthrough`).
Streamed or not, one writer builds the response from the events, so both
shapes of one run carry the same items.

``background: true`` hands the same turn to :class:`app.responses.BackgroundRuns`
(queued at once, run in a task that owns the request's end: slot, ledger row);
``POST .../cancel`` stops such a run.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import orjson
from litestar import Request, Router, delete, get, post
from litestar.params import FromPath, QueryParameter
from litestar.response import Response

from toolrelay.app.disconnect import answer_unless_gone
from toolrelay.app.errors import OpenAIError, error_response
from toolrelay.app.events import Event, Failure
from toolrelay.app.guards import metered_key_guard, rate_limit_headers
from toolrelay.app.json_response import JSONBytes
from toolrelay.app.jsonbody import parse_json_body
from toolrelay.app.middleware import RequestInfo, request_info
from toolrelay.app.model_ids import canonical_model_id, split_agent_model
from toolrelay.app.output_ceiling import output_limit
from toolrelay.app.protocol import AgentOptions
from toolrelay.app.providers.base import UpstreamCall
from toolrelay.app.responses import (
    CUT_SHORT,
    BackgroundRuns,
    ResponsesRequest,
    ResponseStorage,
    ResponseStreamWriter,
    StoredResponse,
    background_error,
    chat_payload,
    failure_error,
    new_response_id,
    parse_request,
    response_object,
    response_scope,
)
from toolrelay.app.responses.agent_items import AgentStreamWriter, agent_chat_payload, asks_for_agent, parse_agent_request
from toolrelay.app.responses.mcp_servers import McpRun, RequestMcp
from toolrelay.app.responses.passthrough import NativeResponses
from toolrelay.app.responses.references import resolve_item_references
from toolrelay.app.routes.chat import SSE_HEADERS, UsageTracker, proxy_events, upstream_body
from toolrelay.app.routes.openapi_docs import ResponseCreateOperation, ResponseDeleteOperation, ResponseInputItemsOperation, ResponseRetrieveOperation
from toolrelay.app.schema_check import SchemaChecker, SchemaLimits
from toolrelay.app.sse_response import SSEStream
from toolrelay.app.strict_request import StrictJSONRequest
from toolrelay.app.validation import check_request

if TYPE_CHECKING:
    from collections.abc import Mapping

    from toolrelay.app.services import Services

__all__ = ["build_responses_handlers"]

_MAX_PAGE = 100


def _not_found(response_id: str) -> OpenAIError:
    # OpenAI's own wording for an id it does not have (another key's included).
    return OpenAIError(404, f"Response with id '{response_id}' not found.", type="invalid_request_error", param="response_id", code=None)


def _previous_not_found(response_id: str) -> OpenAIError:
    return OpenAIError(404, f"Previous response with id '{response_id}' not found.", type="invalid_request_error", param="previous_response_id", code=None)


def _json(content: Any, headers: Mapping[str, str] | None = None) -> Response[bytes]:
    return JSONBytes(orjson.dumps(content), headers=headers)


def build_responses_handlers(services: Services, store: ResponseStorage) -> list[Any]:
    """The create handler (the chat-like path) and the stored-response routes, under ``/v1`` and at the root."""
    config = services.settings.responses
    runs = BackgroundRuns(store, services.gate, max_per_key=config.max_background_per_key, max_total=config.max_background_total)
    services.on_start(runs.start_up)
    # Registered after the store's closer, so it runs first (closers run in reverse): runs settle into an open store.
    services.on_close(runs.close)
    routers = [_stored_routes(services, store, runs, prefix) for prefix in ("/v1/responses", "/responses")]
    return [_create_handler(services, store, runs), *routers]


def _create_handler(services: Services, store: ResponseStorage, runs: BackgroundRuns) -> Any:
    settings = services.settings
    server = settings.server
    schema_checker = SchemaChecker(SchemaLimits.from_server(server))
    native = NativeResponses(services, store, runs, SSE_HEADERS)
    request_mcp = RequestMcp(settings)

    @post(
        ["/v1/responses", "/responses"],
        status_code=200,
        summary="Create a response",
        tags=["responses"],
        description="OpenAI Responses API (proxy mode).",
        operation_class=ResponseCreateOperation,
    )
    async def create_response(request: Request[Any, Any, Any]) -> Response[bytes]:
        info = request_info(request.scope)
        info.metered = True
        try:
            await services.gate.authenticate(request, info)
            # Before anything reads the input: references become the stored items they name (the caller's own only).
            body = await resolve_item_references(store, response_scope(info.key_id), parse_json_body(await request.body()), max_items=server.max_messages)
            native_route = await native.route_for(body, settings.default_model)
            if native_route is not None:
                # The model's upstream speaks the Responses API itself: passed through (app/responses/passthrough.py).
                return await answer_unless_gone(request, native.create(request, info, cast("dict[str, Any]", body), native_route))
            # Agent models run chat agent mode's loop (app/responses/agent_items.py); the ledger says "agent", as for chat.
            agent_request = parse_agent_request(body, settings.default_model) if asks_for_agent(body, settings.default_model) else None
            params = agent_request.params if agent_request is not None else parse_request(body, settings.default_model)
            info.model = canonical_model_id(params.model)
            info.mode = "agent" if agent_request is not None else "responses"
            agent = services.agent
            if params.background:
                runs.admit(response_scope(info.key_id), store=params.store)
            route = services.router.resolve(split_agent_model(params.model)[1])
            if route is None or (agent_request is not None and agent is None):
                raise services.model_not_found(info, params.model)
            info.upstream = route.provider.name
            scope = response_scope(info.key_id)
            history: list[dict[str, Any]] = []
            if params.previous_response_id is not None:
                previous = await store.get(scope, params.previous_response_id)
                if previous is None:
                    raise _previous_not_found(params.previous_response_id)
                history = [*previous.context, *previous.response["output"]]
            mcp_run: McpRun | None = None
            if agent_request is not None and agent is not None:
                # MCP servers named in `tools` (app/responses/mcp_servers.py): the free checks before admission.
                mcp_run = request_mcp.prepare(agent_request.mcp, agent.registry, agent.builtins_for(AgentOptions(), info.key_id))
                payload = agent_chat_payload(agent_request, history, agent.enabled_builtins, mcp_names=mcp_run.names, mcp_selected=mcp_run.selected)
            else:
                payload = chat_payload(params, history)
            # The chat rules as a backstop (message and tool caps, schema sizes) on what goes upstream.
            check_request(payload, max_messages=server.max_messages, max_tools=server.max_tools, schema_limits=schema_checker.limits)
            ticket = info.ticket = await services.gate.admit(request, info, payload, route)
            headers: Mapping[str, str] = ticket.headers
            # The response object states the limit the run had: the output ceiling, when the gate clamped to it.
            limit = output_limit(payload)
            if limit is not None and params.max_output_tokens is not None and limit < params.max_output_tokens:
                params.max_output_tokens = limit
            await schema_checker.check(payload)
            if route.context_window and agent_request is None:
                await services.check_context(payload, route, info.request_id)
            tracker = UsageTracker(services, route, payload, info)
            if agent_request is not None and agent is not None and mcp_run is not None:
                await request_mcp.connect(mcp_run, agent.registry)
                try:
                    # As chat agent mode runs it: the gate checks cost cap and budget before each model call.
                    events = agent.run(
                        payload=payload,
                        route=route,
                        model=params.model,
                        request=request,
                        info=info,
                        check_step=functools.partial(services.gate.check_step, info),
                        report_usage=tracker.take_run_usage,
                        step_outputs=True,
                        extra_tools=mcp_run.extra_tools,
                        approval=mcp_run.approval,
                    )
                except BaseException:
                    await mcp_run.aclose()
                    raise
                if mcp_run.servers:
                    events = mcp_run.closing(events)
                writer = functools.partial(AgentStreamWriter, mcp_tools=mcp_run.labels, listings=mcp_run.listings)
                turn = _Turn(params, history, scope, store, tracker, info, writer)
            elif params.background:
                call = UpstreamCall(upstream_body(payload, route, params.stream), params.stream, info.request_id)
                events = cast("AsyncGenerator[Event, None]", route.provider.complete(call))
                turn = _Turn(params, history, scope, store, tracker, info)
            else:
                # Through the response cache as chat is (its key is the translated chat request).
                events, tracker, headers = await proxy_events(services, request, info, route, payload, params.stream, headers, tracker, check_context=False)
                turn = _Turn(params, history, scope, store, tracker, info)
            if params.background:
                started = await runs.start(turn, events, stream=params.stream)
                if isinstance(started, dict):
                    return _json(started, headers)
                return SSEStream(started, headers={**SSE_HEADERS, **headers})
            if params.stream:
                return await answer_unless_gone(request, turn.stream(events, headers))
            return await answer_unless_gone(request, turn.json(events, headers))
        except OpenAIError as err:
            return error_response(err, info)

    return create_response


class _Turn:
    """One response being made: the events in, the answer out, the record stored."""

    __slots__ = ("params", "history", "scope", "store", "tracker", "info", "response_id", "created_at", "writer_class")

    def __init__(
        self,
        params: ResponsesRequest,
        history: list[dict[str, Any]],
        scope: str,
        store: ResponseStorage,
        tracker: UsageTracker,
        info: RequestInfo,
        writer_class: Callable[[ResponsesRequest, str, int], ResponseStreamWriter] = ResponseStreamWriter,
    ) -> None:
        #: What turns the events into items (AgentStreamWriter for agent runs).
        self.writer_class = writer_class
        self.params = params
        self.history = history
        self.scope = scope
        self.store = store
        self.tracker = tracker
        self.info = info
        self.response_id = new_response_id()
        self.created_at = int(time.time())

    async def _keep(self, response: dict[str, Any]) -> None:
        await self.keep(response)

    async def keep(self, response: dict[str, Any], *, running: bool = False) -> None:
        if self.params.store:
            await self.store.save(self.scope, StoredResponse(response, self.params.items, [*self.history, *self.params.items]), running=running)

    def snapshot(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(self.params, response_id=self.response_id, created_at=self.created_at, status=status, output=[], error=error)

    async def json(self, events: AsyncGenerator[Event, None], headers: Mapping[str, str]) -> Response[bytes]:
        try:
            response = await self.answer(events)
        except OpenAIError as err:
            return error_response(err, self.info)
        return _json(response, headers)

    async def answer(self, events: AsyncGenerator[Event, None]) -> dict[str, Any]:
        """The whole response, stored; raises the upstream's error.

        Built by the same writer as the stream (silent: no event encoded), so a
        streamed and a plain response of one run have the same items.
        """
        writer = self.writer_class(self.params, self.response_id, self.created_at)
        writer.silent = True
        tracker = self.tracker
        try:
            try:
                async for event in events:
                    if type(event) is Failure:
                        raise event.error
                    tracker.observe(event)
                    writer.feed(event)
            finally:
                await events.aclose()
            return (await self._finish(writer))[1]
        finally:
            # A run cut short (the client left, a background run cancelled) pays for what the upstream did.
            self.info.usage = await tracker.result(estimate=self.info.error_code in CUT_SHORT)

    async def sse(self, events: AsyncGenerator[Event, None]) -> AsyncGenerator[bytes, None]:
        """The whole event stream with no HTTP status to keep: a failure is ``response.failed``, stored too."""
        writer = self.writer_class(self.params, self.response_id, self.created_at)
        tracker = self.tracker
        try:
            yield writer.start()
            async for event in events:
                tracker.observe(event)
                chunk = writer.feed(event)
                if type(event) is Failure:
                    self.info.status, self.info.error_code = event.error.status, "stream_error"
                    # Stored before the last event goes out, as in _tail.
                    await self.keep(writer.response("failed", failure_error(event.error)))
                    yield chunk
                    return
                if chunk:
                    yield chunk
            yield await self._tail(writer)
        finally:
            await events.aclose()
            self.info.usage = await tracker.result(estimate=True)

    async def stream(self, events: AsyncGenerator[Event, None], headers: Mapping[str, str]) -> Response[bytes]:
        writer = self.writer_class(self.params, self.response_id, self.created_at)
        tracker = self.tracker
        info = self.info
        # Pull until the first event that says something, so an upstream error up front keeps its HTTP status.
        head = [writer.start()]
        try:
            async for event in events:
                if type(event) is Failure:
                    await events.aclose()
                    info.usage = await tracker.result(estimate=False)
                    return error_response(event.error, info)
                tracker.observe(event)
                chunk = writer.feed(event)
                if chunk:
                    head.append(chunk)
                    break
            else:
                head.append(await self._tail(writer))
        except BaseException:
            await events.aclose()
            info.usage = await tracker.result(estimate=info.error_code == "client_disconnected")
            raise

        async def body() -> AsyncGenerator[bytes, None]:
            try:
                for chunk in head:
                    yield chunk
                if writer.status != "in_progress":
                    return
                async for event in events:
                    tracker.observe(event)
                    chunk = writer.feed(event)
                    if chunk:
                        yield chunk
                    if writer.status == "failed":
                        info.error_code = "stream_error"
                        return
                yield await self._tail(writer)
            finally:
                await events.aclose()  # at once: a client that left stops the upstream call

        chunks = body()

        async def ending() -> None:
            await chunks.aclose()
            await events.aclose()
            info.usage = await tracker.result(estimate=True)

        info.ending = ending
        return SSEStream(chunks, headers={**SSE_HEADERS, **headers})

    async def _tail(self, writer: ResponseStreamWriter) -> bytes:
        return (await self._finish(writer))[0]

    async def _finish(self, writer: ResponseStreamWriter) -> tuple[bytes, dict[str, Any]]:
        """Close the response: its last event (none when silent) and the final response object, stored."""
        await self.tracker.estimate()
        writer.usage = self.tracker.usage
        last = writer.finish()
        final = writer.response(writer.status)
        # Stored before the last event goes out: a client that retrieves it at once finds it.
        await self._keep(final)
        return last, final


def _stored_routes(services: Services, store: ResponseStorage, runs: BackgroundRuns, prefix: str) -> Router:
    def scope_of(request: Request[Any, Any, Any]) -> str:
        return response_scope(request_info(cast("dict[str, Any]", request.scope)).key_id)

    @get("/{response_id:str}", summary="Retrieve a stored response", operation_class=ResponseRetrieveOperation)
    async def retrieve_response(
        request: Request[Any, Any, Any],
        response_id: FromPath[str],
        stream: Annotated[bool, QueryParameter(description="Follow a running streamed background response's events.")] = False,
        starting_after: Annotated[int, QueryParameter(ge=-1, description="The sequence number after which to start streaming.")] = -1,
    ) -> Response[bytes]:
        scope = scope_of(request)
        stored = await store.get(scope, response_id)
        if stored is None:
            raise _not_found(response_id)
        if stream:
            events = runs.follow(scope, response_id, starting_after)
            if events is None:
                raise background_error(
                    "Only a background response created with 'stream: true' can be streamed, and only while it runs on this server.",
                    param="stream",
                    code="unsupported_value",
                )
            return SSEStream(events, headers={**SSE_HEADERS, **rate_limit_headers(request)})
        return _json(stored.response, rate_limit_headers(request))

    @post("/{response_id:str}/cancel", summary="Cancel a background response", status_code=200)
    async def cancel_response(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[bytes]:
        scope = scope_of(request)
        await runs.cancel(scope, response_id)
        stored = await store.get(scope, response_id)
        if stored is None:
            raise _not_found(response_id)
        if not stored.response.get("background"):
            raise background_error("Cannot cancel a synchronous response.", param="response_id")
        # A finished one comes back unchanged: cancelling is idempotent, as on OpenAI.
        return _json(stored.response, rate_limit_headers(request))

    @delete("/{response_id:str}", summary="Delete a stored response and its input items", status_code=200, operation_class=ResponseDeleteOperation)
    async def delete_response(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[bytes]:
        # A running one is stopped first, or its final save would bring it back.
        await runs.cancel(scope_of(request), response_id)
        if not await store.delete(scope_of(request), response_id):
            raise _not_found(response_id)
        return _json({"id": response_id, "object": "response", "deleted": True}, rate_limit_headers(request))

    @get("/{response_id:str}/input_items", summary="List a stored response's input items", operation_class=ResponseInputItemsOperation)
    async def list_input_items(
        request: Request[Any, Any, Any],
        response_id: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=_MAX_PAGE, description="How many items to return.")] = 20,
        order: Annotated[Literal["asc", "desc"], QueryParameter(description="Input order (asc) or reversed (desc).")] = "desc",
        after: Annotated[str | None, QueryParameter(description="An item id: the page after it (cursor).")] = None,
    ) -> Response[bytes]:
        stored = await store.get(scope_of(request), response_id)
        if stored is None:
            raise _not_found(response_id)
        items = stored.input_items if order == "asc" else stored.input_items[::-1]
        if after:
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        # An empty page (an `after` at the end) has no ids, but the API reference and every typed SDK declare
        # both strings, never null: Rust's serde and openai-java refuse a null there, so "" says "none".
        listing = {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else "",
            "last_id": page[-1]["id"] if page else "",
            "has_more": len(items) > limit,
        }
        return _json(listing, rate_limit_headers(request))

    return Router(
        prefix,
        route_handlers=[retrieve_response, cancel_response, delete_response, list_input_items],
        # No parallel slot: a key's background run holds one for its whole length, and a key
        # limited to one must still be able to poll and cancel it (rpm still counts).
        guards=[metered_key_guard(services.gate, mode="responses", parallel=False)],
        request_class=StrictJSONRequest,
        tags=["responses"],
    )
