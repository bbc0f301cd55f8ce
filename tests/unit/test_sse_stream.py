"""SSEStream as an ASGI app: chunks ready together go out in one message, nothing is held back while
the stream waits, and a cancellation or an error reaches the chunks' generator as an await would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from toolrelay.app.sse_response import BATCH_BYTES, SSEStream


class _Client:
    """The ASGI side of one connection: records what is sent, and when, against the generator's steps."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.log: list[str] = []
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body":
            self.log.append(f"send {message['body']!r} more={message['more_body']}")

    @property
    def bodies(self) -> list[tuple[bytes, bool]]:
        return [(m["body"], m["more_body"]) for m in self.sent if m["type"] == "http.response.body"]


async def _serve(chunks: AsyncGenerator[bytes, None], client: _Client) -> None:
    app = SSEStream(chunks, headers={"x-test": "1"}).to_asgi_response(None, None)
    await app({"type": "http", "state": {}}, client.receive, client.send)  # type: ignore[arg-type]


async def test_ready_chunks_share_a_message_and_a_wait_flushes_them_first() -> None:
    client = _Client()
    upstream: asyncio.Queue[list[bytes | None]] = asyncio.Queue()

    async def chunks() -> AsyncGenerator[bytes, None]:
        while True:
            read = await upstream.get()
            client.log.append(f"read {len(read)}")
            for chunk in read:
                if chunk is None:  # the body's end, in the same read as its last events
                    return
                yield chunk

    async def feed() -> None:
        for read in ([b"a", b"b", b"c"], [b"d"], [b"e"], [b"f", b"g", None]):
            await asyncio.sleep(0.01)
            await upstream.put(read)

    await asyncio.gather(_serve(chunks(), client), feed())
    assert client.sent[0]["type"] == "http.response.start"
    assert (b"x-test", b"1") in client.sent[0]["headers"]
    # One message per read, the last one carrying the end of the body.
    assert client.bodies == [(b"abc", True), (b"d", True), (b"e", True), (b"fg", False)]
    # Each read's chunks went out before the stream waited for the next read.
    assert client.log == [
        "read 3",
        "send b'abc' more=True",
        "read 1",
        "send b'd' more=True",
        "read 1",
        "send b'e' more=True",
        "read 3",
        "send b'fg' more=False",
    ]


async def test_a_stream_that_ends_after_a_wait_ends_with_an_empty_last_message() -> None:
    client = _Client()

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield b"a"
        await asyncio.sleep(0.01)

    await _serve(chunks(), client)
    assert client.bodies == [(b"a", True), (b"", False)]


async def test_a_stream_that_never_waits_is_sent_in_batches_of_bounded_size() -> None:
    client = _Client()
    piece = b"x" * 1000
    count = 3 * BATCH_BYTES // len(piece)

    async def chunks() -> AsyncGenerator[bytes, None]:
        for _ in range(count):
            yield piece

    await _serve(chunks(), client)
    sizes = [len(body) for body, _ in client.bodies]
    assert sum(sizes) == count * len(piece)
    assert len(sizes) >= 3
    assert max(sizes) <= BATCH_BYTES + len(piece)
    assert [more for _, more in client.bodies] == [True] * (len(sizes) - 1) + [False]


async def test_chunks_made_before_an_error_are_sent_before_it_propagates() -> None:
    client = _Client()

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield b"one"
        yield b"two"
        raise RuntimeError("upstream parser broke")

    with pytest.raises(RuntimeError, match="parser broke"):
        await _serve(chunks(), client)
    assert client.bodies == [(b"onetwo", True)]


async def test_a_client_that_leaves_cancels_the_waiting_generator_and_the_stream_ends_quietly() -> None:
    client = _Client()
    closed = asyncio.Event()
    waiting = asyncio.Event()

    async def chunks() -> AsyncGenerator[bytes, None]:
        try:
            yield b"first"
            waiting.set()
            await asyncio.sleep(30)  # an upstream that stalls
            yield b"never"
        except asyncio.CancelledError:
            client.log.append("generator cancelled")
            raise
        finally:
            closed.set()

    async def leave() -> None:
        await waiting.wait()
        # DisconnectWatch starts watching after 50 ms.
        await asyncio.sleep(0.1)
        client.gone.set()

    task = asyncio.create_task(_serve(chunks(), client))
    await asyncio.gather(task, leave())
    assert closed.is_set()
    assert "generator cancelled" in client.log
    assert client.bodies == [(b"first", True)]
    # Ended quietly: not cancelled, and the cancellation was taken back.
    assert not task.cancelled()


async def test_a_cancellation_from_elsewhere_propagates_through_the_waiting_generator() -> None:
    client = _Client()
    cancelled_inside = asyncio.Event()

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield b"first"
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled_inside.set()
            raise
        yield b"never"

    task = asyncio.create_task(_serve(chunks(), client))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled_inside.is_set()
    assert client.bodies == [(b"first", True)]


async def test_a_generator_that_yields_a_bare_turn_is_resumed() -> None:
    client = _Client()

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield b"a"
        await asyncio.sleep(0)  # a bare yield to the loop, not a future
        yield b"b"
        await asyncio.sleep(0)
        yield b"c"

    await _serve(chunks(), client)
    assert b"".join(body for body, _ in client.bodies) == b"abc"
    assert client.bodies[-1][1] is False


async def test_a_cancellation_during_a_send_unwinds_the_generator_waiting_behind_it() -> None:
    """The client stops reading (the send waits for the socket to drain) and then leaves: the
    generator, already waiting for its next read, unwinds and can still be closed by the books."""
    client = _Client()
    stuck = asyncio.Event()
    unwound = asyncio.Event()
    upstream: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def blocking_send(message: dict[str, Any]) -> None:
        client.sent.append(message)
        if message["type"] == "http.response.body":
            stuck.set()
            await asyncio.sleep(30)  # a client that stopped reading

    async def chunks() -> AsyncGenerator[bytes, None]:
        try:
            yield b"first"
            yield await upstream
        finally:
            unwound.set()

    generator = chunks()
    app = SSEStream(generator).to_asgi_response(None, None)
    task = asyncio.create_task(app({"type": "http", "state": {}}, client.receive, blocking_send))  # type: ignore[arg-type]
    await stuck.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert unwound.is_set()
    assert upstream.cancelled()  # what the generator waited on is cancelled, as a task's cancellation does
    await generator.aclose()  # what the request's ending does: must not find it still running
