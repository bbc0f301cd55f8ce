"""A scripted Anthropic Messages API server on 127.0.0.1, for the ``kind = "anthropic"`` upstream.

:class:`FakeAnthropic` answers ``POST /v1/messages`` and ``GET /v1/models``
the way Anthropic's API reference documents them, byte for byte where the
client could tell: ``x-api-key`` and ``anthropic-version`` headers checked
(401 ``authentication_error`` / 400 ``invalid_request_error``), the body
checked for what the API refuses (no ``max_tokens``, roles that do not
alternate, a ``tool_result`` whose id no preceding ``tool_use`` has, a
``system`` role in ``messages``), errors as
``{"type": "error", "error": {"type", "message"}, "request_id"}`` with a
``request-id`` header, and streams as named SSE events
(``event: message_start\\ndata: {...}\\n\\n``): ``message_start``, then per
content block ``content_block_start``/``content_block_delta``.../
``content_block_stop`` (a ``ping`` after the first start), ``message_delta``
(``stop_reason``, cumulative ``output_tokens``) and ``message_stop``.

Which reply answers: the oldest :meth:`FakeAnthropic.enqueue`\\ d one, else
``responder(body)`` if it returns one, else :attr:`FakeAnthropic.default_reply`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["API_KEY", "FakeAnthropic", "MessagesReply", "RecordedCall"]

#: The key the fake accepts (configure the upstream with it).
API_KEY = "sk-ant-fake-key"
_ids = itertools.count(1)


@dataclass
class MessagesReply:
    """One scripted answer.

    - ``blocks``: content blocks, each ``{"type": "text", "text"}``,
      ``{"type": "thinking", "thinking"}`` or ``{"type": "tool_use", "name",
      "input"[, "id"]}``; default one text block.
    - ``stop_reason``: default ``tool_use`` with tool blocks, else ``end_turn``.
    - ``usage``: overrides of the usage counts (``input_tokens``,
      ``cache_read_input_tokens``, ``cache_creation_input_tokens``,
      ``output_tokens``); defaults are word counts.
    - ``status``/``error_type``/``message``/``headers``: an HTTP error answer.
    - ``error_after``: in a stream, after that many events send an ``error``
      event (``error_type``, ``message``) and end.
    - ``cut_after``: in a stream, stop after that many events (no ``message_stop``).
    """

    blocks: list[dict[str, Any]] = field(default_factory=lambda: [{"type": "text", "text": "Hello from Claude."}])
    stop_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    status: int = 200
    error_type: str = "api_error"
    message: str = "Internal server error"
    headers: dict[str, str] = field(default_factory=dict)
    error_after: int | None = None
    cut_after: int | None = None


@dataclass
class RecordedCall:
    path: str
    headers: dict[str, str]
    body: Any


def _words(value: Any) -> int:
    return len(re.findall(r"\S+", json.dumps(value) if not isinstance(value, str) else value))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": f"req_fake{next(_ids):06d}"}


class FakeAnthropic:
    """The fake on ``127.0.0.1:<free port>``; :attr:`base_url` is what ``[upstreams.x] base_url`` wants."""

    def __init__(self, models: list[str] | None = None) -> None:
        self.models = list(models or ["claude-sonnet-4-5"])
        self.default_reply = MessagesReply()
        self.responder: Callable[[dict[str, Any]], MessagesReply | None] | None = None
        self._queue: deque[MessagesReply] = deque()
        self._calls: list[RecordedCall] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------

    def start(self) -> FakeAnthropic:
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-anthropic", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("FakeAnthropic did not start")
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._loop = self._thread = self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- script and records -------------------------------------------------

    def enqueue(self, *replies: MessagesReply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._calls.clear()
            self.responder = None
            self.default_reply = MessagesReply()

    @property
    def calls(self) -> list[RecordedCall]:
        with self._lock:
            return list(self._calls)

    @property
    def last_body(self) -> dict[str, Any]:
        calls = [c for c in self.calls if c.path == "/v1/messages"]
        assert calls, "the fake Anthropic API received no Messages request"
        return calls[-1].body

    def _pick(self, body: dict[str, Any]) -> MessagesReply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            responder = self.responder
        reply = responder(body) if responder is not None else None
        return reply or self.default_reply

    # -- handlers -----------------------------------------------------------

    def _refuse(self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
        request_id = f"req_fake{next(_ids):06d}"
        body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
        return web.Response(status=status, text=_dumps(body), content_type="application/json", headers={"request-id": request_id, **(headers or {})})

    def _auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("x-api-key") != API_KEY:
            return self._refuse(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._refuse(400, "invalid_request_error", "anthropic-version: header is required")
        return None

    async def _models(self, request: web.Request) -> web.Response:
        with self._lock:
            self._calls.append(RecordedCall(request.path, {k.lower(): v for k, v in request.headers.items()}, None))
        refused = self._auth(request)
        if refused is not None:
            return refused
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in self.models]
        return web.json_response({"data": data, "has_more": False, "first_id": self.models[0], "last_id": self.models[-1]})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            self._calls.append(RecordedCall(request.path, {k.lower(): v for k, v in request.headers.items()}, body))
        refused = self._auth(request)
        if refused is not None:
            return refused
        problem = _invalid(body)
        if problem:
            return self._refuse(400, "invalid_request_error", problem)
        reply = self._pick(body)
        if reply.status != 200:
            return self._refuse(reply.status, reply.error_type, reply.message, reply.headers)
        message = self._message(body, reply)
        if not body.get("stream"):
            return web.Response(text=_dumps(message), content_type="application/json", headers={"request-id": f"req_fake{next(_ids):06d}"})
        return await self._stream(request, message, reply)

    def _message(self, body: dict[str, Any], reply: MessagesReply) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for block in reply.blocks:
            if block["type"] == "tool_use":
                tool_id = block.get("id") or f"toolu_fake{next(_ids):06d}"
                content.append({"type": "tool_use", "id": tool_id, "name": block["name"], "input": block.get("input", {})})
            elif block["type"] == "thinking":
                content.append({"type": "thinking", "thinking": block["thinking"], "signature": "c2lnbmF0dXJl"})
            else:
                content.append({"type": "text", "text": block["text"]})
        stop = reply.stop_reason or ("tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn")
        usage = {
            "input_tokens": _words(body.get("messages")) + _words(body.get("system") or ""),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": sum(_words(b.get("text") or b.get("thinking") or b.get("input")) for b in content),
            **reply.usage,
        }
        return {
            "id": f"msg_fake{next(_ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }

    async def _stream(self, request: web.Request, message: dict[str, Any], reply: MessagesReply) -> web.StreamResponse:
        headers = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "request-id": f"req_fake{next(_ids):06d}"}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]

        def delta(index: int, **fields: Any) -> tuple[str, dict[str, Any]]:
            return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": fields})

        def opened(index: int, **block: Any) -> tuple[str, dict[str, Any]]:
            return ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})

        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                events.append(opened(index, type="text", text=""))
                pieces = re.findall(r"\S+\s*|\s+", block["text"]) or [""]
                events += [delta(index, type="text_delta", text=p) for p in pieces]
            elif block["type"] == "thinking":
                events.append(opened(index, type="thinking", thinking="", signature=""))
                pieces = re.findall(r"\S+\s*|\s+", block["thinking"]) or [""]
                events += [delta(index, type="thinking_delta", thinking=p) for p in pieces]
                events.append(delta(index, type="signature_delta", signature=block["signature"]))
            else:
                events.append(opened(index, type="tool_use", id=block["id"], name=block["name"], input={}))
                arguments = _dumps(block["input"])
                third = max(1, len(arguments) // 3)
                # The first input_json_delta is empty, as the API sends it.
                pieces = ["", *(arguments[i : i + third] for i in range(0, len(arguments), third))]
                events += [delta(index, type="input_json_delta", partial_json=p) for p in pieces]
            if index == 0:
                events.append(("ping", {"type": "ping"}))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        ending = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        events += [
            ("message_delta", {"type": "message_delta", "delta": ending, "usage": {"output_tokens": usage["output_tokens"]}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        for count, (name, data) in enumerate(events):
            if reply.error_after is not None and count == reply.error_after:
                name, data = "error", _error_body(reply.error_type, reply.message)
                await response.write(f"event: {name}\ndata: {_dumps({k: v for k, v in data.items() if k != 'request_id'})}\n\n".encode())
                break
            if reply.cut_after is not None and count == reply.cut_after:
                break
            await response.write(f"event: {name}\ndata: {_dumps(data)}\n\n".encode())
        await response.write_eof()
        return response


def _invalid(body: Any) -> str | None:
    """What the Messages API would refuse in ``body`` (the checks a translation could get wrong)."""
    if not isinstance(body, dict):
        return "request body is not valid JSON"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    seen_tool_uses: set[str] = set()
    previous = None
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if role == previous:
            return 'messages: roles must alternate between "user" and "assistant"'
        previous = role
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in blocks or []:
            if block.get("type") == "text" and not block.get("text"):
                return f"messages.{i}: text content blocks must be non-empty"
            if block.get("type") == "tool_use":
                seen_tool_uses.add(block.get("id"))
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in seen_tool_uses:
                return f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks"
            if block.get("type") == "image" and block.get("source", {}).get("type") not in ("base64", "url"):
                return f"messages.{i}: invalid image source"
    thinking = body.get("thinking")
    if thinking is not None and not (1024 <= thinking.get("budget_tokens", 0) < body["max_tokens"]):
        return "thinking.budget_tokens: must be >= 1024 and less than max_tokens"
    return None
