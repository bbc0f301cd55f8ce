"""Any OpenAI-compatible upstream: OpenAI, OpenRouter, vLLM, llama.cpp, Ollama...

The transport: this is the proxy's hot path, so it talks to the upstream
through one long-lived :class:`~toolrelay.app.providers.upstream_http.UpstreamClient`
(HTTP/1.1 keep-alive on asyncio protocols; why not aiohttp or httpx is in
that module) and hands raw reads to the pure parser in
:mod:`toolrelay.app.providers.openai_parser`, which owns the wire format and
the repair of upstream quirks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol

import orjson

from toolrelay.app.config import UpstreamSettings
from toolrelay.app.errors import upstream_disconnected, upstream_timeout, upstream_unreachable
from toolrelay.app.events import Event, Failure
from toolrelay.app.providers.base import ForwardCall, Health, UpstreamCall, call_headers
from toolrelay.app.providers.forward import DONE, OversizedEvent, SSEDataFramer, map_forward_error, oversized_reply
from toolrelay.app.providers.openai_parser import (
    SSEChunkParser,
    events_from_body,
    map_upstream_error,
)
from toolrelay.app.providers.upstream_http import (
    UpstreamBodyTooLarge,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamHTTPError,
    UpstreamResponse,
    UpstreamTimeoutError,
)

#: An upstream's error body is read up to this much (its message is all we keep of it).
ERROR_BODY_BYTES = 1024 * 1024
#: A model list (``GET /models``) is read up to this much.
LISTING_BYTES = 16 * 1024 * 1024
#: A passed-through plain answer whose caller sets no bound: an embeddings answer for 2,048
#: inputs at 3,072 dimensions is about 95 MB of float JSON, past the client's 64 MiB default.
FORWARD_BODY_BYTES = 256 * 1024 * 1024


def dumps_body(body: Any) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:
        # Integers beyond 64 bits (a huge `seed`): the stdlib keeps them exact.
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class StreamParser(Protocol):
    """A provider's incremental stream reader: bytes in as they arrive, events out."""

    failed: bool

    def feed(self, raw: bytes) -> Iterable[Event]: ...

    def end(self) -> Iterable[Event]: ...


async def read_stream(response: UpstreamResponse, parser: StreamParser, upstream: str) -> AsyncIterator[Event]:
    """Yield ``parser``'s events from a streamed body as bytes arrive (never buffering the whole answer);
    a stall or a broken connection ends it with a Failure. One loop for every provider's wire format."""
    try:
        async for raw in response:
            for event in parser.feed(raw):
                yield event
            if parser.failed:
                return
    except UpstreamTimeoutError:
        yield Failure(upstream_timeout(f"'{upstream}' stopped sending its stream"))
        return
    except UpstreamHTTPError as exc:
        yield Failure(upstream_unreachable(f"'{upstream}' broke the stream ({exc})"))
        return
    for event in parser.end():
        yield event


async def read_body(response: UpstreamResponse, upstream: str, limit: int | None = None) -> bytes:
    """A plain answer's whole body, its failures as the client's errors (the 502 past ``limit``)."""
    try:
        return await response.read(limit)
    except UpstreamTimeoutError:
        raise upstream_timeout(f"'{upstream}' did not finish its answer in time") from None
    except UpstreamBodyTooLarge as exc:
        raise oversized_reply(upstream, exc.limit) from None
    except UpstreamHTTPError as exc:
        raise upstream_unreachable(f"'{upstream}' broke the connection ({exc})") from None


async def read_error_body(response: UpstreamResponse) -> bytes:
    """An error answer's body for its message; empty when it cannot be read (cut short, too large, too slow)."""
    try:
        return await response.read(ERROR_BODY_BYTES)
    except UpstreamHTTPError:
        return b""


async def post(client: UpstreamClient, url: str, body: bytes, stream: bool, timeout: float, headers: dict[str, str] | None, upstream: str) -> UpstreamResponse:
    """Send one request to an upstream and wait for its status, the failures as the client's errors.

    A plain call is bounded as a whole by ``timeout``; a stream by the gap between two reads.
    No retry here: a connection that dies after the upstream read the
    request may still be billed, and the client SDKs retry a 502 themselves.
    """
    try:
        if stream:
            return await client.request("POST", url, body=body, headers=headers, read_timeout=timeout)
        return await client.request("POST", url, body=body, headers=headers, timeout=timeout)
    except UpstreamTimeoutError:
        raise upstream_timeout(f"'{upstream}' did not answer in time") from None
    except UpstreamConnectError as exc:
        raise upstream_unreachable(f"'{upstream}' ({exc})") from None
    except UpstreamHTTPError as exc:
        # Connected, then dropped: the request may have been read (failover does not retry these).
        raise upstream_disconnected(f"'{upstream}' ({exc})") from None


async def probe(client: UpstreamClient, url: str, name: str, kind: str, describe: Callable[[int, bytes], tuple[bool, str] | None] | None = None) -> Health:
    """An upstream's health from one GET (``describe(status, body)`` words a status of 400 or more)."""
    try:
        response = await client.request("GET", url, timeout=5.0)
        try:
            status = response.status
            raw = await read_error_body(response) if status >= 400 else b""
        finally:
            response.close()
    except UpstreamHTTPError as exc:
        return Health(name, kind, False, f"unreachable: {exc}")
    if status < 400:
        return Health(name, kind, True, "reachable")
    detail = describe(status, raw) if describe is not None else None
    if detail is not None:
        return Health(name, kind, detail[0], detail[1])
    if status in (401, 403):
        return Health(name, kind, False, f"reachable, but it rejected the API key (HTTP {status})")
    return Health(name, kind, False, f"degraded: HTTP {status}")


async def get_json(client: UpstreamClient, url: str) -> Any:
    """A GET's JSON answer (a model list), or None when the upstream refused or sent no JSON."""
    response = await client.request("GET", url, timeout=10.0)
    try:
        if response.status >= 400:
            return None
        raw = await response.read(LISTING_BYTES)
    finally:
        response.release()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


class OpenAIProvider:
    """An upstream that speaks the OpenAI Chat Completions protocol."""

    kind = "openai"

    def __init__(self, name: str, settings: UpstreamSettings, api_key: str | None, *, force_close: bool = False) -> None:
        self.name = name
        self._force_close = force_close
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self._completions_url = self.base_url + "/chat/completions"
        self._headers = {"content-type": "application/json", "accept": "application/json", **settings.headers}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._client: UpstreamClient | None = None

    async def start(self) -> None:
        if self._client is None:
            # Made here, from headers a subclass may have set after __init__ (Anthropic's).
            self._client = UpstreamClient(
                self.base_url,
                headers=self._headers,
                max_connections=self.settings.max_connections,
                connect_timeout=self.settings.connect_timeout,
                force_close=self._force_close,
            )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def client(self) -> UpstreamClient:
        if self._client is None:
            raise RuntimeError(f"provider {self.name} used before start()")
        return self._client

    async def _post(self, url: str, body: dict[str, Any], stream: bool, headers: dict[str, str] | None = None) -> UpstreamResponse:
        return await post(self.client, url, dumps_body(body), stream, self.settings.timeout, headers, self.name)

    async def complete(self, call: UpstreamCall) -> AsyncIterator[Event]:
        response = await self._post(self._completions_url, call.body, call.stream, call_headers(call.request_id, call.headers))
        finished = False
        try:
            if response.status >= 400:
                raise map_upstream_error(response.status, await read_error_body(response), response.headers, self.name)
            if not call.stream or response.content_type == "application/json":
                # Some servers ignore `stream` and answer with one JSON body; that is still an answer.
                for event in events_from_body(await read_body(response, self.name), self.name):
                    yield event
                finished = True
                return
            # read_stream directly, not through a wrapper generator: each layer costs every event ~0.5 us.
            async for event in read_stream(response, SSEChunkParser(self.name), self.name):
                yield event
            finished = True
        finally:
            if finished:
                response.release()
            else:
                # Dropping the connection is how the upstream learns the
                # client went away; returning it to the pool would not stop it.
                response.close()

    async def forward(self, call: ForwardCall) -> AsyncIterator[bytes]:
        response = await self._post(self.base_url + call.path, call.body, call.stream, call_headers(call.request_id, call.headers))
        finished = False
        try:
            if response.status >= 400:
                raw = await read_error_body(response)
                raise map_forward_error(response.status, raw, response.headers, self.name, model=call.model, endpoint=call.endpoint)
            if not call.stream or response.content_type == "application/json":
                # A server that ignores `stream` answers with one body; the caller reads it as one event.
                yield await read_body(response, self.name, call.max_event_bytes or FORWARD_BODY_BYTES)
                finished = True
                return
            framer = SSEDataFramer(call.max_event_bytes)
            try:
                async for chunk in response:
                    for data in framer.feed(chunk):
                        yield data
                        if data == DONE:
                            finished = True
                            return
            except OversizedEvent:
                raise oversized_reply(self.name, call.max_event_bytes or 0) from None
            except UpstreamTimeoutError:
                raise upstream_timeout(f"'{self.name}' stopped sending its stream") from None
            except UpstreamHTTPError as exc:
                raise upstream_unreachable(f"'{self.name}' broke the stream ({exc})") from None
            for data in framer.end():
                yield data
            finished = True
        finally:
            if finished:
                response.release()
            else:
                response.close()  # as in complete(): the upstream learns the client left

    async def health(self) -> Health:
        def describe(status: int, raw: bytes) -> tuple[bool, str] | None:
            # Some servers have no /models; reachability is what matters.
            return (True, "reachable (no /models endpoint)") if status == 404 else None

        return await probe(self.client, self.base_url + "/models", self.name, self.kind, describe)

    async def list_models(self) -> list[str]:
        payload = await get_json(self.client, self.base_url + "/models")
        data = payload.get("data") if isinstance(payload, dict) else None
        return [m["id"] for m in data or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
