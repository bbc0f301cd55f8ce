"""``background: true`` on a native Responses upstream, over real HTTP with the openai SDK.

The passed-through turn runs in the same :class:`BackgroundRuns` as a
translated one: queued at once, polled to its end, cancelled (the upstream
call closed), streamed and resumed after a sequence number, capped, and
booked once for the whole run. The upstream never sees ``background`` and
always gets ``store: false``: toolrelay runs the response and keeps it.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from fakes.admin import Admin
from fakes.clients import sdk
from fakes.relays import RelayPool
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from fakes.waiting import wait_until

from .helpers import strict_response
from .native import native_tree
from .schema import check_stream, parse_stream, validate_response

MODEL = "native/up-model"
LONG = " ".join(f"word{i}" for i in range(40))


@pytest.fixture(scope="module")
def relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with RelayPool(tmp_path_factory.mktemp("native-background")) as pool:
        tree = native_tree(fake_upstream, pool.data_dir())
        tree["responses"] = {"max_background_per_key": 2, "max_background_total": 3}
        relay = pool.start(tree)
        with Admin(relay) as admin, sdk(relay, admin.create_key("warm-up")[1]) as client:
            # The first request loads the tokenizer (seconds on a busy machine): not inside a timed test.
            client.responses.create(model=MODEL, input="warm up")
        yield relay


@pytest.fixture
def admin(relay: RunningServer) -> Iterator[Admin]:
    with Admin(relay) as admin:
        yield admin


@pytest.fixture
def releases(relay: RunningServer) -> Iterator[dict[str, list[int]]]:
    """request id -> [status] for every gate release while the test runs."""
    gate = relay.services.gate
    seen: dict[str, list[int]] = collections.defaultdict(list)
    real = gate.release

    async def counting(info: Any) -> None:
        seen[info.request_id].append(info.status)
        await real(info)

    gate.release = counting
    try:
        yield seen
    finally:
        del gate.release


def _settled(client: openai.OpenAI, response_id: str) -> Any:
    return wait_until(lambda: (r := client.responses.retrieve(response_id)).status not in ("queued", "in_progress") and r, what="a settled response")


def _wait_for_upstream(fake: FakeUpstream, count: int) -> None:
    wait_until(lambda: len(fake.requests_to("responses")) >= count, what=f"{count} requests at the upstream's /responses")


def _upstream_bodies(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests_to("responses")]


def test_queued_then_completed_and_booked_once(relay: RunningServer, admin: Admin, fake: FakeUpstream, releases: dict[str, list[int]]) -> None:
    key_id, key = admin.create_key("nbg-done", max_parallel=1)
    fake.enqueue(Reply(content="Finished upstream.", delay=1.5))
    with sdk(relay, key) as client:
        raw = client.responses.with_raw_response.create(model=MODEL, input="take your time", instructions="Be brief.", background=True)
        queued = raw.parse()
        assert queued.status == "queued" and queued.background is True and queued.output == [] and queued.model == MODEL
        assert queued.instructions == "Be brief."
        strict_response(queued.to_dict())
        # The run holds the key's only slot; polling takes none.
        with pytest.raises(openai.RateLimitError):
            client.responses.create(model=MODEL, input="meanwhile")
        assert client.responses.retrieve(queued.id).status in ("queued", "in_progress")
        done = _settled(client, queued.id)
        assert done.status == "completed" and done.output_text == "Finished upstream." and done.background is True
        assert done.id == queued.id and done.model == MODEL
        assert done.usage is not None and done.usage.output_tokens == 2
        validate_response(done.to_dict())
    # toolrelay ran it in the background, not the upstream: no `background`, nothing stored there.
    [sent] = [body for body in _upstream_bodies(fake) if body["input"][0]["content"][0]["text"] == "take your time"]
    assert "background" not in sent and sent["store"] is False and sent["model"] == "up-model"
    request_id = raw.headers["x-request-id"]
    [row] = [row for row in admin.usage_rows(key_id, count=2) if row["request_id"] == request_id]
    assert row["mode"] == "responses" and row["status"] == 200 and row["latency_ms"] >= 1400
    assert (row["prompt_tokens"], row["completion_tokens"]) == (done.usage.input_tokens, 2)
    assert releases[request_id] == [200]


def test_cancel_closes_the_upstream_call(relay: RunningServer, admin: Admin, fake: FakeUpstream, releases: dict[str, list[int]]) -> None:
    key_id, key = admin.create_key("nbg-cancel", max_parallel=1)
    fake.enqueue(Reply(content="never sent", delay=30))
    with sdk(relay, key) as client:
        raw = client.responses.with_raw_response.create(model=MODEL, input="long job", background=True)
        started = raw.parse()
        _wait_for_upstream(fake, 1)
        cancelled = client.responses.cancel(started.id)
        assert cancelled.status == "cancelled" and cancelled.id == started.id and cancelled.output == []
        strict_response(cancelled.to_dict())
        assert fake.wait_for_disconnect(1, timeout=5), "the upstream call went on after cancel"
        assert client.responses.retrieve(started.id).status == "cancelled"
        assert client.responses.cancel(started.id).to_dict() == cancelled.to_dict()
        # The slot came back with the cancel.
        fake.enqueue(Reply(content="free again"))
        assert client.responses.create(model=MODEL, input="next").output_text == "free again"
    request_id = raw.headers["x-request-id"]
    [row] = [row for row in admin.usage_rows(key_id, count=2) if row["request_id"] == request_id]
    assert row["status"] == 499 and row["error_code"] == "cancelled" and row["prompt_tokens"] > 0 and row["estimated"] is True
    assert releases[request_id] == [499]


def test_an_upstream_error_fails_the_run(relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("nbg-error")
    fake.enqueue(Reply(status=429, headers={"retry-after": "3"}))
    with sdk(relay, key) as client:
        raw = client.responses.with_raw_response.create(model=MODEL, input="x", background=True)
        failed = _settled(client, raw.parse().id)
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "rate_limit_exceeded"
    validate_response(failed.to_dict())
    [row] = [row for row in admin.usage_rows(key_id, count=1) if row["request_id"] == raw.headers["x-request-id"]]
    assert row["status"] == 429


def test_streamed_run_survives_its_client_and_resumes(relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    key_id, key = admin.create_key("nbg-stream")
    fake.enqueue(Reply(content=LONG, chunk_delay=0.05))
    seen = b""
    with httpx.stream(
        "POST",
        relay.url("/v1/responses"),
        json={"model": MODEL, "input": "stream it", "background": True, "stream": True},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        request_id = response.headers["x-request-id"]
        for piece in response.iter_bytes():
            seen += piece
            if seen.count(b"response.output_text.delta") >= 3 and seen.endswith(b"\n\n"):
                break
    first = parse_stream(seen)
    response_id = first[0]["response"]["id"]
    assert first[0]["response"]["background"] is True
    last_seen = first[-1]["sequence_number"]
    with sdk(relay, key) as client:
        # The client left, the run did not: pick it up after the last event received, with the SDK.
        rest = [event.to_dict() for event in client.responses.retrieve(response_id, stream=True, starting_after=last_seen)]
        # The two halves are one valid stream, each event as OpenAI's schema has it.
        final = check_stream([*first, *rest])
        assert final["status"] == "completed" and final["background"] is True and final["id"] == response_id
        assert "".join(event["delta"] for event in [*first, *rest] if event["type"] == "response.output_text.delta") == LONG
        assert client.responses.retrieve(response_id).output_text == LONG
        with pytest.raises(openai.BadRequestError) as gone:
            client.responses.retrieve(response_id, stream=True)
        assert gone.value.body["param"] == "stream"  # pyright: ignore[reportIndexIssue, reportOptionalSubscript]
    [sent] = [body for body in _upstream_bodies(fake) if body["input"][0]["content"][0]["text"] == "stream it"]
    assert "background" not in sent and sent["stream"] is True and sent["store"] is False
    [row] = [row for row in admin.usage_rows(key_id, count=1) if row["request_id"] == request_id]
    assert row["status"] == 200 and row["completion_tokens"] == 40


def test_a_whole_streamed_run_validates(relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("nbg-stream-whole")
    fake.enqueue(Reply(content="one two three", tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}]))
    with sdk(relay, key) as client:
        events = list(client.responses.create(model=MODEL, input="go", background=True, stream=True))
    final = check_stream([event.to_dict() for event in events])
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert final["background"] is True


@pytest.mark.parametrize("status", [429, 500])
def test_a_streamed_run_failing_up_front_is_a_whole_failed_stream(relay: RunningServer, admin: Admin, fake: FakeUpstream, status: int) -> None:
    _, key = admin.create_key(f"nbg-stream-fail-{status}")
    fake.enqueue(Reply(status=status))
    with httpx.Client(base_url=relay.root_url, headers={"authorization": f"Bearer {key}"}, timeout=30) as http:
        raw = http.post("/v1/responses", json={"model": MODEL, "input": "x", "background": True, "stream": True})
        # The 200 went out before the upstream was asked: the failure can only be response.failed.
        assert raw.status_code == 200
        final = check_stream(parse_stream(raw.content))
        assert final["status"] == "failed" and final["error"]["code"] == ("rate_limit_exceeded" if status == 429 else "server_error")
        stored = http.get(f"/v1/responses/{final['id']}").json()
    assert stored == final


def test_refusals_and_caps(relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, first_key = admin.create_key("nbg-cap-1")
    _, second_key = admin.create_key("nbg-cap-2")
    fake.responder = lambda body: Reply(content="slow", delay=30)
    with sdk(relay, first_key) as first, sdk(relay, second_key) as second:
        with pytest.raises(openai.BadRequestError) as unstored:
            first.responses.create(model=MODEL, input="x", background=True, store=False)
        assert unstored.value.body["param"] == "background"  # pyright: ignore[reportIndexIssue, reportOptionalSubscript]
        running = [first.responses.create(model=MODEL, input=f"job {i}", background=True) for i in range(2)]
        with pytest.raises(openai.RateLimitError) as per_key:
            first.responses.create(model=MODEL, input="one too many", background=True)
        assert per_key.value.code == "too_many_background_responses"
        # One cap for both paths: a translated run counts against the same server-wide limit.
        running.append(second.responses.create(model="fake-model", input="third", background=True))
        with pytest.raises(openai.RateLimitError) as total:
            second.responses.create(model=MODEL, input="fourth", background=True)
        assert "on this server" in total.value.message
        _wait_for_upstream(fake, 2)
        fake.wait_for_requests(1)
        for response, client in zip(running, (first, first, second), strict=True):
            assert client.responses.cancel(response.id).status == "cancelled"
        # Deleting a running one stops it first.
        doomed = first.responses.create(model=MODEL, input="deleted while running", background=True)
        first.responses.delete(doomed.id)
        with pytest.raises(openai.NotFoundError):
            first.responses.retrieve(doomed.id)
    fake.responder = None
