"""The end of a request has one owner: the outer ASGI layer releases it once, with the status it sent.

Over HTTP against a real toolrelay: every metered request (chat, memories)
reaches the gate's ``release`` exactly once, whatever path it took (success,
stream, upstream error, refusal, a client that left), with ``info.status``
already the status the client got; the ledger row carries it. Release runs
before the response's last message, so a client that sends its next request
the moment it has the whole answer finds its parallel slot free.
"""

from __future__ import annotations

import collections
import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fakes.admin import Admin
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Tell me something."}]
LONG = " ".join(f"word{i}" for i in range(60))


@pytest.fixture
def releases(auth_relay: RunningServer) -> Iterator[dict[str, list[tuple[int, Any]]]]:
    """request id -> [(status seen by release, usage)] for every release while the test runs."""
    gate = auth_relay.services.gate
    seen: dict[str, list[tuple[int, Any]]] = collections.defaultdict(list)
    real = gate.release

    async def counting(info: Any) -> None:
        seen[info.request_id].append((info.status, info.usage))
        await real(info)

    gate.release = counting  # the outer layer looks the method up per request
    try:
        yield seen
    finally:
        del gate.release


def _post(relay: RunningServer, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        relay.url(CHAT),
        json={"model": "fake-model", "messages": MESSAGES, **body},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_every_path_is_released_once_with_the_status_sent(
    auth_relay: RunningServer,
    admin: Admin,
    fake: FakeUpstream,
    releases: dict[str, list[tuple[int, Any]]],
) -> None:
    key_id, key = admin.create_key("released-once", rpm=3)
    fake.enqueue(
        Reply(content="a json answer"),
        Reply(content="a streamed answer"),
        Reply(status=500),
    )
    responses = [
        _post(auth_relay, key),  # JSON success
        _post(auth_relay, key, stream=True),  # streamed success
        _post(auth_relay, key),  # the upstream's error, raised through the JSON path (released twice before)
        _post(auth_relay, key, model="no-such-model"),  # refused after authentication, before admission
        _post(auth_relay, key, messages="not a list"),  # refused by validation
        _post(auth_relay, key),  # the fourth admission over rpm=3: 429
    ]
    statuses = [r.status_code for r in responses]
    assert statuses[:2] == [200, 200] and statuses[2] >= 500 and statuses[3:] == [404, 400, 429]
    rows = {r["request_id"]: r for r in admin.usage_rows(key_id, count=len(responses))}
    for response in responses:
        request_id = response.headers["x-request-id"]
        assert [status for status, _ in releases[request_id]] == [response.status_code], request_id
        assert rows[request_id]["status"] == response.status_code
    assert rows[responses[-1].headers["x-request-id"]]["error_code"] == "rate_limit_exceeded"
    # The two answers were booked with the upstream's usage; the refusals reached no model.
    assert all(releases[r.headers["x-request-id"]][0][1] is not None for r in responses[:2])
    assert all(releases[r.headers["x-request-id"]][0][1] is None for r in responses[3:])


def test_a_wrong_key_is_released_but_leaves_no_row(auth_relay: RunningServer, admin: Admin, releases: dict[str, list[tuple[int, Any]]]) -> None:
    response = _post(auth_relay, "tr-000000000000-" + "x" * 43)
    assert response.status_code == 401
    assert [status for status, _ in releases[response.headers["x-request-id"]]] == [401]
    usage = admin.http.get("/admin/usage", params={"group_by": "request"}).json()["data"]
    assert response.headers["x-request-id"] not in {r["request_id"] for r in usage}


def test_a_stream_cut_midway_is_booked_once_with_its_sent_status(
    auth_relay: RunningServer,
    admin: Admin,
    fake: FakeUpstream,
    releases: dict[str, list[tuple[int, Any]]],
) -> None:
    key_id, key = admin.create_key("cut-stream", max_parallel=1)
    fake.enqueue(Reply(content=LONG, chunk_delay=0.2))
    body = {"model": "fake-model", "messages": MESSAGES, "stream": True}
    with httpx.stream(
        "POST",
        auth_relay.url(CHAT),
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    ) as response:
        request_id = response.headers["x-request-id"]
        seen = b""
        for piece in response.iter_bytes():
            seen += piece
            if seen.count(b"data: ") >= 3:
                break
    assert fake.wait_for_disconnect(1, timeout=5)
    [row] = admin.usage_rows(key_id, count=1)
    # The response had started: its status is the 200 that was sent (499 is for a client that
    # left before the response started, tests/security/test_sec_accounting.py).
    assert row["request_id"] == request_id and row["status"] == 200
    # No usage chunk came: what was streamed so far, counted, plus the prompt.
    assert row["estimated"] is True and row["prompt_tokens"] > 0 and 0 < row["completion_tokens"] < 60
    assert [status for status, _ in releases[request_id]] == [200]
    # The slot was freed with the release.
    fake.enqueue(Reply(content="next"))
    assert _post(auth_relay, key).status_code == 200


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_slot_is_free_once_the_client_has_the_whole_answer(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream, stream: bool) -> None:
    key_id, key = admin.create_key(f"sequential-{stream}", max_parallel=1)
    for n in range(20):
        fake.enqueue(Reply(content=f"answer {n}", chunk_delay=0.001))
        # No retry, no pause: released before the last message went out.
        response = _post(auth_relay, key, stream=stream)
        assert response.status_code == 200, (n, response.text[:300])
    rows = admin.usage_rows(key_id, count=20)
    assert len(rows) == 20 and all(r["status"] == 200 and r["completion_tokens"] == 2 for r in rows)


def test_a_stream_row_covers_the_whole_stream(auth_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("whole-stream")
    fake.enqueue(Reply(content="one two three four five", chunk_delay=0.1))
    response = _post(auth_relay, key, stream=True)
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    [row] = admin.usage_rows(key_id, count=1)
    # Booked at the end of the body, not when the response started.
    assert row["status"] == 200 and row["latency_ms"] >= 400 and row["completion_tokens"] == 5 and row["estimated"] is False


def test_memories_are_released_once(auth_relay: RunningServer, admin: Admin, releases: dict[str, list[tuple[int, Any]]]) -> None:
    key_id, key = admin.create_key("memories-once", models=["agent/*"], rpm=2)
    url = auth_relay.url("/v1/memories")
    headers = {"authorization": f"Bearer {key}"}
    responses = [
        httpx.get(url, headers=headers),
        httpx.get(url + "/mem_nope", headers=headers),
        httpx.get(url, headers=headers),
    ]
    assert [r.status_code for r in responses] == [200, 404, 429]
    assert "x-ratelimit-remaining-requests" in responses[0].headers
    rows = {r["request_id"]: r for r in admin.usage_rows(key_id, count=3)}
    for response in responses:
        request_id = response.headers["x-request-id"]
        assert [status for status, _ in releases[request_id]] == [response.status_code]
        assert rows[request_id]["status"] == response.status_code and rows[request_id]["mode"] == "memory"


def test_a_stream_whose_client_stopped_reading_then_left_is_booked_once(
    auth_relay: RunningServer,
    admin: Admin,
    fake: FakeUpstream,
    releases: dict[str, list[tuple[int, Any]]],
    logs: Any,
) -> None:
    """The client reads nothing, so toolrelay's sends wait for the socket to drain while the body
    waits for the next upstream read; then it leaves. The body must unwind (the upstream call is
    closed), the request's ending must run, and the stream is booked once with what it streamed."""
    key_id, key = admin.create_key("stalled-reader", max_parallel=1)
    # About 16 MB in 2,000 chunks, 1 ms apart: far more than the socket buffers between us hold.
    fake.enqueue(Reply(content=" ".join(f"w{i:06d}" * 60 for i in range(40_000)), chunk_tokens=20, chunk_delay=0.001))
    raw = json.dumps({"model": "fake-model", "messages": MESSAGES, "stream": True}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", auth_relay.port or 0))
    sock.sendall(
        f"POST {CHAT} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(raw)}\r\n\r\n".encode()
        + raw
    )
    head = sock.recv(2048)
    assert head.startswith(b"HTTP/1.1 200"), head[:300]
    request_id = head.split(b"x-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    time.sleep(1.5)  # the relay's sends stall; its disconnect watcher is up
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # gone, with unread data: a reset
    assert fake.wait_for_disconnect(1, timeout=5), "the upstream stream was not closed after the client left"
    [row] = admin.usage_rows(key_id, count=1)
    assert row["request_id"] == request_id and row["status"] == 200
    assert row["completion_tokens"] > 0
    assert [status for status, _ in releases[request_id]] == [200]
    assert not [text for text in logs.texts() if "could not account" in text]
