"""``background: true`` and ``POST /v1/responses/{id}/cancel``, over real HTTP with the openai SDK.

A background run outlives the request that started it: it holds its key's
parallel slot and owns the one ledger row until it ends, however it ends
(finished, cancelled, the server shutting down).
"""

from __future__ import annotations

import collections
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from fakes.admin import Admin
from fakes.clients import sdk
from fakes.relays import RelayPool, auth_tree, session_tree
from fakes.server import RunningServer
from fakes.sse import parse_sse
from fakes.upstream import FakeUpstream, Reply
from fakes.waiting import wait_until

from .helpers import STREAM_EVENT, strict_response

LONG = " ".join(f"word{i}" for i in range(40))


@pytest.fixture(scope="module")
def relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("responses-background")
    with RelayPool(root) as pool:
        relay = pool.start(auth_tree(fake_upstream, pool.data_dir(), responses={"max_background_per_key": 2, "max_background_total": 3}))
        with Admin(relay) as admin, sdk(relay, admin.create_key("warm-up")[1]) as client:
            # The first request loads the tokenizer (seconds on a busy machine): not inside a timed test.
            client.responses.create(model="fake-model", input="warm up")
        yield relay


@pytest.fixture
def admin(relay: RunningServer) -> Iterator[Admin]:
    with Admin(relay) as admin:
        yield admin


@pytest.fixture
def releases(relay: RunningServer) -> Iterator[dict[str, list[tuple[int, Any]]]]:
    """request id -> [(status, usage)] for every gate release while the test runs."""
    gate = relay.services.gate
    seen: dict[str, list[tuple[int, Any]]] = collections.defaultdict(list)
    real = gate.release

    async def counting(info: Any) -> None:
        seen[info.request_id].append((info.status, info.usage))
        await real(info)

    gate.release = counting
    try:
        yield seen
    finally:
        del gate.release


def _settled(client: openai.OpenAI, response_id: str) -> Any:
    return wait_until(lambda: (r := client.responses.retrieve(response_id)).status not in ("queued", "in_progress") and r, what="a settled response")


def test_runs_after_the_answer_and_is_booked_once_for_the_whole_run(
    relay: RunningServer, admin: Admin, fake: FakeUpstream, releases: dict[str, list[tuple[int, Any]]]
) -> None:
    key_id, key = admin.create_key("bg-done", max_parallel=1)
    fake.enqueue(Reply(content="Finished in the background.", delay=2))
    with sdk(relay, key) as client:
        raw = client.responses.with_raw_response.create(model="fake-model", input="take your time", background=True)
        queued = raw.parse()
        assert queued.status == "queued" and queued.background is True and queued.output == []
        strict_response(queued.to_dict())
        # The run holds the key's only slot: a second model request is refused meanwhile...
        with pytest.raises(openai.RateLimitError):
            client.responses.create(model="fake-model", input="meanwhile")
        # ...but polling takes no slot.
        assert client.responses.retrieve(queued.id).status in ("queued", "in_progress")
        done = _settled(client, queued.id)
        assert done.status == "completed" and done.output_text == "Finished in the background." and done.background is True
        assert done.usage is not None and done.usage.output_tokens > 0
        strict_response(done.to_dict())
        # The slot came back with the run's end.
        fake.enqueue(Reply(content="next"))
        assert client.responses.create(model="fake-model", input="after").output_text == "next"
    request_id = raw.headers["x-request-id"]
    rows = [row for row in admin.usage_rows(key_id, count=3) if row["request_id"] == request_id]
    assert len(rows) == 1, rows
    [row] = rows
    # One row, for the whole run (the upstream took 2 s after the 200 went out), with its usage.
    assert row["mode"] == "responses" and row["status"] == 200 and row["latency_ms"] >= 1900
    assert row["completion_tokens"] == done.usage.output_tokens and row["prompt_tokens"] == done.usage.input_tokens
    assert [status for status, _ in releases[request_id]] == [200]


def test_cancel_stops_the_upstream_call_and_frees_the_slot(
    relay: RunningServer, admin: Admin, fake: FakeUpstream, releases: dict[str, list[tuple[int, Any]]]
) -> None:
    key_id, key = admin.create_key("bg-cancel", max_parallel=1)
    fake.enqueue(Reply(content="never sent", delay=30))
    with sdk(relay, key) as client:
        raw = client.responses.with_raw_response.create(model="fake-model", input="long job", background=True)
        started = raw.parse()
        fake.wait_for_requests(1)
        cancelled = client.responses.cancel(started.id)
        assert cancelled.status == "cancelled" and cancelled.id == started.id and cancelled.background is True
        strict_response(cancelled.to_dict())
        assert fake.wait_for_disconnect(1, timeout=5), "the upstream call went on after cancel"
        assert client.responses.retrieve(started.id).status == "cancelled"
        # Cancelling again returns it unchanged (idempotent, as OpenAI documents).
        assert client.responses.cancel(started.id).to_dict() == client.responses.retrieve(started.id).to_dict()
        fake.enqueue(Reply(content="free again"))
        assert client.responses.create(model="fake-model", input="next").output_text == "free again"
    request_id = raw.headers["x-request-id"]
    [row] = [row for row in admin.usage_rows(key_id, count=2) if row["request_id"] == request_id]
    # Booked as cut short by a cancel, with the prompt the upstream read.
    assert row["status"] == 499 and row["error_code"] == "cancelled" and row["prompt_tokens"] > 0 and row["estimated"] is True
    assert [status for status, _ in releases[request_id]] == [499]


def test_a_finished_background_response_is_returned_unchanged_by_cancel(relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("bg-finished")
    fake.enqueue(Reply(content="quick"))
    with sdk(relay, key) as client:
        started = client.responses.create(model="fake-model", input="x", background=True)
        done = _settled(client, started.id)
        assert client.responses.cancel(started.id).to_dict() == done.to_dict()


def test_refusals(relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, owner_key = admin.create_key("bg-owner")
    _, other_key = admin.create_key("bg-other")
    fake.enqueue(Reply(content="secret", delay=30))
    with sdk(relay, owner_key) as owner, sdk(relay, other_key) as other:
        started = owner.responses.create(model="fake-model", input="mine", background=True)
        # Another key's id, or an unknown one: the 404 of GET, and the run goes on.
        for attempt in (lambda: other.responses.cancel(started.id), lambda: owner.responses.cancel("resp_unknown")):
            with pytest.raises(openai.NotFoundError) as caught:
                attempt()
            assert caught.value.body["param"] == "response_id"  # pyright: ignore[reportIndexIssue, reportOptionalSubscript]
        assert owner.responses.retrieve(started.id).status in ("queued", "in_progress")
        # A response made in the foreground cannot be cancelled.
        fake.enqueue(Reply(content="foreground"))
        foreground = owner.responses.create(model="fake-model", input="now")
        with pytest.raises(openai.BadRequestError) as refused:
            owner.responses.cancel(foreground.id)
        assert refused.value.body["message"] == "Cannot cancel a synchronous response."  # pyright: ignore[reportIndexIssue, reportOptionalSubscript]
        # Background responses must be stored.
        with pytest.raises(openai.BadRequestError) as unstored:
            owner.responses.create(model="fake-model", input="x", background=True, store=False)
        assert unstored.value.body["param"] == "background"  # pyright: ignore[reportIndexIssue, reportOptionalSubscript]
        assert owner.responses.cancel(started.id).status == "cancelled"


def test_background_runs_are_capped_per_key_and_per_server(relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, first_key = admin.create_key("bg-cap-1")
    _, second_key = admin.create_key("bg-cap-2")
    fake.responder = lambda body: Reply(content="slow", delay=30)
    with sdk(relay, first_key) as first, sdk(relay, second_key) as second:
        running = [first.responses.create(model="fake-model", input=f"job {i}", background=True) for i in range(2)]
        with pytest.raises(openai.RateLimitError) as per_key:
            first.responses.create(model="fake-model", input="one too many", background=True)
        assert per_key.value.code == "too_many_background_responses" and per_key.value.response.headers["retry-after"]
        running.append(second.responses.create(model="fake-model", input="third", background=True))
        with pytest.raises(openai.RateLimitError) as total:
            second.responses.create(model="fake-model", input="fourth", background=True)
        assert "on this server" in total.value.message
        # Foreground requests are not capped by these settings.
        fake.wait_for_requests(3)
        fake.enqueue(Reply(content="foreground still works"))
        assert second.responses.create(model="fake-model", input="x").output_text == "foreground still works"
        for response, client in zip(running, (first, first, second), strict=True):
            assert client.responses.cancel(response.id).status == "cancelled"
        # Room again once they ended.
        fake.responder = None
        second.responses.create(model="fake-model", input="again", background=True)


def test_a_streamed_run_survives_its_client_and_can_be_followed_again(relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("bg-stream")
    fake.enqueue(Reply(content=LONG, chunk_delay=0.05))
    body = {"model": "fake-model", "input": "stream it", "background": True, "stream": True}
    headers = {"authorization": f"Bearer {key}"}
    seen = b""
    with httpx.stream("POST", relay.url("/v1/responses"), json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        for piece in response.iter_bytes():
            seen += piece
            if seen.count(b"response.output_text.delta") >= 3:
                break
    first = [STREAM_EVENT.validate_json(event.data) for event in parse_sse(seen) if event.data]
    response_id = first[0].response.id  # pyright: ignore[reportAttributeAccessIssue]
    last_seen = first[-1].sequence_number
    with sdk(relay, key) as client:
        # The client left; the run did not. Pick the stream up after the last event it got.
        rest = list(client.responses.retrieve(response_id, stream=True, starting_after=last_seen))
        numbers = [event.sequence_number for event in rest]
        assert numbers == list(range(last_seen + 1, last_seen + 1 + len(numbers))), numbers
        assert rest[-1].type == "response.completed"
        text = "".join(e.delta for e in [*first, *rest] if e.type == "response.output_text.delta")  # pyright: ignore[reportAttributeAccessIssue]
        assert text == LONG
        assert client.responses.retrieve(response_id).output_text == LONG
        # Once the run is over its events are gone: a clear 400, not a hang.
        with pytest.raises(openai.BadRequestError) as gone:
            client.responses.retrieve(response_id, stream=True)
        assert gone.value.body["param"] == "stream"  # pyright: ignore[reportIndexIssue, reportOptionalSubscript]
    [row] = [row for row in admin.usage_rows(key_id, count=4) if row["request_id"] == request_id]
    assert row["status"] == 200 and row["completion_tokens"] == 40


def _slow_run(relay: RunningServer, key: str) -> tuple[str, str]:
    """(response id, request id) of a background run started on ``relay``."""
    with sdk(relay, key) as client:
        raw = client.responses.with_raw_response.create(model="fake-model", input="until shutdown", background=True)
        return raw.parse().id, raw.headers["x-request-id"]


def test_shutdown_fails_running_responses_and_books_them(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    fake_upstream.reset()
    with RelayPool(tmp_path) as pool:
        tree = auth_tree(fake_upstream, pool.data_dir())
        relay = pool.start(tree)
        with Admin(relay) as admin:
            key_id, key = admin.create_key("bg-shutdown")
        fake_upstream.enqueue(Reply(content="never", delay=30))
        response_id, request_id = _slow_run(relay, key)
        fake_upstream.wait_for_requests(1)
        relay.stop()
        assert fake_upstream.wait_for_disconnect(1, timeout=5)
        restarted = pool.start(tree)
        with sdk(restarted, key) as client:
            stopped = client.responses.retrieve(response_id)
            assert stopped.status == "failed" and stopped.error is not None and "shut down" in stopped.error.message
        with Admin(restarted) as admin:
            [row] = [row for row in admin.usage_rows(key_id, count=2) if row["request_id"] == request_id]
            assert row["status"] == 503 and row["error_code"] == "server_shutdown"


def test_runs_left_by_a_crash_fail_at_start_up(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    from toolrelay.app.responses import ResponseStore, StoredResponse, response_scope

    with RelayPool(tmp_path) as pool:
        data_dir = pool.data_dir()
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        store = ResponseStore(data_dir / "responses.db", retention_days=1)
        left = {"id": "resp_leftover", "object": "response", "created_at": 2_000_000_000, "status": "in_progress", "background": True, "output": []}
        # Written as the dead process's running row (what a crash leaves behind).
        store._save(response_scope(None), StoredResponse(left, [], []), dead.pid)  # pyright: ignore[reportPrivateUsage]
        store.close()
        relay = pool.start(session_tree(fake_upstream, data_dir, 1))
        with httpx.Client(base_url=relay.root_url) as http:
            found = http.get("/v1/responses/resp_leftover").json()
        assert found["status"] == "failed" and found["error"]["code"] == "server_error"
