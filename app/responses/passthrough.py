"""``/v1/responses`` passed through to an upstream that speaks the Responses API itself.

An upstream set to ``responses_api = "native"`` (or ``"auto"``, probed once:
``POST /responses`` with an empty body answers 400 where the endpoint exists
and 404/405/501 where it does not) gets the client's request as it is, with
its own model name, streamed back as it arrives. toolrelay keeps the state,
as on the translated path: the upstream always gets ``store: false`` and the
whole conversation (a ``previous_response_id`` is expanded from the key's own
stored responses), and the response is stored here when the client's
``store`` is true, under an id minted here. So retrieve, delete,
``input_items`` and key scoping behave the same whichever path made a
response, and no conversation is left on the upstream.

The gate is chat's: the request is priced through a chat-shaped view of its
texts; errors before the first event keep the upstream's status and body
(:func:`app.providers.forward.map_forward_error`, as chat maps them); usage
comes from ``response.completed`` or the body, else it is estimated.

Upstream events are not trusted: each is parsed, its ``type`` must be a short
plain name (it becomes the ``event:`` line), one event or plain answer may
take at most :data:`MAX_EVENT_BYTES`, a stream :data:`MAX_STREAM_BYTES`.
Anything unreadable, an ``error`` event, a cut connection, a stall past the
upstream's ``timeout`` or a stream that ends without its last event ends the
client's stream with one ``response.failed``. Every event is renumbered, so
``sequence_number`` stays strictly increasing whatever the upstream sent.

``background: true`` is toolrelay's, not the upstream's (it is not sent on):
the passed-through turn is a :class:`app.responses.background.BackgroundTurn`,
handed to the same :class:`BackgroundRuns` as a translated one, so polling,
cancel, resumed streams, caps and the ledger row behave the same.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any, cast

import anyio
import orjson
from litestar.response import Response

from toolrelay.app.errors import OpenAIError, error_response, invalid_request
from toolrelay.app.ids import new_item_id, new_response_id
from toolrelay.app.json_response import JSONBytes
from toolrelay.app.jsonbody import JSONValue
from toolrelay.app.model_ids import split_agent_model
from toolrelay.app.output_ceiling import output_limit
from toolrelay.app.providers.base import ForwardCall
from toolrelay.app.providers.openai_parser import malformed_response, map_upstream_error
from toolrelay.app.responses.background import CUT_SHORT, BackgroundRuns
from toolrelay.app.responses.store import ResponseStorage, StoredResponse, response_scope
from toolrelay.app.responses.translate import ResponsesRequest, input_items, response_object
from toolrelay.app.sse_response import SSEStream
from toolrelay.app.usage import RequestUsage, token_count

if TYPE_CHECKING:
    from litestar import Request

    from toolrelay.app.middleware import RequestInfo
    from toolrelay.app.providers.router import Route
    from toolrelay.app.services import Services

__all__ = ["MAX_EVENT_BYTES", "MAX_STREAM_BYTES", "NativeEventRelay", "NativeResponses", "upstream_input"]

#: Bytes one upstream event (or a whole plain answer) may take.
MAX_EVENT_BYTES = 16 * 1024 * 1024
#: Bytes one relayed stream may take in all.
MAX_STREAM_BYTES = 64 * 1024 * 1024
ENDPOINT = "/v1/responses"
# Event names become `event:` lines: a newline in one would forge events.
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_.]{0,127}")
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "response.cancelled"})
# ResponseError.code is an enum in the API reference; these are the ones an upstream's failure can keep.
_KEPT_FAILURE_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})
# Text kept for a usage estimate when the upstream reports none.
_MAX_ESTIMATE_CHARS = 4 * 1024 * 1024


def _bad(param: str, expected: str) -> OpenAIError:
    return invalid_request(f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type")


def _item_prefix(kind: Any) -> str:
    return {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}.get(kind, "item")


def _with_id(item: dict[str, Any]) -> dict[str, Any]:
    """A client's input item as stored (what ``input_items`` lists): its own id, or one minted here."""
    if isinstance(item.get("id"), str) and item["id"]:
        return item
    kind = item.get("type", "message" if "role" in item else None)
    return {"id": new_item_id(_item_prefix(kind)), **item}


def upstream_input(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items as a stateless upstream takes them (``store: false``): no ids of ours on messages,
    calls and outputs (they name nothing it stored); reasoning only with its ``encrypted_content``
    (without it an upstream that stores nothing cannot read it back, and refuses it)."""
    out: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "reasoning":
            if item.get("encrypted_content"):
                out.append(item)
        elif kind in ("message", "function_call", "function_call_output"):
            out.append({k: v for k, v in item.items() if k not in ("id", "status")})
        else:
            out.append(item)
    return out


def _texts(value: Any, out: list[str], depth: int = 0) -> None:
    """The strings a request asks the model to read (for the gate's estimate), in order."""
    if isinstance(value, str):
        out.append(value)
    elif depth < 8 and isinstance(value, list):
        for entry in cast("list[Any]", value):
            _texts(entry, out, depth + 1)
    elif depth < 8 and isinstance(value, dict):
        for key, entry in cast("dict[str, Any]", value).items():
            if key in ("text", "content", "output", "arguments", "refusal", "summary"):
                _texts(entry, out, depth + 1)


def _upstream_failure(message: str, code: str) -> OpenAIError:
    return OpenAIError(502, message, type="upstream_error", code=code)


def _usage_of(report: Any) -> RequestUsage | None:
    """Responses usage (``input_tokens``/``output_tokens``) for the books; None when there is none."""
    if not isinstance(report, dict):
        return None
    usage = cast("dict[str, Any]", report)
    prompt = token_count(usage.get("input_tokens"))
    details = usage.get("input_tokens_details")
    cached = min(prompt, token_count(details.get("cached_tokens"))) if isinstance(details, dict) else 0
    return RequestUsage(prompt, token_count(usage.get("output_tokens")), cached)


class _Request:
    """The checked fields of a passed-through request (the upstream validates the rest)."""

    __slots__ = ("body", "model", "items", "stream", "store", "background", "previous_response_id", "max_output_tokens", "instructions")

    def __init__(self, body: dict[str, Any], *, max_items: int, max_tools: int) -> None:
        self.body = body
        self.model: str = body["model"]
        raw = body.get("input")
        if raw is None:
            raise invalid_request("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
        if isinstance(raw, str):
            self.items = input_items(raw)
        elif isinstance(raw, list):
            if len(cast("list[Any]", raw)) > max_items:
                raise invalid_request(f"Too many input items: at most {max_items}.", param="input", code="array_above_max_length")
            self.items = []
            for position, item in enumerate(cast("list[Any]", raw)):
                if not isinstance(item, dict):
                    raise _bad(f"input[{position}]", "an object")
                self.items.append(_with_id(cast("dict[str, Any]", item)))
        else:
            raise _bad("input", "a string or an array of input items")
        tools = body.get("tools")
        if tools is not None:
            if not isinstance(tools, list):
                raise _bad("tools", "an array")
            if len(cast("list[Any]", tools)) > max_tools:
                raise invalid_request(f"Too many tools: at most {max_tools}.", param="tools", code="array_above_max_length")
            for position, tool in enumerate(cast("list[Any]", tools)):
                if not isinstance(tool, dict) or not isinstance(cast("dict[str, Any]", tool).get("type"), str):
                    raise _bad(f"tools[{position}]", "an object with a 'type'")
        self.stream = self._flag("stream", False)
        self.store = self._flag("store", True)
        self.background = self._flag("background", False)
        self.previous_response_id = self._optional("previous_response_id", str, "a string")
        self.instructions = self._optional("instructions", str, "a string")
        self.max_output_tokens = self._optional("max_output_tokens", int, "an integer")
        if self.max_output_tokens is not None and self.max_output_tokens < 1:
            raise invalid_request("Invalid 'max_output_tokens': must be at least 1.", param="max_output_tokens", code="integer_below_min_value")

    def echo(self) -> ResponsesRequest:
        """What a response shows of this request before the upstream has answered (queued, or failed up front)."""
        metadata = self.body.get("metadata")
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in cast("dict[str, Any]", metadata).values()):
            metadata = {}
        return ResponsesRequest(
            model=self.model,
            items=[],
            store=self.store,
            background=self.background,
            previous_response_id=self.previous_response_id,
            instructions=self.instructions,
            max_output_tokens=self.max_output_tokens,
            metadata=cast("dict[str, str]", metadata),
        )

    def _flag(self, key: str, default: bool) -> bool:
        value = self.body.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise _bad(key, "a boolean")
        return value

    def _optional(self, key: str, kind: type, expected: str) -> Any:
        value = self.body.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise _bad(key, expected)
        return value


class NativeEventRelay:
    """An upstream's Responses stream, rewritten for the client one event at a time (pure).

    :meth:`event` takes one ``data:`` payload and returns the SSE bytes to
    send (``b""`` for nothing); after a terminal event, or a failure, it
    sends nothing more. :attr:`failure` is the error that failed the stream
    (set together with the ``response.failed`` it returns), :attr:`response`
    the final response object, :attr:`usage` its usage.
    """

    __slots__ = (
        "response_id",
        "request",
        "echo",
        "upstream",
        "created_at",
        "snapshot",
        "response",
        "failure",
        "done",
        "sent",
        "pieces",
        "chars",
        "_seq",
        "_items",
        "_max_bytes",
    )

    def __init__(self, response_id: str, request: ResponsesRequest, upstream: str, max_bytes: int = MAX_STREAM_BYTES) -> None:
        self.response_id = response_id
        # The client's settings, for a response the upstream has not described (yet).
        self.request = request
        # The fields a passed-through response shows as the client asked (model id, store, previous_response_id, background).
        self.echo = {"model": request.model, "store": request.store, "previous_response_id": request.previous_response_id, "background": request.background}
        self.upstream = upstream
        self.created_at = int(time.time())
        self.upstream = upstream
        self.snapshot: dict[str, Any] | None = None
        self.response: dict[str, Any] | None = None
        self.failure: OpenAIError | None = None
        self.done = False
        self.sent = 0
        self.pieces: list[str] = []
        self.chars = 0
        self._seq = 0
        self._items: dict[int, dict[str, Any]] = {}
        self._max_bytes = max_bytes

    def placeholder(self, status: str, error: dict[str, Any] | None = None, output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The response before (or without) the upstream's own: the client's settings and ``output`` (none by default)."""
        return response_object(self.request, response_id=self.response_id, created_at=self.created_at, status=status, output=output or [], error=error)

    def own(self, response: dict[str, Any]) -> dict[str, Any]:
        """``response`` under toolrelay's id, echoing the client's model, ``store`` and ``previous_response_id``."""
        response.update(self.echo)
        response["id"] = self.response_id
        response["object"] = "response"
        # What is stored and continued from must have the shape we read back (created_at, a list of item objects).
        if type(response.get("created_at")) is not int:
            response["created_at"] = int(time.time())
        output = response.get("output")
        response["output"] = [item for item in cast("list[Any]", output) if isinstance(item, dict)] if isinstance(output, list) else []
        if not isinstance(response.get("status"), str):
            response["status"] = "completed"
        return response

    def _frame(self, kind: str, event: dict[str, Any]) -> bytes:
        event["sequence_number"] = self._seq
        self._seq += 1
        out = b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
        self.sent += len(out)
        return out

    def event(self, data: bytes) -> bytes:
        if self.done or data == b"[DONE]":
            return b""
        event: JSONValue
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self.fail(malformed_response(self.upstream))
        if not isinstance(event, dict) or not isinstance(event.get("type"), str) or not _EVENT_TYPE.fullmatch(event["type"]):
            return self.fail(malformed_response(self.upstream))
        kind: str = event["type"]
        if kind == "error":
            return self.fail(self._upstream_error(event))
        response: JSONValue = event.get("response")
        if isinstance(response, dict):
            self.snapshot = self.own(response)
            if kind in _TERMINAL:
                self.done = True
                self.response = response
        elif response is not None or kind in _TERMINAL:
            return self.fail(malformed_response(self.upstream))
        if kind == "response.output_text.delta" and isinstance(event.get("delta"), str) and self.chars < _MAX_ESTIMATE_CHARS:
            self.pieces.append(event["delta"])
            self.chars += len(event["delta"])
        elif kind == "response.output_item.done" and isinstance(event.get("item"), dict) and isinstance(event.get("output_index"), int):
            self._items[event["output_index"]] = event["item"]
        out = self._frame(kind, event)
        if self.sent > self._max_bytes and not self.done:
            return out + self.fail(
                _upstream_failure(f"The upstream provider '{self.upstream}' sent a stream larger than {self._max_bytes} bytes.", "bad_upstream_response")
            )
        return out

    def _upstream_error(self, event: dict[str, Any]) -> OpenAIError:
        """An upstream ``error`` event as the error chat would make of it (a rate limit stays one)."""
        code = event.get("code")
        status = 429 if code in ("rate_limit_exceeded", "rate_limit_error") else 500
        error = {"message": event.get("message"), "type": None, "param": event.get("param"), "code": code}
        return map_upstream_error(status, orjson.dumps({"error": error}), {}, self.upstream)

    def fail(self, error: OpenAIError) -> bytes:
        """End with ``response.failed``: the response so far, the items finished so far, and the error.

        A stream that failed before its first event is opened first (``response.created``,
        ``response.in_progress``), so it is a whole stream: a background run has no HTTP status
        left to say it with (in the foreground such a failure is the HTTP error instead)."""
        if self.done:
            return b""
        self.done = True
        self.failure = error
        code = error.code if error.code in _KEPT_FAILURE_CODES else ("rate_limit_exceeded" if error.status == 429 else "server_error")
        failure = {"code": code, "message": error.message}
        output = [self._items[k] for k in sorted(self._items)]
        opening = b""
        if self.snapshot is not None:
            response = {**self.snapshot, "status": "failed", "error": failure, "output": output, "incomplete_details": None}
        else:
            response = self.placeholder("failed", failure, output)
            if self._seq == 0:
                started = self.placeholder("in_progress")
                opening = self._frame("response.created", {"type": "response.created", "response": started})
                opening += self._frame("response.in_progress", {"type": "response.in_progress", "response": started})
        self.response = response
        return opening + self._frame("response.failed", {"type": "response.failed", "response": response})

    def end(self) -> bytes:
        """The ``response.failed`` for a stream that stopped before its last event, if it did."""
        if self.done:
            return b""
        return self.fail(
            _upstream_failure(f"The upstream provider '{self.upstream}' ended the stream before the response was complete.", "upstream_connection_error")
        )


class NativeResponses:
    """The passthrough path of ``POST /v1/responses``: which requests take it, and how they are answered.

    ``runs`` are the server's background runs (the translated path's too); ``sse_headers``
    are the headers every event stream of the server carries.
    Per upstream set to ``auto`` it remembers whether ``/responses`` exists
    (probed once; an upstream that could not be reached is probed again later).
    """

    def __init__(self, services: Services, store: ResponseStorage, runs: BackgroundRuns, sse_headers: Mapping[str, str]) -> None:
        self._services = services
        self._store = store
        self._runs = runs
        self._sse_headers = dict(sse_headers)
        self._speaks: dict[str, bool] = {}
        self._probe_lock = anyio.Lock()

    async def route_for(self, body: JSONValue, default_model: str | None) -> Route | None:
        """The route of a request that goes to a native Responses upstream; None for the translated path."""
        if not isinstance(body, dict):
            return None
        model = body.get("model") or default_model
        if not isinstance(model, str) or split_agent_model(model)[0]:
            return None
        route = self._services.router.resolve(model)
        if route is None:
            return None
        upstream = self._services.settings.upstreams.get(route.provider.name)
        if upstream is None or upstream.kind != "openai" or upstream.responses_api == "translate":
            return None
        if upstream.responses_api == "native" or await self._probe(route):
            body["model"] = model
            return route
        return None

    async def _probe(self, route: Route) -> bool:
        name = route.provider.name
        if name in self._speaks:
            return self._speaks[name]
        async with self._probe_lock:
            if name in self._speaks:
                return self._speaks[name]
            # An empty body costs no tokens: a server with the endpoint refuses it (400), one without does not know the path.
            probe = ForwardCall("/responses", {}, False, route.model_id, ENDPOINT, max_event_bytes=64 * 1024)
            replies = cast("AsyncGenerator[bytes, None]", route.provider.forward(probe))
            try:
                async for _ in replies:
                    break
                self._speaks[name] = True
            except OpenAIError as err:
                if err.code == "unsupported_endpoint":
                    self._speaks[name] = False
                elif err.status < 500:
                    self._speaks[name] = True
                else:
                    return False  # unreachable or failing now: translate this one, ask again next time
            finally:
                await replies.aclose()
            return self._speaks[name]

    async def create(self, request: Request[Any, Any, Any], info: RequestInfo, body: dict[str, Any], route: Route) -> Response[bytes]:
        """Admit ``body`` through the gate and answer it from the upstream; raises :class:`OpenAIError` before the answer starts."""
        services = self._services
        server = services.settings.server
        info.model = body["model"]
        info.mode = "responses"
        info.upstream = route.provider.name
        params = _Request(body, max_items=server.max_messages, max_tools=server.max_tools)
        scope = response_scope(info.key_id)
        if params.background:
            self._runs.admit(scope, store=params.store)
        history: list[dict[str, Any]] = []
        if params.previous_response_id is not None:
            previous = await self._store.get(scope, params.previous_response_id)
            if previous is None:
                raise OpenAIError(
                    404,
                    f"Previous response with id '{params.previous_response_id}' not found.",
                    type="invalid_request_error",
                    param="previous_response_id",
                    code=None,
                )
            history = [*previous.context, *previous.response["output"]]
        texts: list[str] = []
        if params.instructions:
            texts.append(params.instructions)
        _texts([*history, *params.items], texts)
        priced: dict[str, Any] = {"messages": [{"role": "user", "content": [{"type": "text", "text": text} for text in texts] or ""}], "stream": params.stream}
        if params.max_output_tokens is not None:
            priced["max_tokens"] = params.max_output_tokens
        ticket = info.ticket = await services.gate.admit(request, info, priced, route)
        if route.context_window:
            await services.check_context(priced, route, info.request_id)
        # The upstream keeps nothing and runs nothing in the background: toolrelay holds the state and runs it.
        upstream_body = {k: v for k, v in body.items() if k not in ("previous_response_id", "background")}
        upstream_body.update(model=route.upstream_model, store=False, input=upstream_input([*history, *params.items]))
        limit = output_limit(priced)  # the output ceiling, when the gate applied one ([limits] max_output_tokens)
        if limit is not None:
            upstream_body["max_output_tokens"] = limit
        call = ForwardCall("/responses", upstream_body, params.stream, params.model, ENDPOINT, info.request_id, MAX_EVENT_BYTES)
        relay = NativeEventRelay(new_response_id(), params.echo(), route.provider.name)
        turn = _NativeTurn(services, self._store, self._sse_headers, params, history, scope, route, info, relay, priced)
        replies = cast("AsyncGenerator[bytes, None]", route.provider.forward(call))
        if params.background:
            started = await self._runs.start(turn, replies, stream=params.stream)
            if isinstance(started, dict):
                return JSONBytes(orjson.dumps(started), headers=ticket.headers)
            return SSEStream(started, headers={**self._sse_headers, **ticket.headers})
        if params.stream:
            return await turn.stream(replies, ticket.headers)
        return await turn.json(replies, ticket.headers)


class _NativeTurn:
    """One passed-through response: the upstream's reply in, the client's answer out, the record stored.

    Answered in the foreground (:meth:`json`, :meth:`stream`) or run by :class:`BackgroundRuns`
    as a :class:`app.responses.background.BackgroundTurn` (:meth:`snapshot`, :meth:`keep`,
    :meth:`answer`, :meth:`sse`), fed the upstream's replies (:meth:`Provider.forward`).
    """

    __slots__ = ("services", "store", "sse_headers", "params", "history", "scope", "route", "info", "relay", "priced", "response_id")

    def __init__(
        self,
        services: Services,
        store: ResponseStorage,
        sse_headers: dict[str, str],
        params: _Request,
        history: list[dict[str, Any]],
        scope: str,
        route: Route,
        info: RequestInfo,
        relay: NativeEventRelay,
        priced: dict[str, Any],
    ) -> None:
        self.services = services
        self.store = store
        self.sse_headers = sse_headers
        self.params = params
        self.history = history
        self.scope = scope
        self.route = route
        self.info = info
        self.relay = relay
        self.priced = priced
        self.response_id = relay.response_id

    async def usage(self, report: Any, *, estimate: bool) -> RequestUsage | None:
        """The usage the upstream reported, else (with ``estimate``) counted here: the upstream read the prompt either way."""
        usage = _usage_of(report)
        if usage is not None or not estimate:
            return usage
        tokens = self.services.tokens
        model = self.route.upstream_model
        prompt = await tokens.count_prompt(self.priced, model, self.info.request_id)
        completion = await tokens.count_text_async("".join(self.relay.pieces), model)
        return RequestUsage(prompt, completion, 0, True)

    def snapshot(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        """The response with no output (queued, in progress, cancelled, failed before the upstream answered)."""
        return self.relay.placeholder(status, error)

    async def keep(self, response: dict[str, Any], *, running: bool = False) -> None:
        if self.params.store:
            await self.store.save(self.scope, StoredResponse(response, self.params.items, [*self.history, *self.params.items]), running=running)

    async def json(self, replies: AsyncGenerator[bytes, None], headers: Mapping[str, str]) -> Response[bytes]:
        response = await self.answer(replies)
        return JSONBytes(orjson.dumps(response), headers=headers)

    async def answer(self, replies: AsyncGenerator[bytes, None]) -> dict[str, Any]:
        """The upstream's plain answer as the client's response, stored; raises the upstream's error."""
        info = self.info
        try:
            try:
                raw = await anext(replies, b"")
            finally:
                await replies.aclose()
            body: JSONValue
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict) or body.get("object") != "response" or not isinstance(body.get("output"), list):
                raise malformed_response(self.route.provider.name)
            response = self.relay.own(body)
            info.usage = await self.usage(response.get("usage"), estimate=True)
            await self.keep(response)
        except BaseException:
            if info.usage is None:
                # Cut short (the client left, a background run cancelled): the upstream read the prompt.
                info.usage = await self.usage(None, estimate=info.error_code in CUT_SHORT)
            raise
        return response

    async def _finish(self, last: bytes) -> bytes:
        """``last`` (the stream's last event), once the final response is stored: a client that retrieves it at once finds it."""
        relay = self.relay
        if relay.failure is not None:
            self.info.error_code = "stream_error"
        if relay.response is not None:
            await self.keep(relay.response)
        return last

    async def sse(self, replies: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        """The whole relayed stream with no HTTP status to keep: any failure (up front too) is ``response.failed``."""
        relay = self.relay
        info = self.info
        try:
            try:
                async for data in replies:
                    chunk = relay.event(data)
                    if relay.done:
                        break
                    if chunk:
                        yield chunk
                else:
                    chunk = relay.end()
            except OpenAIError as err:
                chunk = relay.fail(err)
            if relay.failure is not None:
                # The ledger row says how the run ended, as for a translated background run.
                info.status = relay.failure.status
            yield await self._finish(chunk)
        finally:
            await replies.aclose()
            report = relay.response.get("usage") if relay.response is not None else None
            self.info.usage = await self.usage(report, estimate=True)

    async def stream(self, replies: AsyncGenerator[bytes, None], headers: Mapping[str, str]) -> Response[bytes]:
        relay = self.relay
        info = self.info
        # Pull until the first event for the client, so an error up front keeps its HTTP status.
        head = b""
        try:
            async for data in replies:
                head = relay.event(data)
                if relay.failure is not None:
                    await replies.aclose()
                    info.usage = await self.usage(None, estimate=False)
                    return error_response(relay.failure, info)
                if head:
                    break
            else:
                head = relay.end()
                if relay.failure is not None:
                    return error_response(relay.failure, info)
        except BaseException:
            await replies.aclose()
            info.usage = await self.usage(None, estimate=info.error_code == "client_disconnected")
            raise

        async def body() -> AsyncGenerator[bytes, None]:
            try:
                if relay.done:
                    yield await self._finish(head)
                    return
                yield head
                try:
                    async for data in replies:
                        chunk = relay.event(data)
                        if relay.done:
                            yield await self._finish(chunk)
                            return
                        if chunk:
                            yield chunk
                except OpenAIError as err:
                    yield await self._finish(relay.fail(err))
                    return
                yield await self._finish(relay.end())
            finally:
                await replies.aclose()  # at once: a client that left stops the upstream call

        chunks = body()

        async def ending() -> None:
            # Run once by the outer ASGI layer before release, never cancelled (as in chat).
            await chunks.aclose()
            await replies.aclose()
            report = relay.response.get("usage") if relay.response is not None else None
            info.usage = await self.usage(report, estimate=True)

        info.ending = ending
        return SSEStream(chunks, headers={**self.sse_headers, **headers})
