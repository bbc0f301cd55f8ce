"""The upstream HTTP/1.1 client (app/providers/upstream_http.py) against raw loopback servers scripted byte by byte.

Every upstream here is an ``asyncio.start_server`` on 127.0.0.1 whose handler
writes exact bytes, so framing, keep-alive, bounds, timeouts and broken
exchanges are checked on real sockets with no double of the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fakes.server import closed_port
from fakes.tls import self_signed_certificate
from toolrelay.app.errors import OpenAIError
from toolrelay.app.events import Failure
from toolrelay.app.providers.base import UpstreamCall
from toolrelay.app.providers.openai import OpenAIProvider
from toolrelay.app.providers.upstream_http import (
    HIGH_WATER,
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    UpstreamBodyTooLarge,
    UpstreamBrokenError,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamResponse,
    UpstreamTimeoutError,
)
from toolrelay.app.settings import UpstreamSettings

#: The most one socket read hands the protocol (asyncio's selector transport reads 256 KiB at a time).
READ_SIZE = 256 * 1024


def ok(body: bytes = b"ok", *extra: bytes) -> bytes:
    """A complete keep-alive 200 with a Content-Length body (``extra``: more header lines)."""
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), b"".join(line + b"\r\n" for line in extra), body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
#: 80 headers of 1 kB each: past MAX_HEADER_BYTES together, none alone.
HEADER_BOMB = b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 1000) for i in range(80)) + b"content-length: 2\r\n\r\n{}"


class Conn:
    """One accepted connection of a :class:`RawUpstream`."""

    def __init__(self, upstream: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.upstream = upstream
        self.reader = reader
        self.writer = writer

    async def read_request(self) -> bytes | None:
        """The next request's head and body (by its content-length), or None at the client's EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        request = head + (await self.reader.readexactly(length) if length else b"")
        self.upstream.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def wait_eof(self) -> bool:
        """Whether the client closed its side (reads and drops anything else it sends)."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        return True


Handler = Callable[[Conn], Awaitable[None]]


class RawUpstream:
    """A loopback TCP server running ``handler`` for each connection; it counts them (in total and at once)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.active = 0
        self.max_active = 0
        self.requests: list[bytes] = []
        self.url = ""
        self._tasks: set[asyncio.Task[Any]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.handler(Conn(self, reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # cancelled: the test is over (asyncio's stream callback would log a cancelled handler)
        finally:
            self.active -= 1
            writer.close()
            self._tasks.discard(task)


@contextlib.asynccontextmanager
async def raw_upstream(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream(handler)
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    upstream.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    try:
        yield upstream
    finally:
        server.close()
        for task in list(upstream._tasks):
            task.cancel()
        await asyncio.gather(*upstream._tasks, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def serving(handler: Handler, **client_options: Any) -> AsyncIterator[tuple[RawUpstream, UpstreamClient]]:
    """A raw upstream and a client on it (closed at the end)."""
    async with raw_upstream(handler) as upstream:
        client = UpstreamClient(upstream.url, **client_options)
        try:
            yield upstream, client
        finally:
            await client.close()


def answering(*replies: bytes, close: bool = False) -> Handler:
    """A handler answering each request, on whichever connection, with the next of ``replies`` (the last repeats)."""
    index = 0

    async def handler(conn: Conn) -> None:
        nonlocal index
        while await conn.read_request() is not None:
            reply = replies[min(index, len(replies) - 1)]
            index += 1
            await conn.send(reply)
            if close:
                return

    return handler


def sending(data: bytes, *, then_wait: bool = True) -> Handler:
    """A handler that reads one request, sends ``data``, then holds the connection open (or closes it)."""

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(data)
        if then_wait:
            await conn.wait_eof()

    return handler


async def get(client: UpstreamClient, path: str = "/x", **options: Any) -> tuple[UpstreamResponse, bytes]:
    """A GET read to its end and released."""
    options.setdefault("timeout", 5.0)
    response = await client.request("GET", client._origin + path, **options)
    try:
        return response, await response.read()
    finally:
        response.release()


async def settle() -> None:
    """Long enough on loopback for a close or an EOF to reach the other side's protocol."""
    await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- 1. framing, status, headers


@pytest.mark.parametrize(
    ("reply", "close", "status", "body"),
    [
        pytest.param(ok(b"hello"), False, 200, b"hello", id="content-length"),
        pytest.param(CHUNKED_HEAD + chunk(b"hel") + chunk(b"lo wor") + chunk(b"ld") + LAST_CHUNK, False, 200, b"hello world", id="chunked"),
        pytest.param(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nup to the end", True, 200, b"up to the end", id="until-close"),
        pytest.param(b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n", False, 204, b"", id="204"),
        pytest.param(b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope", False, 404, b"nope", id="404"),
    ],
)
async def test_body_framings_read_to_their_end(reply: bytes, close: bool, status: int, body: bytes) -> None:
    async with serving(answering(reply, close=close)) as (_, client):
        response, read = await get(client)
        assert (response.status, read) == (status, body)


async def test_headers_lower_cased_repeated_ones_joined_and_content_type() -> None:
    reply = ok(b"{}", b"Content-Type: Application/JSON; charset=utf-8", b"Set-Cookie: a=1", b"set-cookie: b=2", b"X-Request-ID: r1")
    async with serving(answering(reply)) as (_, client):
        response, _ = await get(client)
    assert response.headers["set-cookie"] == "a=1, b=2"
    assert response.headers["x-request-id"] == "r1"
    assert response.headers["content-type"] == "Application/JSON; charset=utf-8"
    assert response.content_type == "application/json"


async def test_content_type_defaults_to_octet_stream() -> None:
    async with serving(answering(ok())) as (_, client):
        response, _ = await get(client)
    assert response.content_type == "application/octet-stream"


async def test_request_bytes_on_the_wire() -> None:
    async with serving(answering(ok()), headers={"Authorization": "Bearer k", "User-Agent": "ua"}) as (upstream, client):
        response = await client.request("POST", upstream.url + "/v1/chat?a=1", body=b'{"a":1}', headers={"X-Trace": "t", "user-agent": "mine"}, timeout=5)
        await response.read()
        response.release()
    port = upstream.url.rsplit(":", 1)[1]
    head, _, body = upstream.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat?a=1 HTTP/1.1"
    assert set(lines[1:]) == {
        b"host: 127.0.0.1:" + port.encode(),
        b"user-agent: mine",
        b"accept-encoding: identity",
        b"authorization: Bearer k",
        b"x-trace: t",
        b"content-length: 7",
    }
    assert body == b'{"a":1}'


# --------------------------------------------------------------------------- 2. keep-alive


async def test_sequential_requests_share_one_connection() -> None:
    async with serving(answering(ok(b"a"), ok(b"b"), ok(b"c"))) as (upstream, client):
        bodies = [(await get(client))[1] for _ in range(3)]
    assert bodies == [b"a", b"b", b"c"]
    assert upstream.accepted == 1


async def test_force_close_opens_a_connection_per_request_and_says_so() -> None:
    async with serving(answering(ok()), force_close=True) as (upstream, client):
        for _ in range(3):
            await get(client)
    assert upstream.accepted == 3
    assert all(b"\r\nconnection: close\r\n" in request for request in upstream.requests)


async def test_connection_close_answer_is_not_reused() -> None:
    # The server says close but keeps the socket open: the client must not send on it again.
    async with serving(answering(ok(b"x", b"Connection: close"))) as (upstream, client):
        await get(client)
        await get(client)
    assert upstream.accepted == 2


async def test_idle_connection_closed_by_the_server_is_not_reused() -> None:
    async with serving(answering(ok(), close=True)) as (upstream, client):
        await get(client)
        await settle()
        response, body = await get(client)
    assert (response.status, body) == (200, b"ok")
    assert upstream.accepted == 2


async def test_closed_client_refuses_requests() -> None:
    async with serving(answering(ok())) as (upstream, client):
        await get(client)
        await client.close()
        with pytest.raises(UpstreamConnectError):
            await get(client)
    assert upstream.accepted == 1


# --------------------------------------------------------------------------- 3. streaming


async def test_stream_chunks_arrive_as_sent_and_end_cleanly() -> None:
    parts = [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]
    gates = [asyncio.Event() for _ in parts]

    async def handler(conn: Conn) -> None:
        while await conn.read_request() is not None:
            await conn.send(CHUNKED_HEAD)
            for part, gate in zip(parts, gates, strict=True):
                await conn.send(chunk(part))
                await gate.wait()  # the next part only after the client has this one
            await conn.send(LAST_CHUNK)

    async with serving(handler) as (upstream, client):
        response = await client.request("POST", upstream.url + "/s", body=b"{}", read_timeout=5)
        received = []
        for gate in gates:
            received.append(await asyncio.wait_for(anext(response), 2))
            gate.set()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(response), 2)
        response.release()
        for gate in gates:
            gate.clear()
            gate.set()
        response, _ = await get(client)
        assert response.status == 200
    assert received == parts
    assert upstream.accepted == 1  # the stream ended cleanly: its connection was reused


# --------------------------------------------------------------------------- 4. bounds


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(HEADER_BOMB, id="many-headers"),
        pytest.param(b"HTTP/1.1 200 OK\r\nx-big: " + b"v" * (MAX_HEADER_BYTES + 1) + b"\r\ncontent-length: 0\r\n\r\n", id="one-long-header"),
    ],
)
async def test_headers_past_the_bound_break_the_exchange(head: bytes) -> None:
    async with serving(sending(head)) as (_, client):
        with pytest.raises(UpstreamBrokenError, match="headers larger"):
            await get(client)


def endless(prefix: bytes) -> Handler:
    """A handler that sends ``prefix`` then the same byte forever, never ending the line."""

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(prefix)
        while True:
            await conn.send(b"a" * 16384)
            await asyncio.sleep(0.001)

    return handler


async def test_unterminated_header_line_breaks_the_exchange() -> None:
    async with serving(endless(b"HTTP/1.1 200 OK\r\nx-bomb: ")) as (_, client):
        with pytest.raises(UpstreamBrokenError):
            await asyncio.wait_for(get(client, timeout=None, read_timeout=1.0), 2.0)


async def test_unterminated_status_line_breaks_the_exchange() -> None:
    async with serving(endless(b"HTTP/1.1 200 ")) as (_, client):
        with pytest.raises(UpstreamBrokenError):
            await asyncio.wait_for(get(client, timeout=None, read_timeout=1.0), 2.0)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(ok(b"x" * 1000), id="content-length"),
        pytest.param(CHUNKED_HEAD + chunk(b"x" * 600) + chunk(b"y" * 600) + LAST_CHUNK, id="chunked"),
    ],
)
async def test_body_past_the_read_limit_raises_and_drops_the_connection(reply: bytes) -> None:
    async with serving(answering(reply, ok())) as (upstream, client):
        response = await client.request("GET", upstream.url + "/", timeout=5)
        with pytest.raises(UpstreamBodyTooLarge) as caught:
            await response.read(100)
        response.release()
        assert caught.value.limit == 100
        response, body = await get(client)
    assert (response.status, body) == (200, b"ok")
    assert upstream.accepted == 2


async def test_slow_reader_pauses_the_socket_and_gets_every_byte_in_order() -> None:
    payload = random.Random(21).randbytes(20 * 1024 * 1024)

    async def flood(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(payload))
        for start in range(0, len(payload), 65536):
            await conn.send(payload[start : start + 65536])
        await conn.wait_eof()

    async with serving(flood) as (upstream, client):
        response = await client.request("GET", upstream.url + "/big", read_timeout=5)
        received = bytearray()
        peak = 0
        async for piece in response:
            received += piece
            await asyncio.sleep(0.005)  # a slow consumer: the upstream outpaces it
            peak = max(peak, response._buffered)
        response.release()
    assert len(received) == len(payload)
    assert received == payload
    assert peak > HIGH_WATER // 2, "the reader was never behind: the bound was not exercised"
    assert peak <= HIGH_WATER + READ_SIZE


async def test_stream_longer_than_max_body_bytes_is_read_to_its_end() -> None:
    piece = b"z" * (1024 * 1024)
    total = MAX_BODY_BYTES + len(piece)

    async def long_stream(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        for _ in range(total // len(piece)):
            await conn.send(piece)
        await conn.wait_eof()

    async with serving(long_stream) as (upstream, client):
        response = await client.request("GET", upstream.url + "/", read_timeout=5)
        size = 0
        try:
            async for part in response:
                size += len(part)
        finally:
            response.close()
    assert size == total


# --------------------------------------------------------------------------- 5. timeouts


async def hold(conn: Conn) -> None:
    """Read the request, never answer."""
    await conn.read_request()
    await conn.wait_eof()


@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(hold, id="no-answer"),
        pytest.param(sending(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab"), id="body-stalls"),
    ],
)
async def test_timeout_bounds_the_whole_exchange(handler: Handler) -> None:
    async with serving(handler) as (_, client):
        started = time.monotonic()
        with pytest.raises(UpstreamTimeoutError):
            await get(client, timeout=0.3)
        elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 1.5


async def test_read_timeout_ends_a_stalled_stream() -> None:
    async with serving(sending(CHUNKED_HEAD + chunk(b"first"))) as (upstream, client):
        response = await client.request("POST", upstream.url + "/s", body=b"{}", read_timeout=0.3)
        assert await anext(response) == b"first"
        started = time.monotonic()
        with pytest.raises(UpstreamTimeoutError):
            await anext(response)
        elapsed = time.monotonic() - started
        response.close()
    assert 0.2 <= elapsed < 1.5


async def test_a_stream_that_keeps_sending_outlives_its_read_timeout() -> None:
    async def drip(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(CHUNKED_HEAD)
        for i in range(10):
            await asyncio.sleep(0.1)
            await conn.send(chunk(b"%d;" % i))
        await conn.send(LAST_CHUNK)
        await conn.wait_eof()

    async with serving(drip) as (upstream, client):
        response = await client.request("POST", upstream.url + "/s", body=b"{}", read_timeout=0.3)
        received = b"".join([part async for part in response])
        response.release()
    assert received == b"".join(b"%d;" % i for i in range(10))


async def test_connect_timeout_on_a_listener_whose_backlog_is_full() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        # Fill the accept queue (never accepted): the kernel then drops further SYNs.
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.05)
        probe = socket.socket()
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("the kernel accepted past the backlog: no deterministic connect stall here")
        except TimeoutError:
            pass
        finally:
            probe.close()
        client = UpstreamClient(f"http://127.0.0.1:{port}", connect_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeoutError):
            await client.request("GET", f"http://127.0.0.1:{port}/", timeout=5)
        assert time.monotonic() - started < 1.5
        await client.close()
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_connection_refused() -> None:
    port, holder = closed_port()
    try:
        client = UpstreamClient(f"http://127.0.0.1:{port}")
        with pytest.raises(UpstreamConnectError):
            await client.request("GET", f"http://127.0.0.1:{port}/", timeout=5)
        await client.close()
    finally:
        holder.close()


# --------------------------------------------------------------------------- 6. broken exchanges


@pytest.mark.parametrize(
    ("data", "then_wait"),
    [
        pytest.param(b"", False, id="closed-before-answering"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-le", False, id="closed-mid-headers"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this", False, id="closed-mid-body"),
        pytest.param(CHUNKED_HEAD + chunk(b"part"), False, id="closed-mid-chunked"),
        pytest.param(b"garbage\r\n\r\n", True, id="garbage"),
        pytest.param(b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n", True, id="bad-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n", True, id="bad-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab", True, id="two-lengths"),
        pytest.param(CHUNKED_HEAD + b"zz\r\nxx\r\n", True, id="bad-chunk-size"),
    ],
)
async def test_broken_exchange_raises_broken_and_the_client_recovers(data: bytes, then_wait: bool) -> None:
    calls = 0

    async def handler(conn: Conn) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await sending(data, then_wait=then_wait)(conn)
        else:
            await answering(ok())(conn)

    async with serving(handler) as (_, client):
        with pytest.raises(UpstreamBrokenError):
            await get(client)
        response, body = await get(client)
    assert (response.status, body) == (200, b"ok")


@pytest.mark.parametrize(
    ("extra", "together"),
    [
        pytest.param(ok(b"unasked"), True, id="a-second-response-same-read"),
        pytest.param(b"HTTP/1.1 200 OK\r\n", True, id="a-status-line-same-read"),
        pytest.param(b"\x00\x01garbage", True, id="garbage-same-read"),
        pytest.param(ok(b"unasked"), False, id="a-second-response-later"),
        pytest.param(b"HTTP/1.1 200 OK\r\n", False, id="a-status-line-later"),
        pytest.param(b"\x00\x01garbage", False, id="garbage-later"),
    ],
)
async def test_unsolicited_bytes_after_a_response_stop_its_connection_being_reused(extra: bytes, together: bool) -> None:
    async def handler(conn: Conn) -> None:
        if conn.upstream.accepted > 1:
            await answering(ok(b"second"))(conn)
            return
        await conn.read_request()
        if together:
            await conn.send(ok(b"first") + extra)
        else:
            await conn.send(ok(b"first"))
            await settle()
            await conn.send(extra)
        await conn.wait_eof()

    async with serving(handler) as (upstream, client):
        response = await client.request("GET", upstream.url + "/", timeout=5)
        if not together:
            await asyncio.sleep(0.1)  # the extra bytes arrive before the body is read
        assert await response.read() == b"first"
        response.release()
        await settle()
        _, body = await get(client, timeout=1.0)  # on the reused connection nothing answers: a timeout
    assert body == b"second"
    assert upstream.accepted == 2


async def test_unsolicited_bytes_on_an_idle_connection_stop_it_being_reused() -> None:
    async def handler(conn: Conn) -> None:
        if conn.upstream.accepted > 1:
            await answering(ok(b"second"))(conn)
            return
        await conn.read_request()
        await conn.send(ok(b"first"))
        await settle()
        await conn.send(ok(b"unasked"))
        await conn.wait_eof()

    async with serving(handler) as (upstream, client):
        await get(client)
        await asyncio.sleep(0.15)
        _, body = await get(client)
    assert body == b"second"
    assert upstream.accepted == 2


@pytest.mark.parametrize(
    "interim",
    [
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n", id="100"),
        pytest.param(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n", id="103"),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n", id="two-interims"),
    ],
)
async def test_interim_responses_are_skipped(interim: bytes) -> None:
    async with serving(answering(interim + ok(b"real", b"x-real: 1"))) as (upstream, client):
        response, body = await get(client)
        again, _ = await get(client)
    assert (response.status, body) == (200, b"real")
    assert "link" not in response.headers
    assert response.headers["x-real"] == "1"
    assert again.status == 200
    assert upstream.accepted == 1


async def test_head_is_refused_rather_than_waiting_for_a_body_that_never_comes() -> None:
    # llhttp is not told the method: a HEAD answer's content-length would make it wait for a body.
    async with serving(answering(b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n")) as (upstream, client):
        with pytest.raises(ValueError, match="HEAD"):
            await client.request("HEAD", upstream.url + "/", timeout=1.0)
        assert upstream.accepted == 0


# --------------------------------------------------------------------------- 7. connection limit


def answering_slowly(delay: float, reply: bytes) -> Handler:
    async def handler(conn: Conn) -> None:
        while await conn.read_request() is not None:
            await asyncio.sleep(delay)
            await conn.send(reply)

    return handler


async def test_max_connections_bounds_concurrent_requests() -> None:
    async with serving(answering_slowly(0.05, ok()), max_connections=2) as (upstream, client):
        results = await asyncio.gather(*(get(client) for _ in range(6)))
    assert [body for _, body in results] == [b"ok"] * 6
    assert upstream.max_active == 2
    assert upstream.accepted == 2


async def test_force_close_under_the_limit_serves_every_waiter() -> None:
    # Each answer's connection is dropped (never pooled): its slot must go to the next waiter.
    async with serving(answering_slowly(0.05, ok()), max_connections=2, force_close=True) as (upstream, client):
        results = await asyncio.wait_for(asyncio.gather(*(get(client) for _ in range(6))), 3)
    assert [body for _, body in results] == [b"ok"] * 6
    assert upstream.accepted == 6


async def test_request_cancelled_while_waiting_for_a_slot_does_not_leak_it() -> None:
    gate = asyncio.Event()

    async def handler(conn: Conn) -> None:
        while await conn.read_request() is not None:
            await gate.wait()
            await conn.send(ok())

    async with serving(handler, max_connections=2) as (upstream, client):
        held = [asyncio.create_task(get(client)) for _ in range(2)]
        waiting = asyncio.create_task(get(client))
        await settle()
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.set()
        await asyncio.gather(*held)
        results = await asyncio.wait_for(asyncio.gather(get(client), get(client)), 2)
    assert [body for _, body in results] == [b"ok", b"ok"]
    assert upstream.max_active == 2


async def test_slot_handed_to_a_cancelled_waiter_passes_to_the_next() -> None:
    async with serving(answering(ok()), max_connections=1) as (upstream, client):
        first = await client.request("GET", upstream.url + "/", timeout=5)
        # No deadline, as for a stream (post() passes only read_timeout): the wait is a bare `await waiter`.
        second = asyncio.create_task(get(client, timeout=None))
        third = asyncio.create_task(get(client, timeout=None))
        await settle()
        first.close()  # drops the connection: its slot goes to `second`...
        second.cancel()  # ...which is cancelled before it could use it
        with contextlib.suppress(asyncio.CancelledError):
            await second
        _, body = await asyncio.wait_for(third, 1.0)
    assert body == b"ok"


async def test_waiter_gets_the_slot_of_a_failed_connect() -> None:
    port, holder = closed_port()
    client = UpstreamClient(f"http://127.0.0.1:{port}", max_connections=1)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(client.request("GET", f"http://127.0.0.1:{port}/") for _ in range(2)), return_exceptions=True),
            1.0,
        )
        assert all(isinstance(result, UpstreamConnectError) for result in results), results
    finally:
        await client.close()
        holder.close()


async def test_new_request_does_not_overtake_a_woken_waiter_past_the_limit() -> None:
    async with serving(answering(ok()), max_connections=1) as (upstream, client):
        first = await client.request("GET", upstream.url + "/", timeout=5)
        await first.read()
        waiter = asyncio.create_task(client.request("GET", upstream.url + "/", timeout=5))
        await settle()
        newcomer = asyncio.create_task(client.request("GET", upstream.url + "/", timeout=5))
        first.close()  # the freed slot goes to `waiter`; `newcomer` runs first
        done, pending = await asyncio.wait([waiter, newcomer], timeout=0.5)
        for task in done:
            if task.exception() is None:
                task.result().close()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    # Both responses are held unreleased: with one connection allowed, only one of them can have one.
    assert len(done) == 1


# --------------------------------------------------------------------------- 8. cancellation


async def test_cancelling_a_stream_reader_closes_its_connection() -> None:
    saw_eof = asyncio.Event()

    async def handler(conn: Conn) -> None:
        if conn.upstream.accepted == 1:
            await conn.read_request()
            await conn.send(CHUNKED_HEAD + chunk(b"first"))
            if await conn.wait_eof():
                saw_eof.set()
        else:
            await answering(ok())(conn)

    async def consume(response: UpstreamResponse, got: asyncio.Event) -> None:
        try:
            async for _ in response:
                got.set()
        finally:
            response.close()

    async with serving(handler) as (upstream, client):
        response = await client.request("POST", upstream.url + "/s", body=b"{}", read_timeout=10)
        got = asyncio.Event()
        reader = asyncio.create_task(consume(response, got))
        await asyncio.wait_for(got.wait(), 2)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await asyncio.wait_for(saw_eof.wait(), 2)
        _, body = await get(client)
    assert body == b"ok"
    assert upstream.accepted == 2


# --------------------------------------------------------------------------- 9. header injection


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"x-a": "1\r\nx-evil: 2"}, id="crlf-in-value"),
        pytest.param({"x-a": "1\nx-evil: 2"}, id="lf-in-value"),
        pytest.param({"x-a": "1\0"}, id="nul-in-value"),
        pytest.param({"x a": "1"}, id="space-in-name"),
        pytest.param({"x-a\r\nx-evil": "1"}, id="crlf-in-name"),
        pytest.param({"": "1"}, id="empty-name"),
    ],
)
async def test_header_injection_is_refused_before_anything_is_sent(headers: dict[str, str]) -> None:
    async with serving(answering(ok())) as (upstream, client):
        with pytest.raises(ValueError):
            await client.request("GET", upstream.url + "/", headers=headers, timeout=5)
        await settle()
        assert upstream.accepted == 0
        with pytest.raises(ValueError):
            UpstreamClient(upstream.url, headers=headers)


@pytest.mark.parametrize("path", ["/a b", "/a\r\nx-evil: 1", "/a\nb"])
async def test_request_target_injection_is_refused(path: str) -> None:
    async with serving(answering(ok())) as (upstream, client):
        with pytest.raises(ValueError):
            await client.request("GET", upstream.url + path, timeout=5)
        await settle()
    assert upstream.accepted == 0


async def test_url_on_another_origin_is_refused() -> None:
    async with serving(answering(ok())) as (upstream, client):
        with pytest.raises(ValueError):
            await client.request("GET", "http://example.invalid/x", timeout=5)
    assert upstream.accepted == 0


# --------------------------------------------------------------------------- 10. through the OpenAI provider


@contextlib.asynccontextmanager
async def provider_on(handler: Handler) -> AsyncIterator[OpenAIProvider]:
    async with raw_upstream(handler) as upstream:
        provider = OpenAIProvider("raw", UpstreamSettings(base_url=upstream.url + "/v1", timeout=5.0), "sk-up")
        await provider.start()
        try:
            yield provider
        finally:
            await provider.close()


CALL_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("data", "then_wait"),
    [
        pytest.param(HEADER_BOMB, True, id="headers-past-the-bound"),
        pytest.param(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"id": "x"', False, id="body-cut-short"),
        pytest.param(b"garbage\r\n\r\n", True, id="garbage"),
        pytest.param(b"", False, id="closed-before-answering"),
    ],
)
async def test_provider_turns_a_broken_upstream_into_a_502(data: bytes, then_wait: bool) -> None:
    async with provider_on(sending(data, then_wait=then_wait)) as provider:
        with pytest.raises(OpenAIError) as caught:
            async for _ in provider.complete(UpstreamCall(body=CALL_BODY, stream=False)):
                pass
    assert caught.value.status == 502, caught.value


async def test_provider_stream_cut_short_ends_with_a_502_failure() -> None:
    event = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    async with provider_on(sending(CHUNKED_HEAD + chunk(event), then_wait=False)) as provider:
        events = [e async for e in provider.complete(UpstreamCall(body={**CALL_BODY, "stream": True}, stream=True))]
    failures = [e for e in events if isinstance(e, Failure)]
    assert len(failures) == 1 and events[-1] is failures[0], events
    assert failures[0].error.status == 502


async def test_provider_sends_its_key_and_reads_a_plain_answer() -> None:
    answer = (
        b'{"id":"c","object":"chat.completion","created":1,"model":"m",'
        b'"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}'
    )
    async with raw_upstream(answering(ok(answer, b"content-type: application/json"))) as upstream:
        provider = OpenAIProvider("raw", UpstreamSettings(base_url=upstream.url + "/v1", timeout=5.0), "sk-up")
        await provider.start()
        try:
            events = [e async for e in provider.complete(UpstreamCall(body=CALL_BODY, stream=False))]
        finally:
            await provider.close()
    assert events and not any(isinstance(e, Failure) for e in events)
    assert upstream.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nauthorization: Bearer sk-up\r\n" in upstream.requests[0]


# --------------------------------------------------------------------------- 11. TLS


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A self-signed certificate for 127.0.0.1: (cert file, key file, cert PEM)."""
    pytest.importorskip("cryptography")
    cert, key = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    return cert, key, cert.read_text()


@contextlib.asynccontextmanager
async def tls_upstream(self_signed: tuple[Path, Path, str], handler: Handler) -> AsyncIterator[RawUpstream]:
    cert, key, _ = self_signed
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    async with raw_upstream(handler, ssl_context=server_context) as upstream:
        yield upstream


async def test_tls_with_a_trusted_certificate(self_signed: tuple[Path, Path, str]) -> None:
    async with tls_upstream(self_signed, answering(ok(b"secure"))) as upstream:
        client = UpstreamClient(upstream.url, ssl_context=ssl.create_default_context(cadata=self_signed[2]))
        try:
            bodies = [(await get(client))[1] for _ in range(2)]
        finally:
            await client.close()
    assert bodies == [b"secure", b"secure"]
    assert upstream.accepted == 1


async def test_tls_with_an_untrusted_certificate_is_a_connect_error(self_signed: tuple[Path, Path, str]) -> None:
    async with tls_upstream(self_signed, answering(ok())) as upstream:
        client = UpstreamClient(upstream.url)
        try:
            with pytest.raises(UpstreamConnectError):
                await get(client)
        finally:
            await client.close()
