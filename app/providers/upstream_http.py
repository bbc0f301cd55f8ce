"""HTTP/1.1 to upstreams: a keep-alive connection pool on asyncio protocols, parsed by httptools.

Every provider talks to its upstream through one :class:`UpstreamClient`. It
is the proxy's hot path, and measured on this 2-core machine against the
fake upstream at concurrency 64 (``bench/upstream_client_cpu.py``), an
aiohttp session cost 78-98 us of CPU per plain request and this client
13-14 us: one protocol object per connection, llhttp (the C parser Node
uses, through httptools, which uvicorn already brings) calling back
straight into the exchange, and the request written in one ``write``.
Streams gain the same way: each read goes from the socket to the caller
without aiohttp's stream reader in between.

What an upstream sends is hostile until parsed: the status line and
headers are bounded (:data:`MAX_HEADER_BYTES`), a plain body is bounded by
the caller's limit or :data:`MAX_BODY_BYTES`, a stream's buffer pauses the
socket past :data:`HIGH_WATER` unread bytes, and every wait is under a
timeout: ``timeout`` for a whole exchange, ``read_timeout`` for the gap
between two reads of a stream. Malformed HTTP ends the exchange with
:class:`UpstreamBrokenError` and the connection is closed.

A connection goes back to the pool only after a complete response the
upstream let us keep (``should_keep_alive``); anything else (an error, a
response read in part, a caller that gave up) closes it, which is how an
upstream learns its client went away. A request is never retried here: an
upstream that read it may bill it.

Proxies from the environment (``HTTP_PROXY``) are ignored on purpose: an
operator's shell proxy must not reroute upstream traffic silently. Nothing
asks for compression (``accept-encoding: identity``), so there is no
decompression to bound.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools

__all__ = [
    "HIGH_WATER",
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "UpstreamBodyTooLarge",
    "UpstreamBrokenError",
    "UpstreamClient",
    "UpstreamConnectError",
    "UpstreamHTTPError",
    "UpstreamResponse",
    "UpstreamTimeoutError",
]

#: Status line and headers of one response, together.
MAX_HEADER_BYTES = 64 * 1024
#: A plain (not streamed) body read without a limit of its own.
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Unread bytes of a response past which the socket is paused until the caller catches up.
HIGH_WATER = 1024 * 1024
#: An idle pooled connection older than this is closed rather than reused (aiohttp's keep-alive time).
IDLE_SECONDS = 15.0


class UpstreamHTTPError(Exception):
    """An exchange with an upstream that did not give a complete response."""


class UpstreamConnectError(UpstreamHTTPError):
    """No connection: refused, unresolvable, unreachable, or the TLS handshake failed."""


class UpstreamTimeoutError(UpstreamHTTPError, TimeoutError):
    """The upstream took longer than allowed (to connect, to answer, or between two reads of a stream)."""


class UpstreamBrokenError(UpstreamHTTPError):
    """Connected, then the exchange failed: the connection closed early or the HTTP was malformed."""


class UpstreamBodyTooLarge(UpstreamHTTPError):
    """A body past the caller's limit (the rest is not read)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body larger than {limit} bytes")
        self.limit = limit


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE_VALUE = re.compile(r"[\r\n\0]")


def _check_header(name: str, value: str) -> None:
    # A client's traceparent or an operator's header must not smuggle a line into the request.
    if _TOKEN.fullmatch(name) is None or _UNSAFE_VALUE.search(value) is not None:
        raise ValueError(f"invalid upstream header {name!r}")


def _header_lines(headers: Mapping[str, str]) -> bytes:
    for name, value in headers.items():
        _check_header(name, value)
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")


class UpstreamResponse:
    """One response: status and headers at once, the body read with :meth:`read` or by ``async for``.

    End it with :meth:`release` (the connection is reused when the response
    was read to its end) or :meth:`close` (the connection is dropped).
    """

    __slots__ = (
        "status",
        "headers",
        "_connection",
        "_loop",
        "_chunks",
        "_buffered",
        "_size",
        "_limit",
        "_reading_all",
        "_head_bytes",
        "_done",
        "_error",
        "_waiter",
        "_timer",
        "_deadline",
        "_read_timeout",
        "_last_read",
        "_paused",
        "_header_bytes",
        "_headers_done",
        "_informational",
        "_delimited",
        "_keep_alive",
    )

    def __init__(self, connection: _Connection, loop: asyncio.AbstractEventLoop, deadline: float | None, read_timeout: float | None) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._connection: _Connection | None = connection
        self._loop = loop
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._size = 0
        # Bytes the body may take: a whole-body read sets it (a stream is bounded by its parser, per event).
        self._limit: int | None = None
        # A whole-body read wants every byte: the socket is not paused for it.
        self._reading_all = False
        self._head_bytes = 0
        self._done = False
        self._error: UpstreamHTTPError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = deadline
        self._read_timeout = read_timeout
        self._last_read = loop.time()
        self._paused = False
        self._header_bytes = 0
        self._headers_done = False
        self._informational = False
        # The body ends where the upstream says (a length or chunked), not at the connection's end.
        self._delimited = False
        self._keep_alive = False
        self._timer: asyncio.TimerHandle | None = None
        self._arm()

    # ------------------------------------------------------------------ the caller's side

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters (``application/json``)."""
        value = self.headers.get("content-type")
        if not value:
            return "application/octet-stream"
        return value.partition(";")[0].strip().lower()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (at most ``limit`` bytes, else :class:`UpstreamBodyTooLarge`)."""
        limit = MAX_BODY_BYTES if limit is None else limit
        self._limit = limit
        self._reading_all = True
        if self._size > limit:
            self._fail(UpstreamBodyTooLarge(limit))
        elif self._paused:
            self._resume()
        while not self._done:
            if self._error is not None:
                raise self._error
            await self._wait()
        if self._error is not None:
            raise self._error
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def __aiter__(self) -> UpstreamResponse:
        return self

    async def __anext__(self) -> bytes:
        """What has arrived since the last read (never empty); stops at the end of the body."""
        while True:
            chunks = self._chunks
            if chunks:
                self._chunks, self._buffered = [], 0
                if self._paused:
                    self._resume()
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            await self._wait()

    def release(self) -> None:
        """Done with the response: its connection is pooled again if the body was read to its end, else closed."""
        self._end(reusable=True)

    def close(self) -> None:
        """Done with the response, read or not: its connection is closed."""
        self._end(reusable=False)

    def _end(self, *, reusable: bool) -> None:
        connection = self._connection
        if connection is None:
            return
        self._connection = None
        self._disarm()
        connection.finish(reusable and self._done and self._error is None and self._keep_alive)

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamHTTPError) -> None:
        if self._error is None:
            self._error = error
        connection = self._connection
        if connection is not None:
            connection.abandon()
        self._disarm()
        self._wake()

    async def wait_headers(self) -> None:
        while not self._headers_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    # ------------------------------------------------------------------ timeouts

    def _arm(self) -> None:
        due = self._deadline
        if self._read_timeout is not None:
            stall = self._last_read + self._read_timeout
            due = stall if due is None else min(due, stall)
        if due is not None:
            self._timer = self._loop.call_at(due, self._expire)

    def _disarm(self) -> None:
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        # One timer per exchange, moved on lazily: resetting it on every read of a stream would cost each chunk a heap push.
        self._timer = None
        if self._done or self._connection is None:
            return
        now = self._loop.time()
        if self._deadline is not None and now >= self._deadline:
            self._fail(UpstreamTimeoutError("the upstream did not answer in time"))
            return
        if self._read_timeout is not None and now - self._last_read >= self._read_timeout and not self._paused:
            self._fail(UpstreamTimeoutError("the upstream stopped sending"))
            return
        if self._paused:
            self._last_read = now  # a slow reader is not a stalled upstream
        self._arm()

    def _resume(self) -> None:
        self._paused = False
        connection = self._connection
        if connection is not None:
            connection.resume()

    # ------------------------------------------------------------------ llhttp's callbacks (through the connection)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEADER_BYTES:
            raise UpstreamBrokenError(f"response headers larger than {MAX_HEADER_BYTES} bytes")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.headers
        if key in headers:
            headers[key] = headers[key] + ", " + text
        else:
            headers[key] = text
        if key == "content-length" or (key == "transfer-encoding" and "chunked" in text.lower()):
            self._delimited = True

    def on_headers_complete(self, status: int, keep_alive: bool) -> None:
        if status < 200:
            # An interim response (100 Continue, 103 Early Hints): the real one follows on the same connection.
            self._informational = True
            self.headers = {}
            self._header_bytes = 0
            self._head_bytes = 0
            self._delimited = False
            return
        self.status = status
        self._keep_alive = keep_alive
        self._headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        size = self._size = self._size + len(body)
        limit = self._limit
        if limit is not None and size > limit:
            raise UpstreamBodyTooLarge(limit)
        self._chunks.append(body)
        buffered = self._buffered = self._buffered + len(body)
        if buffered > HIGH_WATER and not self._paused and not self._reading_all:
            self._paused = True
            connection = self._connection
            if connection is not None:
                connection.pause()
        self._wake()

    def on_message_complete(self, keep_alive: bool) -> None:
        if self._informational:
            self._informational = False
            return
        self._keep_alive = self._keep_alive and keep_alive
        self._done = True
        self._disarm()
        self._wake()

    def on_data(self, now: float, size: int) -> None:
        self._last_read = now
        if not self._headers_done:
            # llhttp calls back only once a line ends: a status line or header that never ends is bounded here.
            self._head_bytes += size

    def head_overflow(self) -> bool:
        """Whether more than :data:`MAX_HEADER_BYTES` came without the end of the headers."""
        return not self._headers_done and self._head_bytes > MAX_HEADER_BYTES

    def on_lost(self) -> None:
        if self._done:
            return
        if self._headers_done and not self._delimited:
            # A body that runs to the end of the connection (no length, not chunked): this is its end.
            self._keep_alive = False
            self.on_message_complete(False)
            return
        self._fail(UpstreamBrokenError("the upstream closed the connection before the response was complete"))


def _time_out(waiter: asyncio.Future[_Connection | None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeoutError("no free connection to the upstream in time"))


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to the upstream; serves one exchange at a time."""

    __slots__ = ("_client", "loop", "transport", "closed", "idle_since", "_parser", "_response", "_reusable")

    def __init__(self, client: UpstreamClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser: Any = None
        self._response: UpstreamResponse | None = None
        self._reusable = True

    # asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None or self._parser is None:
            # Bytes nobody asked for (after a complete response, or while idle): the stream is out of step.
            self._reusable = False
            self._drop()
            return
        response.on_data(self.loop.time(), len(data))
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if response._done:
                # Garbage after a complete response: the response stands, the connection goes.
                self._reusable = False
                self._drop()
                return
            # A callback's own error (headers or body past their bound) comes back as the parser's context.
            cause = exc.__context__
            response._fail(cause if isinstance(cause, UpstreamHTTPError) else UpstreamBrokenError(f"malformed HTTP from the upstream ({exc})"))
            return
        if response.head_overflow():
            response._fail(UpstreamBrokenError(f"response headers larger than {MAX_HEADER_BYTES} bytes"))

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self._response
        if response is not None:
            response.on_lost()
        self._client._forget(self)

    # llhttp's callbacks, forwarded to the exchange in progress. After its response is complete
    # (the parser is let go) whatever follows is a response nobody asked for: the connection is not reused.
    def on_message_begin(self) -> None:
        if self._response is None or self._parser is None:
            self._reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is None or self._parser is None:
            self._reusable = False
            return
        self._response.on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._response is None or self._parser is None:
            self._reusable = False
            return
        self._response.on_headers_complete(self._parser.get_status_code(), self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self._response is None or self._parser is None:
            self._reusable = False
            return
        self._response.on_body(body)

    def on_message_complete(self) -> None:
        response = self._response
        if response is None or self._parser is None:
            self._reusable = False
            return
        response.on_message_complete(self._parser.should_keep_alive())
        if response._done:
            self._parser = None

    # the client's side
    def begin(self, response: UpstreamResponse) -> None:
        self._response = response
        self._parser = httptools.HttpResponseParser(self)

    def finish(self, reusable: bool) -> None:
        """The exchange is over: back to the pool (``reusable``) or closed."""
        self._response = None
        self._parser = None
        if reusable and self._reusable and not self.closed:
            self._client._put_back(self)
        else:
            self._drop()

    def abandon(self) -> None:
        """The exchange failed: the connection cannot be trusted with another one."""
        self._reusable = False
        self._drop()

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _drop(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self._client._forget(self)


class UpstreamClient:
    """Keep-alive HTTP/1.1 connections to one upstream origin (``base_url``'s scheme, host and port).

    ``headers`` go with every request (per-request ones win); ``force_close``
    sends ``connection: close`` and never reuses a connection (for servers
    that close them after an answer without saying so).
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 256,
        connect_timeout: float = 10.0,
        force_close: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream URL must be http(s)://host[:port]/...: {base_url!r}")
        self._tls = parts.scheme == "https"
        self.host = parts.hostname
        default_port = 443 if self._tls else 80
        self.port = parts.port or default_port
        self._origin = f"{parts.scheme}://{parts.netloc}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if self.port == default_port else f"{host}:{self.port}"
        fixed = {"host": authority, "user-agent": "toolrelay", "accept-encoding": "identity"}
        if force_close:
            fixed["connection"] = "close"
        fixed.update({name.lower(): value for name, value in (headers or {}).items()})
        self._fixed = fixed
        self._fixed_lines = _header_lines(fixed)
        self._max = max_connections
        self._connect_timeout = connect_timeout
        self._force_close = force_close
        self._ssl = ssl_context
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._connecting = 0
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send a request and wait for the response's status and headers.

        ``url`` is on this client's origin. ``timeout`` bounds the whole
        exchange (connecting included, until the body is read);
        ``read_timeout`` bounds each wait for bytes, for streams.
        """
        if method == "HEAD":
            # llhttp is not told the method, so it would wait for the body a HEAD answer announces and never sends.
            raise ValueError("HEAD is not supported")
        if not url.startswith(self._origin):
            raise ValueError(f"{url!r} is not on {self._origin}")
        target = url[len(self._origin) :] or "/"
        if target[0] != "/" or any(c in target for c in " \r\n\0"):
            raise ValueError(f"invalid request target {target!r}")
        head = self._head(method, target, body, headers)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        connection = await self._acquire(loop, deadline)
        response = UpstreamResponse(connection, loop, deadline, read_timeout)
        connection.begin(response)
        try:
            transport = connection.transport
            if transport is None or connection.closed:
                raise UpstreamBrokenError("the connection closed before the request was sent")
            transport.write(head + body)
            await response.wait_headers()
        except BaseException:
            response.close()
            raise
        return response

    def _head(self, method: str, target: str, body: bytes, headers: Mapping[str, str] | None) -> bytes:
        lines = self._fixed_lines
        if headers:
            extra: dict[str, str] = {}
            for name, value in headers.items():
                _check_header(name, value)
                extra[name.lower()] = value
            if any(name in self._fixed for name in extra):
                lines = _header_lines({**self._fixed, **extra})
            else:
                lines += "".join(f"{name}: {value}\r\n" for name, value in extra.items()).encode("latin-1")
        length = b"content-length: %d\r\n" % len(body) if body or method == "POST" else b""
        return b"%s %s HTTP/1.1\r\n%s%s\r\n" % (method.encode("ascii"), target.encode("ascii"), lines, length)

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float | None) -> _Connection:
        if self._closed:
            raise UpstreamConnectError("the client is closed")
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.closed or loop.time() - connection.idle_since > IDLE_SECONDS:
                connection.abandon()
                continue
            return connection
        if len(self._open) + self._connecting < self._max:
            self._connecting += 1
            return await self._connect(loop, deadline)
        # At the limit: wait for a pooled connection, or for a slot (handed over already
        # reserved, so a request that arrives meanwhile cannot take it too).
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        timer = None if deadline is None else loop.call_at(deadline, _time_out, waiter)
        try:
            handed = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed something just as this request gave up: pass it on.
                got = waiter.result()
                if got is not None:
                    self._put_back(got)
                else:
                    self._free_slot()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if handed is not None:
            return handed
        return await self._connect(loop, deadline)

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float | None) -> _Connection:
        """Open a connection in a slot the caller reserved (counted in ``_connecting``)."""
        limit = self._connect_timeout if deadline is None else min(self._connect_timeout, max(0.0, deadline - loop.time()))
        connection: _Connection | None = None
        try:
            context = self._ssl_context() if self._tls else None
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self, loop), self.host, self.port, ssl=context, server_hostname=self.host if context else None),
                limit,
            )
        except TimeoutError:
            raise UpstreamTimeoutError("could not connect to the upstream in time") from None
        except OSError as exc:
            raise UpstreamConnectError(exc.strerror or str(exc) or type(exc).__name__) from None
        finally:
            if connection is None or connection.closed:
                self._free_slot()
            else:
                self._connecting -= 1
                self._open.add(connection)
        if connection is None or connection.closed:
            raise UpstreamBrokenError("the upstream closed the connection at once")
        return connection

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # The system's CAs, as aiohttp and httpx use by default; made once (loading them takes ~10 ms).
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _put_back(self, connection: _Connection) -> None:
        if connection.closed or self._closed or self._force_close:
            connection.abandon()
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since = connection.loop.time()
        self._idle.append(connection)

    def _free_slot(self) -> None:
        """A reserved slot is not used (a connect failed, its waiter left): the first waiter gets it, reserved."""
        self._connecting -= 1
        self._hand_slot()

    def _hand_slot(self) -> None:
        if self._closed:
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self._connecting += 1
                waiter.set_result(None)
                return

    def _forget(self, connection: _Connection) -> None:
        """A connection closed: its slot is free for a waiter to connect again."""
        if connection in self._open:
            self._open.discard(connection)
            self._hand_slot()
        try:
            self._idle.remove(connection)
        except ValueError:
            pass

    async def close(self) -> None:
        """Close every connection; requests after this fail with :class:`UpstreamConnectError`."""
        self._closed = True
        for connection in [*self._idle, *self._open]:
            connection.abandon()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamConnectError("the client is closed"))
