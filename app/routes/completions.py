"""Legacy ``POST /v1/completions``: passed through to the model's upstream, streamed as it arrives.

LlamaIndex's ``OpenAILike`` (default settings) and other older clients call
this endpoint. The upstream's answer goes back as it is, with ``model`` the
id the client asked for. The upstream is always asked for usage (every
request is metered); :class:`CompletionStream` strips it when the client did
not ask (``stream_options.include_usage``), as chat does, and an answer
without usage gets an estimate. As in chat, an error the upstream reports
before its first chunk keeps its HTTP status; after that, one
``data: {"error": ...}`` event ends the stream without ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import orjson
from litestar import Request, post
from litestar.response import Response

from toolrelay.app.disconnect import answer_unless_gone
from toolrelay.app.encoder import sse_event
from toolrelay.app.errors import OpenAIError, error_response, upstream_unreachable
from toolrelay.app.json_response import JSONBytes
from toolrelay.app.jsonbody import JSONValue
from toolrelay.app.middleware import RequestInfo, request_info
from toolrelay.app.providers.base import ForwardCall
from toolrelay.app.providers.forward import DONE
from toolrelay.app.providers.openai_parser import malformed_response, map_upstream_error
from toolrelay.app.routes.chat import SSE_HEADERS
from toolrelay.app.routes.forwarding import Forwarded, admit_forwarded, estimated_usage, plain_reply, reply_stream, usage_object
from toolrelay.app.sse_response import SSEStream
from toolrelay.app.usage import RequestUsage
from toolrelay.app.validation import check_legacy_completion_request

if TYPE_CHECKING:
    from toolrelay.app.services import Services

__all__ = ["CompletionStream", "build_completions_handler"]

ENDPOINT = "/v1/completions"
_DONE_EVENT = b"data: [DONE]\n\n"


class CompletionStream:
    """An upstream's ``text_completion`` chunks, rewritten for the client one at a time (pure).

    :meth:`chunk` returns the SSE bytes to send for one upstream payload (or
    ``b""`` for a usage chunk the client did not ask for) and raises
    :class:`OpenAIError` for an error event or a malformed chunk. It keeps
    what the end needs: the usage, the generated text (for an estimate),
    whether the answer finished.
    """

    __slots__ = ("model", "include_usage", "upstream", "usage", "pieces", "finished", "done", "envelope")

    def __init__(self, model: str, include_usage: bool, upstream: str) -> None:
        self.model = model
        self.include_usage = include_usage
        self.upstream = upstream
        self.usage: dict[str, Any] | None = None
        self.pieces: list[str] = []
        self.finished = False
        self.done = False
        # id/object/created of the stream, for a usage chunk we add ourselves.
        self.envelope: dict[str, Any] = {}

    def chunk(self, data: bytes) -> bytes:
        if data == DONE:
            self.done = True
            return b""
        chunk: JSONValue
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise malformed_response(self.upstream) from None
        if not isinstance(chunk, dict):
            raise malformed_response(self.upstream)
        if chunk.get("error") is not None:
            raise map_upstream_error(500, data, {}, self.upstream)
        choices: JSONValue = chunk.get("choices")
        if not isinstance(choices, list):
            raise malformed_response(self.upstream)
        choice: JSONValue
        for choice in choices:
            if not isinstance(choice, dict):
                raise malformed_response(self.upstream)
            text: JSONValue = choice.get("text")
            if isinstance(text, str) and text:
                self.pieces.append(text)
            if choice.get("finish_reason") is not None:
                self.finished = True
        if not self.envelope:
            self.envelope = {k: chunk[k] for k in ("id", "object", "created") if k in chunk}
        usage: JSONValue = chunk.get("usage")
        if isinstance(usage, dict) and usage:
            self.usage = usage
        chunk["model"] = self.model
        if not self.include_usage and "usage" in chunk:
            del chunk["usage"]
            if not choices:
                return b""
        return sse_event(chunk)

    def usage_chunk(self, usage: dict[str, int]) -> bytes:
        """The closing usage chunk for a client that asked for one when the upstream sent none."""
        return sse_event({"id": "", "object": "text_completion", "created": 0, **self.envelope, "model": self.model, "choices": [], "usage": usage})


def build_completions_handler(services: Services) -> Any:
    @post(
        [ENDPOINT, "/completions"],
        status_code=200,
        summary="Create a completion (legacy)",
        description="OpenAI legacy Completions, passed through to the model's upstream, streaming included (agent models run on chat only).",
        tags=["completions"],
    )
    async def completions(request: Request[Any, Any, Any]) -> Response[bytes]:
        info = request_info(request.scope)
        try:
            forwarded = await admit_forwarded(services, request, info, mode="completions", endpoint=ENDPOINT, validate=check_legacy_completion_request)
            route = forwarded.route
            if route.context_window:
                await services.check_context(forwarded.priced, route, info.request_id)
            stream = forwarded.payload.get("stream") is True
            call = ForwardCall("/completions", forwarded.upstream_body(stream=stream), stream, forwarded.model, ENDPOINT, info.request_id)

            async def book_estimate() -> None:
                info.usage = await estimated_usage(services, forwarded, info.request_id)

            async def answer() -> Response[bytes]:
                if stream:
                    return await _stream_response(services, forwarded, reply_stream(route, call), info)
                return await _json_response(services, forwarded, await plain_reply(route, call), info)

            return await answer_unless_gone(request, answer(), book_estimate)
        except OpenAIError as err:
            return error_response(err, info)

    return completions


async def _json_response(services: Services, forwarded: Forwarded, raw: bytes, info: RequestInfo) -> Response[bytes]:
    body: JSONValue
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise malformed_response(forwarded.route.provider.name)
    body["model"] = forwarded.model
    usage = RequestUsage.from_report(body.get("usage"))
    if usage is None:
        choices: list[Any] = body["choices"]
        generated = "".join(c["text"] for c in choices if isinstance(c, dict) and isinstance(c.get("text"), str))
        usage = await estimated_usage(services, forwarded, info.request_id, generated)
        body["usage"] = usage_object(usage, generates=True)
    info.usage = usage
    return JSONBytes(orjson.dumps(body), headers=forwarded.ticket.headers)


async def _stream_response(services: Services, forwarded: Forwarded, replies: AsyncGenerator[bytes, None], info: RequestInfo) -> Response[bytes]:
    options = forwarded.payload.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    relay = CompletionStream(forwarded.model, include_usage, forwarded.route.provider.name)

    async def usage_now(estimate: bool) -> RequestUsage | None:
        usage = RequestUsage.from_report(relay.usage)
        if usage is None and estimate:
            usage = await estimated_usage(services, forwarded, info.request_id, "".join(relay.pieces))
        return usage

    # Pull until the first bytes for the client, so an error the upstream reports up front keeps its HTTP status.
    head = b""
    try:
        async for data in replies:
            head = relay.chunk(data)
            if head or relay.done:
                break
    except BaseException:
        # Refused, cancelled (client gone) or broken before the first byte: stop the upstream call.
        await replies.aclose()
        info.usage = await usage_now(info.error_code == "client_disconnected")
        raise

    async def body() -> AsyncGenerator[bytes, None]:
        try:
            if head:
                yield head
            if not relay.done:
                async for data in replies:
                    chunk = relay.chunk(data)
                    if chunk:
                        yield chunk
                    if relay.done:
                        break
            if not (relay.done or relay.finished):
                raise upstream_unreachable(f"'{forwarded.route.provider.name}' ended the stream before the answer was complete")
            if include_usage and relay.usage is None:
                estimate = await estimated_usage(services, forwarded, info.request_id, "".join(relay.pieces))
                relay.usage = usage_object(estimate, generates=True)
                yield relay.usage_chunk(relay.usage)
            yield _DONE_EVENT
        except OpenAIError as err:
            info.error_code = "stream_error"
            yield sse_event(err.payload())
        finally:
            await replies.aclose()  # at once: a client that left stops the upstream call

    chunks = body()

    async def ending() -> None:
        # Run once by the outer ASGI layer before release, never cancelled (see chat).
        await chunks.aclose()
        await replies.aclose()
        info.usage = await usage_now(True)

    info.ending = ending
    return SSEStream(chunks, headers={**SSE_HEADERS, **forwarded.ticket.headers})
