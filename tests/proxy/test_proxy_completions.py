"""Proxy mode over real HTTP: the response shapes strict clients depend on."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai

from fakes.sse import data_events
from fakes.upstream import FakeUpstream, Reply

from .helpers import USER, assert_still_serving, chat_body, content_of, stream_events

# --------------------------------------------------------------------------- non-streaming


def test_non_streaming_sync_with_raw_response(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="The answer is 42.", usage={"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}))
    raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=USER)
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.headers["x-request-id"].startswith("req_")
    completion = raw.parse()
    assert completion._request_id == raw.headers["x-request-id"]
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert isinstance(completion.created, int) and completion.created > 1_600_000_000
    assert completion.model == "fake-model"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "The answer is 42."
    assert choice.message.tool_calls is None
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (11, 5, 16)

    # The keys the spec requires are present even when null.
    body = json.loads(raw.content)
    assert set(body) >= {"id", "object", "created", "model", "choices", "usage"}
    assert body["choices"][0]["logprobs"] is None and "logprobs" in body["choices"][0]
    assert "refusal" in body["choices"][0]["message"] and body["choices"][0]["message"]["refusal"] is None
    assert "finish_reason" in body["choices"][0]


def test_request_ids_are_distinct(client: openai.OpenAI, fake: FakeUpstream) -> None:
    ids = set()
    completion_ids = set()
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=USER)
        ids.add(raw.headers["x-request-id"])
        completion_ids.add(raw.parse().id)
    assert len(ids) == 3
    assert len(completion_ids) == 3


def test_upstream_receives_plain_non_streaming_request(client: openai.OpenAI, fake: FakeUpstream) -> None:
    client.chat.completions.create(model="fake-model", messages=USER)
    req = fake.last_request
    assert req.path == "/v1/chat/completions"
    assert req.body == {"model": "fake-model", "messages": USER}
    # The relay uses its own upstream credential, never the client's key.
    assert req.headers["authorization"] == "Bearer sk-upstream-secret"
    assert "sk-test" not in json.dumps(req.headers)


def test_alias_reports_the_requested_model(client: openai.OpenAI, fake: FakeUpstream) -> None:
    completion = client.chat.completions.create(model="gpt-4", messages=USER)
    assert completion.model == "gpt-4"
    assert fake.last_body["model"] == "fake-model"


def test_model_in_response_is_the_client_model_not_the_upstream_echo(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="hi", model="fake-model-2024-01-01-snapshot"))
    completion = client.chat.completions.create(model="gpt-4", messages=USER)
    assert completion.model == "gpt-4"
    fake.enqueue(Reply(content="hi", model="fake-model-2024-01-01-snapshot"))
    chunks = list(client.chat.completions.create(model="gpt-4", messages=USER, stream=True))
    assert chunks and {c.model for c in chunks} == {"gpt-4"}


def test_system_fingerprint_and_reasoning_pass_through(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="Paris.", reasoning_content="The capital of France is Paris.", system_fingerprint="fp_abc123"))
    completion = client.chat.completions.create(model="fake-model", messages=USER)
    assert completion.system_fingerprint == "fp_abc123"
    assert completion.choices[0].message.content == "Paris."
    assert completion.choices[0].message.model_extra.get("reasoning_content") == "The capital of France is Paris."


def test_refusal_non_streaming_and_streaming(client: openai.OpenAI, fake: FakeUpstream, http: httpx.Client) -> None:
    fake.enqueue(Reply(refusal="I can't help with that."))
    completion = client.chat.completions.create(model="fake-model", messages=USER)
    message = completion.choices[0].message
    assert message.refusal == "I can't help with that."
    assert message.content is None

    fake.enqueue(Reply(refusal="I can't help with that."))
    _, events, _ = stream_events(http, chat_body(stream=True))
    chunks = [e.json for e in events if not e.is_done]
    refusal = "".join(c["choices"][0]["delta"].get("refusal") or "" for c in chunks if c["choices"])
    assert refusal == "I can't help with that."


def test_logprobs_non_streaming(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="alpha beta gamma"))
    completion = client.chat.completions.create(model="fake-model", messages=USER, logprobs=True, top_logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert "".join(t.token for t in logprobs.content) == "alpha beta gamma"
    assert all(len(t.top_logprobs) == 2 for t in logprobs.content)
    assert logprobs.content[0].bytes == list(b"alpha ")


def test_logprobs_streaming(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="alpha beta gamma"))
    tokens = []
    for chunk in client.chat.completions.create(model="fake-model", messages=USER, logprobs=True, top_logprobs=1, stream=True):
        for choice in chunk.choices:
            if choice.logprobs and choice.logprobs.content:
                tokens.extend(t.token for t in choice.logprobs.content)
    assert "".join(tokens) == "alpha beta gamma"


def test_n_choices_non_streaming(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(contents=["first answer", "second answer"]))
    completion = client.chat.completions.create(model="fake-model", messages=USER, n=2)
    assert fake.last_body["n"] == 2
    assert [c.index for c in completion.choices] == [0, 1]
    assert [c.message.content for c in completion.choices] == ["first answer", "second answer"]
    assert [c.finish_reason for c in completion.choices] == ["stop", "stop"]


def test_n_choices_streaming(client: openai.OpenAI, fake: FakeUpstream, http: httpx.Client) -> None:
    fake.enqueue(Reply(contents=["first answer here", "second answer here"]))
    _, events, _ = stream_events(http, chat_body(n=2, stream=True))
    chunks = [e.json for e in events if not e.is_done]
    assert content_of(chunks, 0) == "first answer here"
    assert content_of(chunks, 1) == "second answer here"
    for index in (0, 1):
        mine = [c for chunk in chunks for c in chunk["choices"] if c["index"] == index]
        assert mine[0]["delta"].get("role") == "assistant"
        assert all("finish_reason" in c for c in mine)
        assert [c["finish_reason"] for c in mine if c["finish_reason"] is not None] == ["stop"]
        assert mine[-1]["finish_reason"] == "stop"
        assert all("role" not in c["delta"] for c in mine[1:])

    # And through the SDK's stream accumulator.
    fake.enqueue(Reply(contents=["one", "two"]))
    with client.chat.completions.stream(model="fake-model", messages=USER, n=2) as stream:
        final = stream.get_final_completion()
    assert [c.message.content for c in final.choices] == ["one", "two"]


# --------------------------------------------------------------------------- streaming


def test_stream_wire_format(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="one two three four"))
    response, events, raw = stream_events(http, chat_body(model="gpt-4", stream=True))
    assert response.headers["x-request-id"].startswith("req_")
    # Every event is `data: <json>\n\n`; [DONE] exactly once, last.
    assert raw.endswith(b"data: [DONE]\n\n")
    assert raw.count(b"data: [DONE]") == 1
    assert [e.is_done for e in events].count(True) == 1 and events[-1].is_done
    assert all(e.raw.startswith(b"data: ") and e.raw.endswith(b"\n\n") for e in events)
    chunks = [e.json for e in events[:-1]]
    assert len(chunks) >= 3
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert len({c["created"] for c in chunks}) == 1
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"gpt-4"}
    for chunk in chunks:
        # Without include_usage, no usage anywhere (not even null).
        assert "usage" not in chunk, chunk
        assert len(chunk["choices"]) == 1
        choice = chunk["choices"][0]
        assert set(choice) >= {"index", "delta", "finish_reason"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert content_of(chunks) == "one two three four"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    # The upstream was asked for usage even though the client was not.
    assert fake.last_body["stream"] is True
    assert fake.last_body["stream_options"] == {"include_usage": True}
    assert fake.last_body["model"] == "fake-model"


def test_stream_include_usage(http: httpx.Client, fake: FakeUpstream) -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    fake.enqueue(Reply(content="one two three four", usage=usage))
    _, events, raw = stream_events(http, chat_body(stream=True, stream_options={"include_usage": True}))
    assert events[-1].is_done and raw.count(b"[DONE]") == 1
    chunks = [e.json for e in events[:-1]]
    last = chunks[-1]
    assert last["choices"] == []
    assert {k: last["usage"][k] for k in usage} == usage
    assert last["id"] == chunks[0]["id"] and last["created"] == chunks[0]["created"]
    for chunk in chunks[:-1]:
        assert "usage" in chunk and chunk["usage"] is None, chunk
        assert chunk["choices"], chunk
    assert content_of(chunks) == "one two three four"
    assert fake.last_body["stream_options"] == {"include_usage": True}


def test_stream_include_usage_false_gets_no_usage_but_upstream_is_asked(http: httpx.Client, fake: FakeUpstream) -> None:
    _, events, _ = stream_events(http, chat_body(stream=True, stream_options={"include_usage": False}))
    chunks = [e.json for e in events if not e.is_done]
    assert all("usage" not in c for c in chunks)
    assert all(c["choices"] for c in chunks)
    assert fake.last_body["stream_options"] == {"include_usage": True}


def test_stream_sdk_sync(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="Streaming through the SDK works.", chunk_tokens=2))
    stream = client.chat.completions.create(model="fake-model", messages=USER, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streaming through the SDK works."
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_stream_helper(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="Hello via the stream helper", chunk_tokens=1))
    deltas = []
    with client.chat.completions.stream(model="gpt-4", messages=USER, stream_options={"include_usage": True}) as stream:
        for event in stream:
            if event.type == "content.delta":
                deltas.append(event.delta)
        final = stream.get_final_completion()
    assert "".join(deltas) == "Hello via the stream helper"
    assert [d for d in deltas if d] == ["Hello ", "via ", "the ", "stream ", "helper"]
    assert final.model == "gpt-4"
    assert final.choices[0].message.content == "Hello via the stream helper"
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.total_tokens > 0


def test_stream_with_raw_response_headers(client: openai.OpenAI, fake: FakeUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=USER, stream=True)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-request-id"].startswith("req_")
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "Hello from the fake upstream."


def test_reasoning_content_streams_through(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="Yes.", reasoning_content="Let me think about it."))
    _, events, _ = stream_events(http, chat_body(stream=True))
    chunks = [e.json for e in events if not e.is_done]
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    assert reasoning == "Let me think about it."
    assert content_of(chunks) == "Yes."


def test_upstream_json_answer_to_streaming_request_is_streamed(client: openai.OpenAI, fake: FakeUpstream) -> None:
    """An upstream that ignores `stream` and answers one JSON body: the answer still reaches the client as a stream."""
    fake.enqueue(Reply(content="whole answer", stream=False))
    chunks = list(client.chat.completions.create(model="fake-model", messages=USER, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "whole answer"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert_still_serving(client, fake)


def test_path_without_v1_prefix(http: httpx.Client, fake: FakeUpstream) -> None:
    response = http.post("/chat/completions", json=chat_body())
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello from the fake upstream."


# --------------------------------------------------------------------------- async client


async def test_async_non_streaming(aclient: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="async hello"))
    completion = await aclient.chat.completions.create(model="gpt-4", messages=USER)
    assert completion.choices[0].message.content == "async hello"
    assert completion.model == "gpt-4"


async def test_async_streaming(aclient: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="async streaming hello"))
    stream = await aclient.chat.completions.create(model="fake-model", messages=USER, stream=True, stream_options={"include_usage": True})
    parts = []
    usage = None
    async for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
        else:
            usage = chunk.usage
    assert "".join(parts) == "async streaming hello"
    assert usage is not None and usage.completion_tokens == 3


async def test_async_stream_helper(aclient: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="helper async"))
    async with aclient.chat.completions.stream(model="fake-model", messages=USER) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == "helper async"


async def test_async_concurrent_requests(aclient: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    fake.responder = lambda body: Reply(content="echo: " + body["messages"][-1]["content"], chunk_delay=0.01)

    async def one(i: int) -> tuple[str, str]:
        messages = [{"role": "user", "content": f"request {i}"}]
        if i % 2:
            stream = await aclient.chat.completions.create(model="fake-model", messages=messages, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return text, ""
        completion = await aclient.chat.completions.create(model="fake-model", messages=messages)
        return completion.choices[0].message.content or "", completion.id

    results = await asyncio.gather(*(one(i) for i in range(10)))
    assert [text for text, _ in results] == [f"echo: request {i}" for i in range(10)]
    ids = [cid for _, cid in results if cid]
    assert len(set(ids)) == len(ids) == 5
    assert len(fake.chat_requests) == 10


def test_raw_stream_events_are_parseable_json(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="x " * 30))
    response = http.post("/v1/chat/completions", json=chat_body(stream=True))
    assert response.status_code == 200
    events = data_events(response.content)
    assert events[-1].is_done
    for event in events[:-1]:
        chunk = event.json
        assert isinstance(chunk, dict) and "error" not in chunk
