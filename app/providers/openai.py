"""Any OpenAI-compatible upstream: OpenAI, OpenRouter, vLLM, llama.cpp, Ollama...

This is the proxy's hot path, so it talks to the upstream through one
long-lived aiohttp session (measured on this machine at 0.06-0.16 ms client
CPU per request against httpx's 0.57-1.24 ms) and parses SSE from raw reads
rather than line by line.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, AsyncIterator

import aiohttp
import orjson

from toolrelay.app.config import UpstreamSettings
from toolrelay.app.errors import OpenAIError, upstream_timeout, upstream_unreachable
from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Event, Failure, ResponseMeta, UsageReport
from toolrelay.app.providers.base import Health, UpstreamCall

_META_FIELDS = ("system_fingerprint", "service_tier")
# Headers an upstream 429/503 carries that the client's retry logic reads.
_RETRY_HEADERS = (
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "x-should-retry",
)


def dumps_body(body: Any) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:
        # Integers beyond 64 bits (a huge `seed`): the stdlib keeps them exact.
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def map_upstream_error(status: int, raw: bytes, headers: Any, upstream: str) -> OpenAIError:
    """Turn an upstream's error response into ours, keeping what the client can act on."""
    message = f"The upstream provider '{upstream}' returned HTTP {status}."
    err_type: str | None = None
    param = None
    code = None
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, dict):
            if isinstance(err.get("message"), str) and err["message"]:
                message = err["message"]
            err_type = err.get("type") if isinstance(err.get("type"), str) else None
            param = err.get("param") if isinstance(err.get("param"), str) else None
            code = err.get("code") if isinstance(err.get("code"), (str, type(None))) else str(err.get("code"))
        elif isinstance(err, str) and err:
            message = err
    kept = {k: headers[k] for k in _RETRY_HEADERS if k in headers}
    if status in (429, 503):
        kept.setdefault("retry-after", "1")
        if "retry-after-ms" not in kept:
            try:
                kept["retry-after-ms"] = str(int(float(kept["retry-after"]) * 1000))
            except ValueError:
                pass  # an HTTP-date: clients parse retry-after themselves
    if status in (401, 403):
        # The client's own key was accepted by us; this is our upstream
        # credential, which is an operator problem, not the client's.
        return OpenAIError(
            502,
            f"The upstream provider '{upstream}' rejected the server's credentials (HTTP {status}). Ask the operator to check its API key.",
            type="upstream_error",
            code="upstream_auth_error",
        )
    if status == 429:
        err_type = err_type or "rate_limit_error"
    elif status >= 500:
        err_type = err_type if err_type and "error" in err_type else "server_error"
    elif status == 404:
        code = code or "model_not_found"
    status = status if 400 <= status <= 599 else 502
    return OpenAIError(status, message, type=err_type, param=param, code=code, headers=kept)


class MalformedUpstream(Exception):
    """The upstream sent a body or chunk that is not the shape the protocol says."""


def _bad(upstream: str) -> OpenAIError:
    return OpenAIError(502, f"The upstream provider '{upstream}' returned a malformed response.", type="upstream_error", code="bad_upstream_response")


def _fix_tool_calls(calls: Any, streaming: bool, seen: set[tuple[int, int]] | None = None, choice: int = 0) -> list[Any]:
    """Repair the tool-call shapes some servers get wrong.

    Missing ``index``, arguments sent as an object, and (LiteLLM, some
    re-chunkers) ``id``/``type``/``name`` repeated in every delta: the OpenAI
    SDK concatenates repeated strings, so a repeated id would arrive as
    ``call_xcall_x``.
    """
    if not isinstance(calls, list):
        raise MalformedUpstream("tool_calls is not a list")
    fixed = []
    for position, call in enumerate(calls):
        if not isinstance(call, dict):
            raise MalformedUpstream("tool call is not an object")
        call = dict(call)
        function = call.get("function")
        if function is not None and not isinstance(function, dict):
            raise MalformedUpstream("tool call function is not an object")
        if streaming and not isinstance(call.get("index"), int):
            call["index"] = position
        if isinstance(function, dict) and not isinstance(function.get("arguments"), (str, type(None))):
            function = call["function"] = {**function, "arguments": orjson.dumps(function["arguments"]).decode()}
        if streaming and seen is not None:
            key = (choice, call["index"])
            if key in seen:
                call.pop("id", None)
                call.pop("type", None)
                if isinstance(function, dict) and "name" in function:
                    call["function"] = {k: v for k, v in function.items() if k != "name"}
            elif call.get("id") or (isinstance(function, dict) and function.get("name")):
                seen.add(key)
        if not streaming:
            call.setdefault("type", "function")
            if not call.get("id"):
                call["id"] = "call_" + os.urandom(12).hex()
        fixed.append(call)
    return fixed


def events_from_completion(payload: Any, upstream: str) -> list[Event]:
    """Events for a non-streamed ``chat.completion`` body."""
    if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list):
        raise _bad(upstream)
    events: list[Event] = []
    meta = {k: payload[k] for k in _META_FIELDS if payload.get(k) is not None}
    if meta:
        events.append(ResponseMeta(meta))
    try:
        for position, choice in enumerate(payload["choices"]):
            if not isinstance(choice, dict):
                raise MalformedUpstream("choice is not an object")
            message = choice.get("message") or {}
            if not isinstance(message, dict):
                raise MalformedUpstream("message is not an object")
            if message.get("tool_calls") is not None:
                message = {**message, "tool_calls": _fix_tool_calls(message["tool_calls"], streaming=False)}
            index = choice.get("index", position)
            events.append(ChoiceMessage(index if isinstance(index, int) else position, message, choice.get("finish_reason") or "stop", choice.get("logprobs")))
    except MalformedUpstream:
        raise _bad(upstream) from None
    if isinstance(payload.get("usage"), dict):
        events.append(UsageReport(payload["usage"]))
    return events


def events_from_chunk(chunk: Any, seen: set[tuple[int, int]] | None = None) -> list[Event]:
    """Events for one streamed ``chat.completion.chunk``; raises :class:`MalformedUpstream`."""
    if not isinstance(chunk, dict):
        raise MalformedUpstream("chunk is not an object")
    events: list[Event] = []
    choices = chunk.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise MalformedUpstream("choices is not a list")
    for choice in choices or ():
        if not isinstance(choice, dict):
            raise MalformedUpstream("choice is not an object")
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise MalformedUpstream("delta is not an object")
        index = choice.get("index", 0)
        if not isinstance(index, int):
            raise MalformedUpstream("choice index is not an integer")
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            delta = {**delta, "tool_calls": _fix_tool_calls(tool_calls, True, seen, index)}
        events.append(ChoiceDelta(index, delta, choice.get("finish_reason"), choice.get("logprobs")))
    usage = chunk.get("usage")
    if isinstance(usage, dict) and usage:
        events.append(UsageReport(usage))
    return events


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
        self._session: aiohttp.ClientSession | None = None
        self._timeout_stream = aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout, sock_read=settings.timeout)
        self._timeout_plain = aiohttp.ClientTimeout(total=settings.timeout, sock_connect=settings.connect_timeout)

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.settings.max_connections,
                    limit_per_host=self.settings.max_connections,
                    ttl_dns_cache=300,
                    force_close=self._force_close,
                ),
                headers=self._headers,
                # Ignore HTTP_PROXY & co: an operator's shell proxy must not reroute upstream traffic silently.
                trust_env=False,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"provider {self.name} used before start()")
        return self._session

    async def _post(self, call: UpstreamCall) -> aiohttp.ClientResponse:
        # No retry here: a connection that dies after the upstream read the
        # request may still be billed, and the client SDKs retry a 502 themselves.
        timeout = self._timeout_stream if call.stream else self._timeout_plain
        try:
            return await self.session.post(self._completions_url, data=dumps_body(call.body), timeout=timeout)
        except (aiohttp.ServerTimeoutError, asyncio.TimeoutError):
            raise upstream_timeout(f"'{self.name}' did not answer in time") from None
        except aiohttp.ClientConnectorError as exc:
            raise upstream_unreachable(f"'{self.name}' ({exc.os_error.strerror or 'connection failed'})") from None
        except aiohttp.ClientError as exc:
            raise upstream_unreachable(f"'{self.name}' ({type(exc).__name__})") from None

    async def complete(self, call: UpstreamCall) -> AsyncIterator[Event]:
        response = await self._post(call)
        finished = False
        try:
            if response.status >= 400:
                try:
                    raw = await response.read()
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    raw = b""
                raise map_upstream_error(response.status, raw, response.headers, self.name)
            if not call.stream:
                try:
                    raw = await response.read()
                except (aiohttp.ServerTimeoutError, asyncio.TimeoutError):
                    raise upstream_timeout(f"'{self.name}' did not finish its answer in time") from None
                except aiohttp.ClientError as exc:
                    raise upstream_unreachable(f"'{self.name}' broke the connection ({type(exc).__name__})") from None
                try:
                    payload = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise _bad(self.name) from None
                for event in events_from_completion(payload, self.name):
                    yield event
                finished = True
                return
            if response.content_type == "application/json":
                # Some servers ignore `stream` and answer with one JSON body; that is still an answer.
                try:
                    payload = orjson.loads(await response.read())
                except (orjson.JSONDecodeError, aiohttp.ClientError, asyncio.TimeoutError):
                    raise _bad(self.name) from None
                for event in events_from_completion(payload, self.name):
                    yield event
                finished = True
                return
            async for event in self._read_sse(response):
                yield event
            finished = True
        finally:
            if finished:
                response.release()
            else:
                # Dropping the connection is how the upstream learns the
                # client went away; returning it to the pool would not stop it.
                response.close()

    async def _read_sse(self, response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
        """Yield events from an SSE body as bytes arrive; never buffers the whole answer."""
        buffer = b""
        data_lines: list[bytes] = []
        saw_finish = False
        saw_done = False
        seen_calls: set[tuple[int, int]] = set()
        try:
            async for raw in response.content.iter_any():
                buffer += raw
                while True:
                    newline = buffer.find(b"\n")
                    if newline < 0:
                        break
                    line = buffer[:newline].rstrip(b"\r")
                    buffer = buffer[newline + 1:]
                    if line:
                        if line.startswith(b"data:"):
                            data_lines.append(line[5:].lstrip(b" "))
                        continue
                    if not data_lines:
                        continue
                    data = data_lines[0] if len(data_lines) == 1 else b"\n".join(data_lines)
                    data_lines = []
                    if data == b"[DONE]":
                        saw_done = True
                        continue
                    try:
                        chunk = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        yield Failure(OpenAIError(502, f"The upstream provider '{self.name}' sent an unreadable stream event.", type="upstream_error", code="bad_upstream_response"))
                        return
                    if isinstance(chunk, dict) and chunk.get("error") is not None:
                        err = map_upstream_error(500, data, {}, self.name)
                        yield Failure(err)
                        return
                    if isinstance(chunk, dict):
                        meta = {k: chunk[k] for k in _META_FIELDS if chunk.get(k) is not None}
                        if meta:
                            yield ResponseMeta(meta)
                    try:
                        events = events_from_chunk(chunk, seen_calls)
                    except MalformedUpstream:
                        yield Failure(_bad(self.name))
                        return
                    for event in events:
                        if type(event) is ChoiceDelta and event.finish_reason is not None:
                            saw_finish = True
                        yield event
        except (aiohttp.ServerTimeoutError, asyncio.TimeoutError):
            yield Failure(upstream_timeout(f"'{self.name}' stopped sending its stream"))
            return
        except aiohttp.ClientError as exc:
            yield Failure(upstream_unreachable(f"'{self.name}' broke the stream ({type(exc).__name__})"))
            return
        if not (saw_finish or saw_done):
            yield Failure(upstream_unreachable(f"'{self.name}' ended the stream before the answer was complete"))

    async def health(self) -> Health:
        try:
            async with self.session.get(self.base_url + "/models", timeout=aiohttp.ClientTimeout(total=5)) as response:
                if response.status < 400:
                    return Health(self.name, self.kind, True, "reachable")
                if response.status in (401, 403):
                    return Health(self.name, self.kind, False, f"reachable, but it rejected the API key (HTTP {response.status})")
                if response.status == 404:
                    # Some servers have no /models; reachability is what matters.
                    return Health(self.name, self.kind, True, "reachable (no /models endpoint)")
                return Health(self.name, self.kind, False, f"degraded: HTTP {response.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return Health(self.name, self.kind, False, f"unreachable: {type(exc).__name__}")

    async def list_models(self) -> list[str]:
        async with self.session.get(self.base_url + "/models", timeout=aiohttp.ClientTimeout(total=10)) as response:
            if response.status >= 400:
                return []
            payload = orjson.loads(await response.read())
        data = payload.get("data") if isinstance(payload, dict) else None
        return [m["id"] for m in data or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
