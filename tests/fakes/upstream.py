"""A scripted OpenAI Chat Completions server on 127.0.0.1, for proxy and agent tests.

:class:`FakeUpstream` is a real HTTP server (aiohttp) running on its own event
loop in a daemon thread, so synchronous clients in a test (``openai.OpenAI``,
``httpx.Client``) never deadlock with it. It records every request and answers
``POST /v1/chat/completions`` following a script of :class:`Reply` objects
(and ``/v1/embeddings``, the legacy ``/v1/completions`` and the Responses
API's ``/v1/responses`` from the same script: see
:meth:`FakeUpstream._handle_forwarded` and :meth:`FakeUpstream._handle_responses`).

Typical use (the ``fake`` fixture in ``tests/conftest.py`` hands out a started,
freshly reset instance)::

    fake.enqueue(Reply(content="Hi there"))                     # next answer
    fake.enqueue(Reply(tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}]))
    fake.responder = lambda body: Reply(content="done") if has_tool_result(body) else None
    ...
    body = fake.last_body                                       # what the upstream received
    assert body["stream_options"] == {"include_usage": True}

Which reply answers a request, first match wins:

1. the oldest reply queued with :meth:`FakeUpstream.enqueue`;
2. ``fake.responder(body)`` if set and it returns a :class:`Reply` (``None``
   falls through);
3. ``fake.default_reply``.

Streaming (``"stream": true`` in the request) follows OpenAI exactly: every
chunk has the same ``id``/``created``; the first delta of each choice carries
``role: "assistant"``; a tool call's ``id``, ``type`` and ``function.name``
appear only in its first delta, followed by ``function.arguments`` fragments;
the last chunk of each choice carries ``finish_reason``; when the request has
``stream_options.include_usage`` every chunk has ``"usage": null`` and one
usage chunk with ``"choices": []`` precedes ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["AUTO", "EMBEDDING_DIMS", "FakeUpstream", "RecordedRequest", "Reply", "word_count"]


class _Auto:
    """Sentinel: "work it out from the request and the other fields"."""

    _instance: _Auto | None = None

    def __new__(cls) -> _Auto:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "AUTO"

    def __bool__(self) -> bool:
        return False


AUTO: Any = _Auto()
DEFAULT_CONTENT = "Hello from the fake upstream."
#: Floats per embedding when the request sets no ``dimensions``.
EMBEDDING_DIMS = 8


def word_count(text: str | None) -> int:
    """The fake's own token count: whitespace-separated words."""
    return len(re.findall(r"\S+", text or ""))


@dataclass
class Reply:
    """One scripted answer of :class:`FakeUpstream` to a chat completion request.

    Content and calls:

    - ``content``: the assistant text. Defaults to ``"Hello from the fake
      upstream."`` when there are no ``tool_calls``/``refusal``, else ``None``.
    - ``tool_calls``: ``[{"name": str, "arguments": str | dict, "id"?: str}]``;
      dict arguments are JSON-encoded (set ``dict_arguments=True`` to send them
      as a JSON object instead, the way some non-compliant servers do). Ids
      default to ``call_<choice>_<n>_<random>``.
    - ``finish_reason``: defaults to ``"tool_calls"`` when there are tool calls,
      else ``"stop"``.
    - ``reasoning_content``: sent as ``message.reasoning_content`` /
      ``delta.reasoning_content`` (DeepSeek/vLLM style) before the content.
    - ``refusal``: ``message.refusal``.
    - ``contents``: per-choice content when the request asks for ``n > 1``
      (choice ``i`` gets ``contents[i]``; missing entries reuse ``content``).
    - ``extra_message``: extra fields merged into the message (and into the
      first content delta when streaming), e.g. ``{"annotations": [...]}``.

    HTTP level:

    - ``status`` (default 200); for a non-200 the body is ``error`` (default an
      OpenAI-shaped ``{"error": {...}}`` object for that status).
    - ``headers``: extra response headers (``{"retry-after": "7"}``).
    - ``raw_body``: bytes sent verbatim as the whole response body (with
      ``status`` and ``content_type``), for malformed upstream answers.
    - ``delay``: seconds to wait before answering (cancelled if the client
      goes away).
    - ``drop``: after ``delay``, reset the connection without sending any
      response at all (an upstream that crashes while handling the request).

    Streaming:

    - ``chunk_tokens``: how content/reasoning is cut into chunks: ``None`` one
      word (with its trailing space) per chunk, an ``int`` that many words per
      chunk, or an explicit list of string pieces for the content.
    - ``arg_chunks``: number of fragments each tool call's arguments are split
      into (default 3).
    - ``chunk_delay``: seconds between chunks.
    - ``break_after``: after that many ``data:`` events, reset the TCP
      connection (``SO_LINGER`` 0 then abort): a failure mid-stream.
    - ``chunks``: send exactly these events instead of the generated ones; a
      dict is JSON-encoded as ``data: {...}``, bytes are written verbatim.
      ``send_done`` (default True) appends ``data: [DONE]``.
    - ``stream``: force a streamed (True) or plain JSON (False) answer
      regardless of the request's ``stream``.

    Metering and metadata:

    - ``usage``: the usage object; default computed from word counts
      (``prompt_tokens`` = words in the request's messages, ``completion_tokens``
      = words in content, reasoning and tool arguments, over all choices).
    - ``send_usage=False``: send no usage at all (neither key nor usage chunk).
    - ``model``: the model name in the answer (default: echo the request's).
    - ``logprobs``: ``AUTO`` (default) generates per-word logprobs when the
      request has ``logprobs: true`` (with ``top_logprobs`` alternatives) and
      ``null`` otherwise; anything else is sent as the choice's ``logprobs``
      (non-streaming) verbatim.
    - ``system_fingerprint`` (default ``"fp_fake"``), ``completion_id``.
    """

    content: Any = AUTO
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    reasoning_content: str | None = None
    refusal: str | None = None
    contents: list[str | None] | None = None
    extra_message: dict[str, Any] = field(default_factory=dict)
    dict_arguments: bool = False

    status: int = 200
    error: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: bytes | None = None
    content_type: str = "application/json"
    delay: float = 0.0
    drop: bool = False

    chunk_tokens: int | list[str] | None = None
    arg_chunks: int = 3
    chunk_delay: float = 0.0
    break_after: int | None = None
    chunks: list[dict[str, Any] | bytes] | None = None
    #: ``/v1/responses`` only: output items sent as they are before the generated ones (a hosted tool's ``web_search_call``).
    output_items: list[dict[str, Any]] = field(default_factory=list)
    send_done: bool = True
    stream: bool | None = None

    usage: dict[str, Any] | None = None
    send_usage: bool = True
    model: str | None = None
    logprobs: Any = AUTO
    system_fingerprint: str | None = "fp_fake"
    completion_id: str | None = None

    # ------------------------------------------------------------------ helpers

    def content_for(self, choice: int) -> str | None:
        if self.contents is not None and choice < len(self.contents):
            return self.contents[choice]
        if self.content is AUTO:
            return None if (self.tool_calls or self.refusal is not None) else DEFAULT_CONTENT
        return self.content

    def resolved_finish_reason(self) -> str:
        if self.finish_reason:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"

    def error_body(self) -> Any:
        if self.error is not None:
            return self.error
        kinds = {
            400: ("invalid_request_error", None),
            401: ("invalid_request_error", "invalid_api_key"),
            404: ("invalid_request_error", "model_not_found"),
            429: ("rate_limit_error", "rate_limit_exceeded"),
        }
        err_type, code = kinds.get(self.status, ("server_error" if self.status >= 500 else "invalid_request_error", None))
        return {"error": {"message": f"Fake upstream error (HTTP {self.status}).", "type": err_type, "param": None, "code": code}}


@dataclass
class RecordedRequest:
    """One request as the fake received it.

    ``headers`` has lower-case names; ``body`` is the JSON body parsed with the
    standard library (integers beyond 64 bits stay exact) or ``None``;
    ``outcome`` is ``"pending"`` while the answer is being written, then
    ``"completed"``, ``"disconnected"`` (the client closed the connection
    before the answer was finished), ``"aborted"`` (the fake reset the
    connection on purpose, ``Reply.break_after``) or ``"error"`` (the fake
    itself failed, e.g. a responder raised). ``chunks_sent`` counts SSE
    ``data:`` events written.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    body: Any
    received_at: float = field(default_factory=time.monotonic)
    reply: Reply | None = None
    outcome: str = "pending"
    chunks_sent: int = 0
    generation: int = 0
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait_done(self, timeout: float = 10.0) -> bool:
        """Block until the answer finished one way or another; True if it did in time."""
        return self._done.wait(timeout)

    @property
    def is_stream(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True


def _split_words(text: str, per_chunk: int) -> list[str]:
    words = re.findall(r"\S+\s*|\s+", text)
    if not words:
        return [text] if text else []
    return ["".join(words[i : i + per_chunk]) for i in range(0, len(words), per_chunk)]


def _split_n(text: str, parts: int) -> list[str]:
    if not text:
        return [""]
    parts = max(1, min(parts, len(text)))
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _logprob_entries(text: str, top: int) -> list[dict[str, Any]]:
    out = []
    for token in re.findall(r"\S+\s*", text or ""):
        entry: dict[str, Any] = {"token": token, "logprob": -0.25, "bytes": list(token.encode())}
        entry["top_logprobs"] = (
            [{"token": token, "logprob": -0.25, "bytes": list(token.encode())}]
            + [{"token": f"alt{k}", "logprob": -3.0 - k, "bytes": list(f"alt{k}".encode())} for k in range(1, top)]
            if top
            else []
        )
        out.append(entry)
    return out


def _message_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(p.get("text", "") for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


class FakeUpstream:
    """A scripted OpenAI-compatible upstream on ``127.0.0.1:<free port>``.

    Lifecycle: :meth:`start` (returns self), :meth:`stop`, or use it as a
    context manager. :meth:`reset` clears the queue, the records, the
    responder and the counters between tests.

    Script: :meth:`enqueue`, :attr:`responder` (``fn(body: dict) -> Reply |
    None``), :attr:`default_reply`. ``GET /v1/models`` lists :attr:`models`
    (or answers :attr:`models_status` if it is not 200).

    Observation: :attr:`requests` (every request, in arrival order),
    :attr:`chat_requests` (only chat completion calls), :attr:`last_body`,
    :meth:`wait_for_requests`, :attr:`disconnects` and
    :meth:`wait_for_disconnect` (streams or delayed answers the client
    abandoned before the fake finished them).
    """

    def __init__(self, models: list[str] | None = None, *, default_reply: Reply | None = None) -> None:
        self.models: list[str] = list(models or ["fake-model"])
        self._initial_models = list(self.models)
        self.models_status = 200
        #: Endpoints this upstream pretends not to have (``{"embeddings"}``): answered like any unknown path.
        self.missing_endpoints: set[str] = set()
        self.default_reply = default_reply or Reply()
        self.responder: Callable[[dict[str, Any]], Reply | None] | None = None
        self._initial_default = self.default_reply
        self._queue: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._disconnects = 0
        # Bumped by reset(): an answer still running from before a reset (a
        # test that left a slow request behind) no longer counts as a disconnect.
        self._generation = 0
        #: Exceptions raised while answering (a responder that failed, say).
        self.errors: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_server())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(30) or failure:
            raise RuntimeError(f"FakeUpstream did not start: {failure[0] if failure else 'timeout'}")
        return self

    async def _start_server(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle_chat)
        app.router.add_post("/chat/completions", self._handle_chat)
        for path in ("/v1/embeddings", "/embeddings", "/v1/completions", "/completions"):
            app.router.add_post(path, self._handle_forwarded)
        app.router.add_post("/v1/responses", self._handle_responses)
        app.router.add_post("/responses", self._handle_responses)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_get("/models", self._handle_models)
        app.router.add_route("*", "/{tail:.*}", self._handle_other)
        # handler_cancellation: a client that goes away cancels the handler,
        # which is how a disconnect during `delay` or `chunk_delay` is seen.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(15)
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        self._thread = None
        self._loop = None
        self._runner = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ script

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``, what an OpenAI client or upstream config wants."""
        if self.port is None:
            raise RuntimeError("FakeUpstream not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path if path.startswith('/') else '/' + path}"

    def enqueue(self, *replies: Reply) -> None:
        """Queue replies; each answers one chat completion request, oldest first."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Queued replies not yet used."""
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        """Back to the state after construction: no queued replies, records, responder or
        counters; the default reply, :attr:`models` and :attr:`models_status` restored."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._disconnects = 0
            self._generation += 1
            self.errors.clear()
            self.responder = None
            self.default_reply = self._initial_default
            self.models = list(self._initial_models)
            self.models_status = 200
            self.missing_endpoints = set()

    def _pick(self, body: Any) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            responder = self.responder
        if responder is not None:
            reply = responder(body if isinstance(body, dict) else {})
            if reply is not None:
                return reply
        return self.default_reply

    # ------------------------------------------------------------------ observation

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since the last :meth:`reset` (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Only the ``POST .../chat/completions`` requests."""
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/chat/completions")]

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        """The ``POST`` requests to ``endpoint`` (``"embeddings"``, ``"completions"``: legacy only)."""
        return [r for r in self.requests if r.method == "POST" and r.path.rsplit("/", 1)[-1] == endpoint and not r.path.endswith("/chat/completions")]

    @property
    def last_request(self) -> RecordedRequest:
        reqs = self.chat_requests
        if not reqs:
            raise AssertionError("the fake upstream received no chat completion request")
        return reqs[-1]

    @property
    def last_body(self) -> dict[str, Any]:
        """JSON body of the last chat completion request."""
        return self.last_request.body

    def wait_for_requests(self, count: int = 1, timeout: float = 10.0) -> list[RecordedRequest]:
        """Wait until at least ``count`` chat completion requests arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                chats = [r for r in self._requests if r.method == "POST" and r.path.endswith("/chat/completions")]
                if len(chats) >= count:
                    return chats
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} chat requests at the fake upstream, got {len(chats)}")
                self._changed.wait(remaining)

    @property
    def disconnects(self) -> int:
        """How many answers the client abandoned (closed the connection) before they finished."""
        with self._lock:
            return self._disconnects

    def wait_for_disconnect(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until :attr:`disconnects` reaches ``count``; True if it did within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._disconnects < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def _record(self, rec: RecordedRequest) -> None:
        with self._changed:
            rec.generation = self._generation
            self._requests.append(rec)
            self._changed.notify_all()

    def _finish(self, rec: RecordedRequest, outcome: str) -> None:
        with self._changed:
            if rec.outcome != "pending":
                return
            rec.outcome = outcome
            if outcome == "disconnected" and rec.generation == self._generation:
                self._disconnects += 1
            self._changed.notify_all()
        rec._done.set()

    # ------------------------------------------------------------------ handlers

    async def _recorded(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            raw=raw,
            body=body,
        )
        self._record(rec)
        return rec

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        rec = await self._recorded(request)
        try:
            if self.models_status != 200:
                return web.json_response(Reply(status=self.models_status).error_body(), status=self.models_status)
            data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in self.models]
            return web.json_response({"object": "list", "data": data})
        finally:
            self._finish(rec, "completed")

    async def _handle_other(self, request: web.Request) -> web.StreamResponse:
        rec = await self._recorded(request)
        self._finish(rec, "completed")
        return web.json_response(
            Reply(
                status=404, error={"error": {"message": f"Unknown path {request.path}", "type": "invalid_request_error", "param": None, "code": "unknown_url"}}
            ).error_body(),
            status=404,
        )

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self._recorded(request)
        body = rec.body
        try:
            reply = self._pick(body)
            rec.reply = reply
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.drop:
                await self._reset_connection(request, rec, settle=0.0)
                raise asyncio.CancelledError  # nothing more to send; aiohttp must not answer either
            if reply.raw_body is not None:
                response = web.Response(body=reply.raw_body, status=reply.status, headers={"content-type": reply.content_type, **reply.headers})
            elif reply.status != 200:
                response = web.json_response(reply.error_body(), status=reply.status, headers=reply.headers)
            elif not isinstance(body, dict):
                response = web.json_response(Reply(status=400).error_body(), status=400)
            else:
                stream = body.get("stream") is True if reply.stream is None else reply.stream
                if stream:
                    return await self._stream(request, rec, body, reply)
                response = web.json_response(self._completion(body, reply), headers=reply.headers, dumps=json.dumps)
            await response.prepare(request)
            await response.write_eof()
            self._finish(rec, "completed")
            return response
        except (asyncio.CancelledError, ConnectionError):
            self._finish(rec, "disconnected")
            raise
        except Exception as exc:
            with self._lock:
                self.errors.append(exc)
            raise
        finally:
            # Anything else that ended the handler early (a bug in a responder,
            # say) is recorded as such; it does not count as a disconnect.
            self._finish(rec, "error")

    # ------------------------------------------------------------------ bodies

    def _choice_count(self, body: dict[str, Any]) -> int:
        n = body.get("n")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1

    def _calls(self, reply: Reply, choice: int) -> list[dict[str, Any]]:
        calls = []
        for j, call in enumerate(reply.tool_calls):
            args = call.get("arguments", "{}")
            if not reply.dict_arguments and not isinstance(args, str):
                args = json.dumps(args)
            calls.append(
                {
                    "id": call.get("id") or f"call_{choice}_{j}_{os.urandom(6).hex()}",
                    "type": "function",
                    "function": {"name": call["name"], "arguments": args},
                }
            )
        return calls

    def _usage(self, body: dict[str, Any], reply: Reply, n: int) -> dict[str, Any]:
        if reply.usage is not None:
            return reply.usage
        prompt = sum(word_count(_message_text(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, dict))
        completion = 0
        for i in range(n):
            completion += word_count(reply.content_for(i)) + word_count(reply.reasoning_content)
            for call in reply.tool_calls:
                args = call.get("arguments", "")
                completion += word_count(args if isinstance(args, str) else json.dumps(args)) + 1
        prompt = max(prompt, 1)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _logprobs(self, body: dict[str, Any], reply: Reply, text: str | None) -> Any:
        if reply.logprobs is not AUTO:
            return reply.logprobs
        if body.get("logprobs") is not True:
            return None
        top = body.get("top_logprobs") or 0
        return {"content": _logprob_entries(text or "", top), "refusal": None}

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        n = self._choice_count(body)
        choices = []
        for i in range(n):
            content = reply.content_for(i)
            message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": reply.refusal}
            if reply.reasoning_content is not None:
                message["reasoning_content"] = reply.reasoning_content
            calls = self._calls(reply, i)
            if calls:
                message["tool_calls"] = calls
            message.update(reply.extra_message)
            choices.append({"index": i, "message": message, "logprobs": self._logprobs(body, reply, content), "finish_reason": reply.resolved_finish_reason()})
        out: dict[str, Any] = {
            "id": reply.completion_id or "chatcmpl-fake" + os.urandom(8).hex(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or body.get("model"),
            "choices": choices,
        }
        if reply.system_fingerprint is not None:
            out["system_fingerprint"] = reply.system_fingerprint
        if reply.send_usage:
            out["usage"] = self._usage(body, reply, n)
        return out

    def _choice_deltas(self, body: dict[str, Any], reply: Reply, i: int) -> list[tuple[dict[str, Any], str | None, Any]]:
        """(delta, finish_reason, logprobs) for every chunk of choice ``i``."""
        content = reply.content_for(i)
        logprobs_on = reply.logprobs is AUTO and body.get("logprobs") is True
        top = body.get("top_logprobs") or 0
        per = reply.chunk_tokens if isinstance(reply.chunk_tokens, int) else 1
        out: list[tuple[dict[str, Any], str | None, Any]] = []
        out.append(({"role": "assistant", "content": "" if content is not None else None, "refusal": None}, None, None))
        if reply.reasoning_content:
            for piece in _split_words(reply.reasoning_content, per):
                out.append(({"reasoning_content": piece}, None, None))
        if content:
            pieces = list(reply.chunk_tokens) if isinstance(reply.chunk_tokens, list) else _split_words(content, per)
            for k, piece in enumerate(pieces):
                delta: dict[str, Any] = {"content": piece}
                if k == 0 and reply.extra_message:
                    delta.update(reply.extra_message)
                lp = {"content": _logprob_entries(piece, top), "refusal": None} if logprobs_on else None
                out.append((delta, None, lp))
        elif reply.extra_message:
            out.append((dict(reply.extra_message), None, None))
        if reply.refusal:
            for piece in _split_words(reply.refusal, per):
                out.append(({"refusal": piece}, None, None))
        for j, call in enumerate(self._calls(reply, i)):
            function = call["function"]
            args = function["arguments"]
            first = {"index": j, "id": call["id"], "type": "function", "function": {"name": function["name"], "arguments": ""}}
            if not isinstance(args, str):
                first["function"]["arguments"] = args  # dict_arguments: the non-compliant shape, whole
                out.append(({"tool_calls": [first]}, None, None))
                continue
            out.append(({"tool_calls": [first]}, None, None))
            for fragment in _split_n(args, reply.arg_chunks):
                if fragment:
                    out.append(({"tool_calls": [{"index": j, "function": {"arguments": fragment}}]}, None, None))
        out.append(({}, reply.resolved_finish_reason(), None))
        return out

    def _stream_events(self, body: dict[str, Any], reply: Reply) -> list[dict[str, Any] | bytes]:
        if reply.chunks is not None:
            return list(reply.chunks)
        n = self._choice_count(body)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        envelope: dict[str, Any] = {
            "id": reply.completion_id or "chatcmpl-fake" + os.urandom(8).hex(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": reply.model or body.get("model"),
        }
        if reply.system_fingerprint is not None:
            envelope["system_fingerprint"] = reply.system_fingerprint
        per_choice = [self._choice_deltas(body, reply, i) for i in range(n)]
        events: list[dict[str, Any] | bytes] = []
        longest = max(len(c) for c in per_choice)
        for position in range(longest):  # interleave the choices like OpenAI does
            for i, deltas in enumerate(per_choice):
                if position < len(deltas):
                    delta, finish, lp = deltas[position]
                    chunk = {**envelope, "choices": [{"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish}]}
                    if include_usage:
                        chunk["usage"] = None
                    events.append(chunk)
        if include_usage and reply.send_usage:
            events.append({**envelope, "choices": [], "usage": self._usage(body, reply, n)})
        return events

    async def _stream(
        self,
        request: web.Request,
        rec: RecordedRequest,
        body: dict[str, Any],
        reply: Reply,
        events: list[dict[str, Any] | bytes] | None = None,
        *,
        named: bool = False,
    ) -> web.StreamResponse:
        """Write ``events`` as SSE; ``named``: each dict as ``event: <type>`` and ``data:`` (the Responses API), no ``[DONE]``."""
        response = web.StreamResponse(status=200, headers={"content-type": "text/event-stream", "cache-control": "no-cache", **reply.headers})
        await response.prepare(request)
        if events is None:
            events = self._stream_events(body, reply)
        for k, event in enumerate(events):
            if reply.break_after is not None and k >= reply.break_after:
                await self._reset_connection(request, rec)
                return response
            if k and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            data = event if isinstance(event, bytes) else b"data: " + json.dumps(event).encode() + b"\n\n"
            if named and isinstance(event, dict):
                data = b"event: " + str(event.get("type")).encode() + b"\n" + data
            await response.write(data)
            rec.chunks_sent += 1
        if reply.break_after is not None and reply.break_after >= len(events):
            await self._reset_connection(request, rec)
            return response
        if reply.send_done and not named:
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self._finish(rec, "completed")
        return response

    async def _reset_connection(self, request: web.Request, rec: RecordedRequest, settle: float = 0.1) -> None:
        # Give the bytes already written time to reach the client, then send
        # an RST instead of a FIN: the mid-stream "connection reset" case.
        if settle:
            await asyncio.sleep(settle)
        self._finish(rec, "aborted")
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()

    # ------------------------------------------------------------------ embeddings, legacy completions
    #
    # ``POST /v1/embeddings`` and ``POST /v1/completions`` take the same script
    # (queue, responder, default reply) and the same HTTP-level fields as chat
    # (status, error, headers, raw_body, delay, usage, send_usage, model;
    # streaming: chunks, chunk_tokens, chunk_delay, break_after, send_done).
    # Embeddings are :data:`EMBEDDING_DIMS` floats per input (``dimensions``
    # honoured), derived from the input, float or base64 (little-endian
    # float32, as OpenAI sends them); usage counts words (token ids: one each).
    # A completion's text is ``content`` (per prompt and choice), with the
    # prompt in front for ``echo``, legacy ``logprobs`` when asked.

    async def _handle_forwarded(self, request: web.Request) -> web.StreamResponse:
        endpoint = request.path.rsplit("/", 1)[-1]
        if endpoint in self.missing_endpoints:
            return await self._handle_other(request)
        rec = await self._recorded(request)
        body = rec.body
        try:
            reply = self._pick(body)
            rec.reply = reply
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.raw_body is not None:
                response = web.Response(body=reply.raw_body, status=reply.status, headers={"content-type": reply.content_type, **reply.headers})
            elif reply.status != 200:
                response = web.json_response(reply.error_body(), status=reply.status, headers=reply.headers)
            elif not isinstance(body, dict):
                response = web.json_response(Reply(status=400).error_body(), status=400)
            elif endpoint == "embeddings":
                response = web.json_response(self._embeddings(body, reply), headers=reply.headers, dumps=json.dumps)
            elif body.get("stream") is True if reply.stream is None else reply.stream:
                return await self._stream(request, rec, body, reply, self._text_completion_events(body, reply))
            else:
                response = web.json_response(self._text_completion(body, reply), headers=reply.headers, dumps=json.dumps)
            await response.prepare(request)
            await response.write_eof()
            self._finish(rec, "completed")
            return response
        except (asyncio.CancelledError, ConnectionError):
            self._finish(rec, "disconnected")
            raise
        finally:
            self._finish(rec, "error")

    @staticmethod
    def _inputs(value: Any) -> list[Any]:
        """An ``input``/``prompt`` as a list of items (a string or a token array each)."""
        if isinstance(value, list) and value and all(isinstance(t, int) for t in value):
            return [value]
        return value if isinstance(value, list) else [value]

    @staticmethod
    def _input_tokens(items: list[Any]) -> int:
        return sum(len(item) if isinstance(item, list) else word_count(str(item)) for item in items)

    def _embeddings(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        items = self._inputs(body.get("input"))
        dims = body.get("dimensions") or EMBEDDING_DIMS
        data = []
        for index, item in enumerate(items):
            seed = sum(json.dumps(item).encode()) + 1
            vector = [round(((seed * (k + 1)) % 997) / 997 - 0.5, 6) for k in range(dims)]
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        out: dict[str, Any] = {"object": "list", "data": data, "model": reply.model or body.get("model")}
        if reply.send_usage:
            tokens = self._input_tokens(items)
            out["usage"] = reply.usage if reply.usage is not None else {"prompt_tokens": tokens, "total_tokens": tokens}
        return out

    def _completion_texts(self, body: dict[str, Any], reply: Reply) -> list[str]:
        prompts = self._inputs(body.get("prompt"))
        texts = []
        for prompt in prompts:
            for i in range(self._choice_count(body)):
                text = reply.content_for(i) or ""
                if body.get("echo") is True:
                    text = (prompt if isinstance(prompt, str) else " ".join(map(str, prompt))) + text
                texts.append(text)
        return texts

    def _completion_usage(self, body: dict[str, Any], reply: Reply, texts: list[str]) -> dict[str, Any]:
        if reply.usage is not None:
            return reply.usage
        prompt = max(1, self._input_tokens(self._inputs(body.get("prompt"))))
        completion = sum(word_count(t) for t in texts)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    @staticmethod
    def _legacy_logprobs(body: dict[str, Any], text: str, offset: int = 0) -> Any:
        top = body.get("logprobs")
        if not isinstance(top, int) or isinstance(top, bool):
            return None
        tokens = re.findall(r"\S+\s*", text)
        offsets, position = [], offset
        for token in tokens:
            offsets.append(position)
            position += len(token)
        return {
            "tokens": tokens,
            "token_logprobs": [-0.25] * len(tokens),
            "top_logprobs": [{token: -0.25, **{f"alt{k}": -3.0 - k for k in range(1, top)}} for token in tokens],
            "text_offset": offsets,
        }

    def _text_completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        texts = self._completion_texts(body, reply)
        choices = [
            {"text": text, "index": i, "logprobs": self._legacy_logprobs(body, text), "finish_reason": reply.resolved_finish_reason()}
            for i, text in enumerate(texts)
        ]
        out: dict[str, Any] = {
            "id": reply.completion_id or "cmpl-fake" + os.urandom(8).hex(),
            "object": "text_completion",
            "created": int(time.time()),
            "model": reply.model or body.get("model"),
            "choices": choices,
        }
        if reply.system_fingerprint is not None:
            out["system_fingerprint"] = reply.system_fingerprint
        if reply.send_usage:
            out["usage"] = self._completion_usage(body, reply, texts)
        return out

    def _text_completion_events(self, body: dict[str, Any], reply: Reply) -> list[dict[str, Any] | bytes]:
        if reply.chunks is not None:
            return list(reply.chunks)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        envelope: dict[str, Any] = {
            "id": reply.completion_id or "cmpl-fake" + os.urandom(8).hex(),
            "object": "text_completion",
            "created": int(time.time()),
            "model": reply.model or body.get("model"),
        }
        if reply.system_fingerprint is not None:
            envelope["system_fingerprint"] = reply.system_fingerprint
        texts = self._completion_texts(body, reply)
        per = reply.chunk_tokens if isinstance(reply.chunk_tokens, int) else 1
        events: list[dict[str, Any] | bytes] = []
        for i, text in enumerate(texts):
            pieces = list(reply.chunk_tokens) if isinstance(reply.chunk_tokens, list) else _split_words(text, per)
            offset = 0
            for piece in [*pieces, ""]:
                finish = None if piece else reply.resolved_finish_reason()
                chunk = {
                    **envelope,
                    "choices": [
                        {"text": piece, "index": i, "logprobs": self._legacy_logprobs(body, piece, offset) if piece else None, "finish_reason": finish}
                    ],
                }
                offset += len(piece)
                if include_usage:
                    chunk["usage"] = None
                events.append(chunk)
        if include_usage and reply.send_usage:
            events.append({**envelope, "choices": [], "usage": self._completion_usage(body, reply, texts)})
        return events

    # ------------------------------------------------------------------ the Responses API
    #
    # ``POST /v1/responses`` speaks the Responses API as OpenAI does, from the
    # same script: ``content`` becomes a ``message`` item with one
    # ``output_text`` part, ``reasoning_content`` a ``reasoning`` item with a
    # summary (streamed as ``response.reasoning_summary_*``), ``tool_calls``
    # ``function_call`` items, ``output_items`` are sent first as they are;
    # ``finish_reason="length"`` ends ``incomplete``. Streamed answers are
    # ``event: <type>`` / ``data: <json>`` pairs with a ``sequence_number``
    # from 0 and no ``[DONE]``; ``chunks`` replaces them (a dict gets its
    # ``event:`` line from its ``type``, bytes go verbatim). HTTP-level fields,
    # ``delay``, ``drop``, ``chunk_delay`` and ``break_after`` work as on chat.
    # A body without ``model`` or ``input`` is a 400, as on OpenAI (what a
    # probe for the endpoint sees); :attr:`missing_endpoints` ``{"responses"}``
    # makes it a 404.

    async def _handle_responses(self, request: web.Request) -> web.StreamResponse:
        if "responses" in self.missing_endpoints:
            return await self._handle_other(request)
        rec = await self._recorded(request)
        body = rec.body
        try:
            if not isinstance(body, dict) or "model" not in body or "input" not in body:
                response = web.json_response(
                    {"error": {"message": "Missing required parameter: 'model'.", "type": "invalid_request_error", "param": "model", "code": None}},
                    status=400,
                )
                await response.prepare(request)
                await response.write_eof()
                self._finish(rec, "completed")
                return response
            reply = self._pick(body)
            rec.reply = reply
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.drop:
                await self._reset_connection(request, rec, settle=0.0)
                raise asyncio.CancelledError
            if reply.raw_body is not None:
                response = web.Response(body=reply.raw_body, status=reply.status, headers={"content-type": reply.content_type, **reply.headers})
            elif reply.status != 200:
                response = web.json_response(reply.error_body(), status=reply.status, headers=reply.headers)
            elif body.get("stream") is True if reply.stream is None else reply.stream:
                return await self._stream(request, rec, body, reply, self._response_events(body, reply), named=True)
            else:
                response = web.json_response(self._response(body, reply, "completed"), headers=reply.headers, dumps=json.dumps)
            await response.prepare(request)
            await response.write_eof()
            self._finish(rec, "completed")
            return response
        except (asyncio.CancelledError, ConnectionError):
            self._finish(rec, "disconnected")
            raise
        finally:
            self._finish(rec, "error")

    def _response_items(self, body: dict[str, Any], reply: Reply) -> list[dict[str, Any]]:
        """The finished output items of ``reply``."""
        items: list[dict[str, Any]] = [dict(item) for item in reply.output_items]
        if reply.reasoning_content:
            items.append({"id": "rs_" + os.urandom(8).hex(), "type": "reasoning", "summary": [{"type": "summary_text", "text": reply.reasoning_content}]})
        content = reply.content_for(0)
        status = "incomplete" if reply.resolved_finish_reason() == "length" else "completed"
        if content:
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": content}
            items.append({"id": "msg_" + os.urandom(8).hex(), "type": "message", "status": status, "content": [part], "role": "assistant"})
        for call in self._calls(reply, 0):
            function = call["function"]
            arguments = function["arguments"] if isinstance(function["arguments"], str) else json.dumps(function["arguments"])
            items.append(
                {
                    "id": "fc_" + os.urandom(8).hex(),
                    "type": "function_call",
                    "status": "completed",
                    "arguments": arguments,
                    "call_id": call["id"],
                    "name": function["name"],
                }
            )
        return items

    def _response_usage(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        if reply.usage is not None:
            return reply.usage
        words: list[str] = []
        _collect_text(body.get("input"), words)
        prompt = max(1, word_count(" ".join(words)) + word_count(body.get("instructions")))
        completion = word_count(reply.content_for(0)) + word_count(reply.reasoning_content)
        completion += sum(word_count(c["function"]["arguments"] if isinstance(c["function"]["arguments"], str) else "x") + 1 for c in self._calls(reply, 0))
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": word_count(reply.reasoning_content)},
            "total_tokens": prompt + completion,
        }

    def _response(self, body: dict[str, Any], reply: Reply, status: str, output: list[dict[str, Any]] | None = None, response_id: str = "") -> dict[str, Any]:
        """The ``response`` object, echoing the request's settings as OpenAI does."""
        if status == "completed" and reply.resolved_finish_reason() == "length":
            status = "incomplete"
        done = status in ("completed", "incomplete")
        return {
            "id": response_id or reply.completion_id or "resp_" + os.urandom(12).hex(),
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "background": False,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": reply.model or body.get("model"),
            "output": (self._response_items(body, reply) if output is None else output) if done else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": self._response_usage(body, reply) if done and reply.send_usage else None,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

    def _response_events(self, body: dict[str, Any], reply: Reply) -> list[dict[str, Any] | bytes]:
        """The stream OpenAI sends for ``reply``, every event with its ``sequence_number``."""
        if reply.chunks is not None:
            return list(reply.chunks)
        response_id = reply.completion_id or "resp_" + os.urandom(12).hex()
        per = reply.chunk_tokens if isinstance(reply.chunk_tokens, int) else 1
        events: list[dict[str, Any]] = []

        def add(kind: str, **fields: Any) -> None:
            events.append({"type": kind, "sequence_number": len(events), **fields})

        add("response.created", response=self._response(body, reply, "in_progress", response_id=response_id))
        add("response.in_progress", response=self._response(body, reply, "in_progress", response_id=response_id))
        items = self._response_items(body, reply)
        for index, item in enumerate(items):
            where = {"item_id": item["id"], "output_index": index}
            kind = item["type"]
            if kind == "message":
                text = item["content"][0]["text"]
                add("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []})
                add("response.content_part.added", **where, content_index=0, part={"type": "output_text", "annotations": [], "logprobs": [], "text": ""})
                pieces = list(reply.chunk_tokens) if isinstance(reply.chunk_tokens, list) else _split_words(text, per)
                for piece in pieces:
                    add("response.output_text.delta", **where, content_index=0, delta=piece, logprobs=[])
                add("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
                add("response.content_part.done", **where, content_index=0, part=item["content"][0])
            elif kind == "reasoning":
                text = item["summary"][0]["text"]
                add("response.output_item.added", output_index=index, item={**item, "summary": []})
                add("response.reasoning_summary_part.added", **where, summary_index=0, part={"type": "summary_text", "text": ""})
                for piece in _split_words(text, per):
                    add("response.reasoning_summary_text.delta", **where, summary_index=0, delta=piece)
                add("response.reasoning_summary_text.done", **where, summary_index=0, text=text)
                add("response.reasoning_summary_part.done", **where, summary_index=0, part={"type": "summary_text", "text": text})
            elif kind == "function_call":
                add("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "arguments": ""})
                for fragment in _split_n(item["arguments"], reply.arg_chunks):
                    if fragment:
                        add("response.function_call_arguments.delta", **where, delta=fragment)
                add("response.function_call_arguments.done", **where, name=item["name"], arguments=item["arguments"])
            else:
                add("response.output_item.added", output_index=index, item={**item, "status": "in_progress"})
            add("response.output_item.done", output_index=index, item=item)
        final = self._response(body, reply, "completed", output=items, response_id=response_id)
        add(f"response.{final['status']}", response=final)
        return list(events)


def _collect_text(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for entry in value:
            _collect_text(entry, out)
    elif isinstance(value, dict):
        for key in ("text", "content", "output"):
            if key in value:
                _collect_text(value[key], out)
