"""A served request leaves no cyclic garbage of ours behind.

What reference counting cannot free waits for the cyclic collector, whose
pauses are the latency tail under load: a cancelled disconnect watcher once
left 20 such objects per stream (a CancelledError's traceback holding the
watcher's frame, which held the watcher), and the young collections it
forced (3-7 ms each, with a 15-27 ms older one every ten) were the stream
benchmark's p99 time to first token. Requests here are sent over raw
sockets, so that the client adds no garbage of its own, and the answers are
slow enough (over 50 ms) for the disconnect watchers to start.
"""

from __future__ import annotations

import gc
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import toolrelay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply


def _our_roots() -> tuple[str, ...]:
    # toolrelay is a namespace package: its parts (app, agent, tools, memory) live in the repository root.
    return tuple(str(Path(p).resolve()) for p in toolrelay.__path__)


def _post(port: int, path: str, body: dict[str, Any]) -> bytes:
    raw = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {len(raw)}\r\nconnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + raw)
        parts = []
        while chunk := sock.recv(65536):
            parts.append(chunk)
    return b"".join(parts)


def _ours(obj: Any, roots: tuple[str, ...]) -> str | None:
    """What makes ``obj`` toolrelay's: a frame of our code or an instance of one of our classes."""
    code = getattr(obj, "f_code", None)
    if code is not None and code.co_filename.startswith(roots):
        return f"frame {code.co_qualname} ({code.co_filename})"
    module = getattr(type(obj), "__module__", "") or ""
    if module.startswith("toolrelay."):
        return f"{module}.{type(obj).__qualname__}"
    return None


@pytest.fixture
def garbage_saved() -> Iterator[list[Any]]:
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.garbage.clear()
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_streamed_plain_and_responses_requests_leave_no_cyclic_garbage_of_ours(relay: RunningServer, fake: FakeUpstream, garbage_saved: list[Any]) -> None:
    fake.responder = lambda body: Reply(content="one two three four five six", chunk_delay=0.02, delay=0.06)
    answers = []
    for _ in range(3):
        answers.append(_post(relay.port, "/v1/chat/completions", {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}))
        answers.append(_post(relay.port, "/v1/chat/completions", {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}))
        answers.append(_post(relay.port, "/v1/responses", {"model": "fake-model", "stream": True, "input": "hi", "store": False}))
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b"data: [DONE]" in answers[0]
    assert b"response.completed" in answers[2]
    gc.collect()
    roots = _our_roots()
    found = sorted({what for obj in garbage_saved if (what := _ours(obj, roots)) is not None})
    assert found == [], f"cyclic garbage of ours after {len(answers)} requests: {found[:20]}"
