"""Legacy ``POST /v1/completions`` over HTTP with the official SDK: passed through, streamed, metered."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from fakes.admin import Admin
from fakes.clients import sdk, stream_raw
from fakes.relays import RelayPool, auth_tree
from fakes.server import RunningServer
from fakes.sse import data_events
from fakes.upstream import FakeUpstream, Reply
from proxy.helpers import assert_openai_error


def test_plain_completion(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content=" world"))
    result = client.completions.create(model="gpt-4", prompt="Hello", max_tokens=5, temperature=0, stop=["\n"], suffix="!", user="u")
    assert result.object == "text_completion"
    assert result.model == "gpt-4"
    assert result.choices[0].text == " world" and result.choices[0].finish_reason == "stop"
    assert result.usage is not None and result.usage.completion_tokens == 1
    sent = fake.requests_to("completions")[-1]
    assert sent.path == "/v1/completions"
    assert sent.body == {"model": "fake-model", "prompt": "Hello", "max_tokens": 5, "temperature": 0, "stop": ["\n"], "suffix": "!", "user": "u"}


def test_echo_logprobs_n_and_prompt_lists(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content=" there"))
    result = client.completions.create(model="fake-model", prompt=["Hi", "Yo"], n=2, echo=True, logprobs=2)
    assert [c.text for c in result.choices] == ["Hi there", "Hi there", "Yo there", "Yo there"]
    logprobs = result.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens == ["Hi ", "there"]
    client.completions.create(model="fake-model", prompt=[[1, 2, 3]])
    assert fake.requests_to("completions")[-1].body["prompt"] == [[1, 2, 3]]


def test_streaming_passes_chunks_through(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="one two three"))
    chunks = list(client.completions.create(model="fake-model", prompt="Count", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "one two three"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.model == "fake-model" and c.usage is None for c in chunks)
    # Always asked of the upstream (metering), stripped for a client that did not ask.
    assert fake.requests_to("completions")[-1].body["stream_options"] == {"include_usage": True}


async def test_streaming_with_usage_async(aclient: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="a b c d"))
    stream = await aclient.completions.create(model="gpt-4", prompt="x y", stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 2 and chunks[-1].usage.completion_tokens == 4
    assert {c.model for c in chunks} == {"gpt-4"}


def test_stream_is_real_sse_with_one_done(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="p q", send_usage=False))
    response, raw = stream_raw(http, {"model": "fake-model", "prompt": "z", "stream": True, "stream_options": {"include_usage": True}}, path="/completions")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [e.data for e in data_events(raw)]
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    # The upstream sent no usage: an estimate closes the stream, as asked.
    assert '"choices":[]' in events[-2] and '"usage"' in events[-2]


def test_stream_cut_by_the_upstream_ends_with_an_error_event(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="one two three four", break_after=2))
    response, raw = stream_raw(http, {"model": "fake-model", "prompt": "z", "stream": True}, path="/v1/completions")
    assert response.status_code == 200
    events = [e.data or "" for e in data_events(raw)]
    assert "[DONE]" not in events and '"error"' in events[-1]


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_429_before_the_stream_keeps_its_status(client: openai.OpenAI, fake: FakeUpstream, stream: bool) -> None:
    fake.enqueue(Reply(status=429, headers={"retry-after": "3"}))
    with pytest.raises(openai.RateLimitError) as caught:
        client.completions.create(model="fake-model", prompt="x", stream=stream)
    assert caught.value.response.headers["retry-after"] == "3"


def test_errors(client: openai.OpenAI, fake: FakeUpstream, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        client.completions.create(model="nope", prompt="x")
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as agent:
        client.completions.create(model="agent/fake-model", prompt="x", stream=True)
    assert agent.value.code == "model_not_supported" and "/v1/completions" in agent.value.message
    fake.missing_endpoints = {"completions"}
    with pytest.raises(openai.BadRequestError) as missing:
        client.completions.create(model="fake-model", prompt="x", stream=True)
    assert missing.value.code == "unsupported_endpoint" and "/v1/completions" in missing.value.message
    assert_openai_error(http.post("/v1/completions", json={"model": "fake-model"}), 400, param="prompt", code="missing_required_parameter")
    assert_openai_error(http.post("/v1/completions", json={"model": "fake-model", "prompt": "x", "logprobs": 6}), 400, param="logprobs")
    assert_openai_error(http.post("/v1/completions", json={"model": "fake-model", "prompt": "x", "stream_options": {}}), 400, param="stream_options")
    assert len(fake.requests_to("completions")) == 1  # only the one to the missing endpoint


@pytest.fixture(scope="module")
def auth_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with RelayPool(tmp_path_factory.mktemp("completions")) as pool:
        yield pool.start(auth_tree(fake_upstream, pool.data_dir()))


def test_keys_allow_lists_rpm_and_ledger(auth_relay: RunningServer, fake: FakeUpstream) -> None:
    with Admin(auth_relay) as admin:
        key_id, key = admin.create_key(models=["fake-model"], rpm=2)
        with sdk(auth_relay, key) as client:
            with pytest.raises(openai.NotFoundError):
                client.completions.create(model="fake-tools", prompt="x")
            fake.enqueue(Reply(content="a b"), Reply(content="c d e"))
            client.completions.create(model="fake-model", prompt="one two", max_tokens=10)
            list(client.completions.create(model="fake-model", prompt="three", stream=True))
            with pytest.raises(openai.RateLimitError):
                client.completions.create(model="fake-model", prompt="x")
        rows = admin.usage_rows(key_id, count=4)
    ok = sorted((r for r in rows if r["status"] == 200), key=lambda r: r["prompt_tokens"])
    assert [(r["mode"], r["prompt_tokens"], r["completion_tokens"]) for r in ok] == [("completions", 1, 3), ("completions", 2, 2)]
    assert all(r["cost_usd"] > 0 for r in ok)
    assert {404, 429} <= {r["status"] for r in rows}
