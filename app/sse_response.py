"""A server-sent event stream, sent from the handler's own task.

Litestar's :class:`~litestar.response.Stream` sends the body from a new task
in an anyio task group, beside a second task listening for the client's
disconnect: per stream that is a task group, a spawned task and a cancel
scope, and the first event goes out one event-loop turn after the headers,
which at concurrency 64 is the time to first token's tail. Here the
headers and the events (the first is usually ready) go out from the
handler's task, and the disconnect is watched by :class:`DisconnectWatch`
(the same watcher non-streamed answers use, started only for a stream that
lasts), which cancels this task when the client leaves; the stream then
ends quietly, as Litestar's does. The request's end (release, books) stays
with the ASGI layer (``RequestInfo.ending``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from litestar.response import Response

from toolrelay.app.disconnect import DisconnectWatch
from toolrelay.app.json_response import set_bare

if TYPE_CHECKING:
    from litestar.types import Receive, Scope, Send

__all__ = ["SSEStream"]

_EVENT_STREAM = (b"content-type", b"text/event-stream; charset=utf-8")
_END = {"type": "http.response.body", "body": b"", "more_body": False}


class SSEStream(Response[bytes]):
    """``chunks`` (SSE bytes, each one or more whole events) with ``headers`` (name to value)."""

    __slots__ = ("chunks",)

    def __init__(self, chunks: AsyncIterator[bytes], *, headers: Mapping[str, str] | None = None) -> None:
        self.chunks = chunks
        set_bare(self, b"", 200, headers, "text/event-stream")

    def to_asgi_response(self, app: Any, request: Any, **_: Any) -> _SendStream:  # type: ignore[override]
        return _SendStream(self.chunks, self.headers)


class _SendStream:
    """The ASGI app that sends one event stream."""

    __slots__ = ("_chunks", "_start")

    def __init__(self, chunks: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        raw = [_EVENT_STREAM, *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())]
        self._chunks = chunks
        self._start = {"type": "http.response.start", "status": 200, "headers": raw}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(self._start)  # type: ignore[arg-type]
        watch = DisconnectWatch(scope, receive, mark=False)
        try:
            async for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send(_END)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            # The client left: nobody reads the rest. The ASGI layer closes the body and the books.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        finally:
            watch.stop()
