"""One pipelined connection to Redis for the limit scripts: every request's command on one socket.

redis-py gives each command in flight a pooled connection of its own, wraps
each read in a timeout, and packs and parses in Python: at concurrency 64
that measured about 100 µs of CPU per command, two commands per limited
request (admission and settlement), which was most of what a key with
limits on Redis cost over keyless proxying. Redis answers a connection's
commands in the order they arrive, so one connection can carry every
request's commands at once: the commands issued in one turn of the event loop
go out in one write, replies that arrive together are parsed in one read, and
hiredis packs and parses in C. A future per command is what a caller waits on.

Failure behaviour matches redis-py's: a reply late by more than
``socket_timeout`` (the oldest one, since replies come in order) closes the
connection and fails every command on it (``TimeoutError``), a lost
connection fails them with ``ConnectionError``, and the next command
connects again. ``EVALSHA`` of a script Redis has not cached (a restart, a
``SCRIPT FLUSH``) is sent once more as ``EVAL``, which caches it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from typing import Any, cast

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["LuaScript", "PipelinedRedis"]


def _pack(*args: Any) -> bytes:
    # hiredis's stub declares a one-element tuple; it takes any number of str, bytes, int or float.
    return hiredis.pack_command(cast("Any", args))


class LuaScript:
    """A Lua script's text and its SHA-1, computed once (``EVALSHA`` names it by that)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


class _Connection(asyncio.Protocol):
    """The socket: writes coalesced per loop turn, replies matched to waiters in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._waiters: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.closed:
            raise RedisConnectionError("connection to redis closed")
        future = self._loop.create_future()
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(packed)
        self._waiters.append((future, time.monotonic()))
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._timeout, self._check_late)
        return future

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and not self.closed and out:
            self._transport.write(b"".join(out) if len(out) > 1 else out[0])

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        waiters = self._waiters
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(RedisConnectionError(f"redis protocol error: {exc}"))
                return
            if reply is False:  # hiredis's "no whole reply buffered yet"
                return
            if not waiters:
                self._fail(RedisConnectionError("redis sent a reply nobody asked for"))
                return
            future = waiters.popleft()[0]
            if future.done():  # its caller was cancelled; the reply is still consumed in order
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _check_late(self) -> None:
        self._watchdog = None
        if not self._waiters or self.closed:
            return
        late = time.monotonic() - self._waiters[0][1]
        if late >= self._timeout:
            self._fail(RedisTimeoutError(f"no reply from redis within {self._timeout} s"))
        else:
            self._watchdog = self._loop.call_later(self._timeout - late, self._check_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to redis lost: {exc or 'closed by the server'}"))

    def _fail(self, error: Exception) -> None:
        if self.closed and not self._waiters:
            return
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiters, self._waiters = self._waiters, deque()
        for future, _ in waiters:
            if not future.done():
                future.set_exception(error)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self._fail(RedisConnectionError("connection to redis closed"))


class PipelinedRedis:
    """``redis://`` or ``unix://`` URL (user, password and database number as redis-py reads them)."""

    def __init__(self, url: str, *, socket_timeout: float, connect_timeout: float) -> None:
        options = parse_url(url)
        if "connection_class" in options and "path" not in options:
            raise ValueError("the pipelined client speaks plain TCP or a Unix socket, not TLS (rediss://)")
        self._options = options
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    async def execute(self, *args: Any) -> Any:
        return await self._send(_pack(*args))

    async def script(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._send(_pack("EVALSHA", script.sha, len(keys), *keys, *args))
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self._send(_pack("EVAL", script.source, len(keys), *keys, *args))

    async def _send(self, packed: bytes) -> Any:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        return await conn.send(packed)

    async def _connection(self) -> _Connection:
        # Commands that find no connection share one attempt to make it.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        options = self._options

        def factory() -> _Connection:
            return _Connection(loop, self._socket_timeout)

        try:
            if "path" in options:
                connecting = loop.create_unix_connection(factory, options["path"])
            else:
                connecting = loop.create_connection(factory, options.get("host", "localhost"), int(options.get("port", 6379)))
            _, conn = await asyncio.wait_for(connecting, self._connect_timeout)
        except (TimeoutError, OSError) as exc:
            raise RedisConnectionError(f"cannot connect to redis: {exc}") from exc
        try:
            password = options.get("password")
            if password is not None:
                username = options.get("username")
                await conn.send(_pack("AUTH", username, password) if username else _pack("AUTH", password))
            db = int(options.get("db") or 0)
            if db:
                await conn.send(_pack("SELECT", db))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
