"""Upstream failures on /v1/responses, translated and passed through, streamed and not.

Before the stream: the upstream's HTTP status and an OpenAI error body (a 429
keeps ``retry-after``). During it: one ``response.failed`` with ``error``,
then the stream ends cleanly. The ledger row says which.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from proxy.helpers import assert_openai_error

from fakes.admin import Admin
from fakes.clients import async_sdk, rest, sdk, stream_raw
from fakes.relays import RelayPool
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from responses.native import TIMEOUT, native_tree

# (model, its slow twin): the translated path and the passthrough.
PATHS = {"translated": ("fake-model", "slow-chat"), "native": ("native/up-model", "native-slow")}


@pytest.fixture(scope="module")
def relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with RelayPool(tmp_path_factory.mktemp("upstream-errors")) as pool:
        yield pool.start(native_tree(fake_upstream, pool.data_dir()))


@pytest.fixture(scope="module")
def admin(relay: RunningServer) -> Iterator[Admin]:
    with Admin(relay) as admin:
        yield admin


@pytest.fixture
def key(admin: Admin) -> tuple[str, str]:
    return admin.create_key("errors")


@pytest.fixture
def http(relay: RunningServer, key: tuple[str, str]) -> Iterator[httpx.Client]:
    with rest(relay, key[1]) as http:
        yield http


def _frames(raw: bytes) -> list[dict[str, object]]:
    return [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("stream", [False, True])
def test_429_before_the_answer_keeps_status_and_retry_after(
    http: httpx.Client, fake: FakeUpstream, admin: Admin, key: tuple[str, str], path: str, stream: bool
) -> None:
    fake.default_reply = Reply(status=429, headers={"retry-after": "7"})
    response = http.post("/v1/responses", json={"model": PATHS[path][0], "input": "x", "stream": stream})
    err = assert_openai_error(response, 429)
    assert err["type"] == "rate_limit_error" and response.headers["retry-after"] == "7" and response.headers["retry-after-ms"] == "7000"
    (row,) = admin.usage_rows(key[0], count=1)
    assert (row["status"], row["mode"]) == (429, "responses")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("stream", [False, True])
def test_500_before_the_answer(relay: RunningServer, fake: FakeUpstream, key: tuple[str, str], path: str, stream: bool) -> None:
    fake.default_reply = Reply(status=500)
    with sdk(relay, key[1]) as client, pytest.raises(openai.InternalServerError) as caught:
        if stream:
            with client.responses.stream(model=PATHS[path][0], input="x") as events:
                list(events)
        else:
            client.responses.create(model=PATHS[path][0], input="x")
    assert caught.value.status_code == 500


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("stream", [False, True])
async def test_timeout_before_headers_is_504(relay: RunningServer, fake: FakeUpstream, admin: Admin, key: tuple[str, str], path: str, stream: bool) -> None:
    fake.default_reply = Reply(delay=TIMEOUT + 1.5)
    client = async_sdk(relay, key[1])
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.responses.create(model=PATHS[path][1], input="x", stream=stream)
    finally:
        await client.close()
    assert caught.value.status_code == 504
    assert caught.value.body["code"] == "upstream_timeout"  # type: ignore[index]
    (row,) = admin.usage_rows(key[0], count=1)
    assert (row["status"], row["error_code"]) == (504, "upstream_timeout")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("failure", ["cut", "stall"])
def test_failure_mid_stream_ends_with_response_failed(
    http: httpx.Client, fake: FakeUpstream, admin: Admin, key: tuple[str, str], path: str, failure: str
) -> None:
    model = PATHS[path][0] if failure == "cut" else PATHS[path][1]
    words = "one two three four five six seven eight"
    if failure == "cut":
        fake.default_reply = Reply(content=words, break_after=6)
    elif path == "native":
        fake.default_reply = Reply(content=words, chunk_delay=TIMEOUT + 1.0)
    else:
        # The first chat chunk already says something (a role-only one would leave the stall before the stream started).
        said = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "one"}}],
        }
        fake.default_reply = Reply(chunks=[said, said], chunk_delay=TIMEOUT + 1.0)
    response, raw = stream_raw(http, {"model": model, "input": "x", "stream": True}, "/v1/responses")
    assert response.status_code == 200
    frames = _frames(raw)
    assert frames[0]["type"] == "response.created" and frames[-1]["type"] == "response.failed"
    assert [f["sequence_number"] for f in frames] == list(range(len(frames)))
    failed = frames[-1]["response"]
    assert isinstance(failed, dict) and failed["status"] == "failed" and failed["error"]["code"] == "server_error" and failed["error"]["message"]
    assert raw.endswith(b"\n\n")  # ended cleanly, after a whole event
    (row,) = admin.usage_rows(key[0], count=1)
    assert (row["status"], row["error_code"]) == (200, "stream_error")


@pytest.mark.parametrize("path", PATHS)
def test_sdk_sees_the_failed_response(relay: RunningServer, fake: FakeUpstream, key: tuple[str, str], path: str) -> None:
    fake.default_reply = Reply(content="a b c d e f g", break_after=5)
    with sdk(relay, key[1]) as client:
        events = list(client.responses.create(model=PATHS[path][0], input="x", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None  # type: ignore[union-attr]
