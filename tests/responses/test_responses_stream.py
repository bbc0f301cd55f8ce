"""``client.responses.stream`` and raw SSE: the semantic events, their order and sequence numbers."""

from __future__ import annotations

import json

import httpx
import openai

from fakes.upstream import FakeUpstream, Reply

from .helpers import parse_event_stream, strict_response
from .test_responses_create import WEATHER_TOOL

TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def _collapse(types: list[str]) -> list[str]:
    """Runs of the same delta event as one."""
    out: list[str] = []
    for kind in types:
        if not (out and out[-1] == kind and kind.endswith(".delta")):
            out.append(kind)
    return out


def test_sdk_stream_text(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="one two three four", usage={"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}))
    with client.responses.stream(model="fake-model", input="count") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert _collapse([event.type for event in events]) == TEXT_EVENTS
    numbers = [event.sequence_number for event in events]
    assert numbers == list(range(len(events)))
    assert "".join(event.delta for event in events if event.type == "response.output_text.delta") == "one two three four"
    assert final.status == "completed" and final.output_text == "one two three four"
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (4, 4)
    assert fake.last_body["stream"] is True and fake.last_body["stream_options"] == {"include_usage": True}
    # The streamed response was stored as it ended.
    assert client.responses.retrieve(final.id).output_text == "one two three four"


def test_raw_stream_validates_strictly(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="Thinking done.", reasoning_content="Let me see."))
    response = http.post("/v1/responses", json={"model": "fake-model", "input": "Hi", "stream": True})
    assert response.status_code == 200
    events = parse_event_stream(response)
    types = _collapse([event.type for event in events])
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        *TEXT_EVENTS[2:],
    ]
    last = events[-1]
    assert last.type == "response.completed"
    final = strict_response(last.response.to_dict())
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output_text == "Thinking done."


def test_stream_function_call(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"id": "call_s1", "name": "get_weather", "arguments": {"city": "Rome"}}], arg_chunks=3))
    response = http.post("/v1/responses", json={"model": "fake-model", "input": "Rome?", "tools": [WEATHER_TOOL], "stream": True})
    events = parse_event_stream(response)
    assert _collapse([event.type for event in events]) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    done = next(event for event in events if event.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "Rome"}
    final = events[-1]
    assert final.type == "response.completed"
    call = final.response.output[0]
    assert call.type == "function_call" and call.call_id == "call_s1" and call.name == "get_weather" and call.status == "completed"


def test_stream_length_is_incomplete(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="cut", finish_reason="length"))
    events = parse_event_stream(http.post("/v1/responses", json={"model": "fake-model", "input": "x", "stream": True, "max_output_tokens": 1}))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None and last.response.incomplete_details.reason == "max_output_tokens"


def test_upstream_429_before_stream_is_429(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(status=429, headers={"retry-after": "3"}))
    try:
        with client.responses.stream(model="fake-model", input="x") as stream:
            list(stream)
    except openai.RateLimitError as exc:
        assert exc.status_code == 429
    else:
        raise AssertionError("expected a 429")


def test_upstream_failure_mid_stream_is_response_failed(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="one two three four five six", break_after=3))
    response = http.post("/v1/responses", json={"model": "fake-model", "input": "x", "stream": True})
    assert response.status_code == 200
    events = parse_event_stream(response)
    last = events[-1]
    assert last.type == "response.failed"
    assert last.response.status == "failed"
    assert last.response.error is not None and last.response.error.message
    # Nothing follows the failure, and the relay still serves.
    fake.enqueue(Reply(content="fine"))
    assert http.post("/v1/responses", json={"model": "fake-model", "input": "x"}).json()["status"] == "completed"
