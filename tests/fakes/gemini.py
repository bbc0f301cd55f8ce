"""A scripted Gemini (Generative Language API) server on 127.0.0.1, for the ``kind = "gemini"`` tests.

:class:`FakeGemini` speaks the REST API as Google documents it:

- ``POST /v1beta/models/{model}:generateContent``: one ``GenerateContentResponse``;
- ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse``: ``text/event-stream``,
  each event ``data: {GenerateContentResponse}`` followed by ``\\r\\n\\r\\n`` (Google's
  framing), no ``[DONE]``: the stream ends with the chunk carrying ``finishReason``
  (and the final cumulative ``usageMetadata``); without ``alt=sse`` a JSON array
  of the same objects, as Google answers;
- ``POST /v1beta/models/{model}:batchEmbedContents``: ``{"embeddings": [{"values": [...]}]}``;
- ``GET /v1beta/models``: ``{"models": [{"name": "models/<id>", "supportedGenerationMethods": [...]}]}``;
- errors: ``{"error": {"code", "message", "status", "details"}}`` with the HTTP status.

The API key must come in the ``x-goog-api-key`` header: a request without it
gets Google's 403 ``PERMISSION_DENIED``, a wrong one the 400 ``API_KEY_INVALID``;
``key_in_url`` counts requests that put a ``key`` in the query string (tests
assert it stays 0).

Script: :meth:`FakeGemini.enqueue` :class:`GeminiReply` objects (oldest
first), else ``responder(body)``, else ``default_reply``. Every request is
recorded (:attr:`requests`, :attr:`last_body`).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

__all__ = ["GEMINI_KEY", "FakeGemini", "GeminiCall", "GeminiReply", "RecordedGemini", "google_error"]

GEMINI_KEY = "gm-upstream-secret"

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def google_error(code: int, message: str, *, status: str | None = None, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Google's error body (google.rpc.Status as JSON)."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status or _STATUS_NAMES.get(code, "UNKNOWN")}
    if details is not None:
        error["details"] = details
    return {"error": error}


@dataclass
class GeminiCall:
    """A ``functionCall`` part: ``name``, ``args``, and optionally its ``thoughtSignature``."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    signature: str | None = None

    def part(self) -> dict[str, Any]:
        part: dict[str, Any] = {"functionCall": {"name": self.name, "args": self.args}}
        if self.signature:
            part["thoughtSignature"] = self.signature
        return part


@dataclass
class GeminiReply:
    """One scripted answer.

    - ``text`` (default ``"Hello from Gemini."`` when there are no ``calls``),
      ``thoughts`` (a ``thought: true`` part first), ``calls``: the parts of
      candidate 0; ``candidates``: explicit part lists, one per candidate
      (overrides the three), e.g. for ``candidateCount``;
    - ``finish_reason`` (``"STOP"``), ``usage`` (``usageMetadata``; default
      computed from word counts), ``prompt_feedback`` (sent with no candidates);
    - ``status``/``error``/``headers``: an HTTP error answer;
    - streaming: text is sent a word per chunk; ``chunks`` replaces the
      generated events (dicts JSON-encoded, bytes verbatim); ``error_after``
      sends an ``{"error": ...}`` event after that many events; ``break_after``
      drops the connection after that many.
    """

    text: str | None = None
    thoughts: str | None = None
    calls: list[GeminiCall] = field(default_factory=list)
    candidates: list[list[dict[str, Any]]] | None = None
    finish_reason: str = "STOP"
    usage: dict[str, Any] | None = None
    prompt_feedback: dict[str, Any] | None = None
    status: int = 200
    error: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[dict[str, Any] | bytes] | None = None
    error_after: int | None = None
    stream_error: dict[str, Any] | None = None
    break_after: int | None = None

    def parts(self) -> list[list[dict[str, Any]]]:
        if self.candidates is not None:
            return self.candidates
        parts: list[dict[str, Any]] = []
        if self.thoughts:
            parts.append({"text": self.thoughts, "thought": True})
        text = self.text if self.text is not None or self.calls else "Hello from Gemini."
        if text:
            parts.append({"text": text})
        parts.extend(call.part() for call in self.calls)
        return [parts]


@dataclass
class RecordedGemini:
    """One request: ``method`` (``generateContent``...), ``model``, ``query``, ``headers`` (lower-case), ``body``."""

    http_method: str
    path: str
    model: str
    method: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


def _words(text: str) -> int:
    return len(text.split())


class FakeGemini:
    """The fake server; :meth:`start`/:meth:`stop`, :meth:`reset` between tests."""

    def __init__(self, models: list[str] | None = None) -> None:
        self.models = list(models or ["gemini-2.5-flash"])
        self.api_key = GEMINI_KEY
        self.default_reply = GeminiReply()
        self.responder: Callable[[dict[str, Any]], GeminiReply | None] | None = None
        self._queue: deque[GeminiReply] = deque()
        self._lock = threading.Lock()
        self.requests: list[RecordedGemini] = []
        self.key_in_url = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeGemini:
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start_server())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-gemini", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("FakeGemini did not start")
        return self

    async def _start_server(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1beta/models/{target}", self._handle_model)
        app.router.add_get("/v1beta/models", self._handle_list)
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
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        self._thread = self._loop = self._runner = None

    @property
    def base_url(self) -> str:
        """The ``base_url`` of a ``kind = "gemini"`` upstream (no version: the provider adds ``/v1beta``)."""
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ script and records

    def enqueue(self, *replies: GeminiReply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.responder = None
            self.default_reply = GeminiReply()
            self.key_in_url = 0

    @property
    def last(self) -> RecordedGemini:
        with self._lock:
            return self.requests[-1]

    @property
    def last_body(self) -> dict[str, Any]:
        return self.last.body

    def _pick(self, body: Any) -> GeminiReply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.responder is not None:
            reply = self.responder(body)
            if reply is not None:
                return reply
        return self.default_reply

    # ------------------------------------------------------------------ handlers

    def _auth_error(self, request: web.Request) -> web.Response | None:
        if "key" in request.query:
            self.key_in_url += 1
        key = request.headers.get("x-goog-api-key")
        if key is None:
            body = google_error(
                403,
                "Method doesn't allow unregistered callers (callers without established identity)."
                " Please use API Key or other form of API consumer identity to call this API.",
            )
            return web.json_response(body, status=403)
        if key != self.api_key:
            details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]
            return web.json_response(google_error(400, "API key not valid. Please pass a valid API key.", details=details), status=400)
        return None

    async def _handle_list(self, request: web.Request) -> web.StreamResponse:
        refused = self._auth_error(request)
        if refused is not None:
            return refused
        methods = ["generateContent", "countTokens", "streamGenerateContent"]
        return web.json_response({"models": [{"name": f"models/{m}", "supportedGenerationMethods": methods} for m in self.models]})

    async def _handle_model(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].partition(":")
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        record = RecordedGemini(request.method, request.path, model, method, dict(request.query), {k.lower(): v for k, v in request.headers.items()}, body)
        with self._lock:
            self.requests.append(record)
        refused = self._auth_error(request)
        if refused is not None:
            return refused
        if not isinstance(body, dict):
            return web.json_response(google_error(400, "Invalid JSON payload received."), status=400)
        if method == "batchEmbedContents":
            return self._embed(body)
        if method not in ("generateContent", "streamGenerateContent"):
            return web.json_response(google_error(404, f"Method not found: {method}"), status=404)
        reply = self._pick(body)
        if reply.status != 200:
            return web.json_response(
                reply.error or google_error(reply.status, f"Fake Gemini error (HTTP {reply.status})."), status=reply.status, headers=reply.headers
            )
        events = reply.chunks if reply.chunks is not None else self._events(body, reply, streaming=method == "streamGenerateContent")
        if method == "generateContent":
            return web.json_response(self._whole(body, reply))
        if request.query.get("alt") != "sse":
            return web.json_response([e for e in events if isinstance(e, dict)])
        return await self._sse(request, events, reply)

    def _usage(self, body: dict[str, Any], reply: GeminiReply) -> dict[str, Any]:
        if reply.usage is not None:
            return reply.usage
        prompt = sum(_words(p.get("text", "")) for c in body.get("contents", []) for p in c.get("parts", []))
        prompt += sum(_words(p.get("text", "")) for p in (body.get("systemInstruction") or {}).get("parts", []))
        out = thoughts = 0
        for parts in reply.parts():
            for part in parts:
                words = _words(part.get("text", "")) + (len(part["functionCall"].get("args", {})) if "functionCall" in part else 0)
                if part.get("thought"):
                    thoughts += words
                else:
                    out += words
        usage = {"promptTokenCount": prompt, "candidatesTokenCount": out, "totalTokenCount": prompt + out + thoughts}
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return usage

    def _whole(self, body: dict[str, Any], reply: GeminiReply) -> dict[str, Any]:
        if reply.prompt_feedback is not None:
            return {"promptFeedback": reply.prompt_feedback, "usageMetadata": self._usage(body, reply), "modelVersion": "fake"}
        candidates = [{"content": {"parts": parts, "role": "model"}, "finishReason": reply.finish_reason, "index": i} for i, parts in enumerate(reply.parts())]
        return {"candidates": candidates, "usageMetadata": self._usage(body, reply), "modelVersion": "fake", "responseId": "fake-response"}

    def _events(self, body: dict[str, Any], reply: GeminiReply, *, streaming: bool) -> list[dict[str, Any] | bytes]:
        if reply.prompt_feedback is not None:
            return [self._whole(body, reply)]
        usage = self._usage(body, reply)
        pieces: list[list[tuple[int, dict[str, Any]]]] = []
        for i, parts in enumerate(reply.parts()):
            for part in parts:
                if "text" in part:
                    words = part["text"].split(" ")
                    for k, word in enumerate(words):
                        piece = {**part, "text": word + (" " if k < len(words) - 1 else "")}
                        pieces.append([(i, piece)])
                else:
                    pieces.append([(i, part)])
        events: list[dict[str, Any] | bytes] = []
        for chunk in pieces:
            candidates = [{"content": {"parts": [part], "role": "model"}, "index": i} for i, part in chunk]
            events.append(
                {
                    "candidates": candidates,
                    "usageMetadata": {"promptTokenCount": usage["promptTokenCount"], "totalTokenCount": usage["promptTokenCount"]},
                    "modelVersion": "fake",
                }
            )
        last = [{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": reply.finish_reason, "index": i} for i in range(len(reply.parts()))]
        events.append({"candidates": last, "usageMetadata": usage, "modelVersion": "fake"})
        return events

    async def _sse(self, request: web.Request, events: list[dict[str, Any] | bytes], reply: GeminiReply) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"content-type": "text/event-stream", **reply.headers})
        await response.prepare(request)
        for n, event in enumerate(events):
            if reply.error_after is not None and n == reply.error_after:
                error = reply.stream_error or google_error(
                    500, "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
                )
                await response.write(b"data: " + orjson.dumps(error) + b"\r\n\r\n")
                return response
            if reply.break_after is not None and n == reply.break_after:
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return response
            await response.write(event if isinstance(event, bytes) else b"data: " + orjson.dumps(event) + b"\r\n\r\n")
        await response.write_eof()
        return response

    def _embed(self, body: dict[str, Any]) -> web.Response:
        embeddings = []
        for i, request in enumerate(body.get("requests") or []):
            dims = request.get("outputDimensionality") or 4
            text = " ".join(p.get("text", "") for p in request["content"]["parts"])
            embeddings.append({"values": [round(0.25 * (i + 1) + 0.01 * k + 0.001 * len(text), 6) for k in range(dims)]})
        return web.json_response({"embeddings": embeddings})
