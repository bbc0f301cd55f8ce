"""Function calling through the proxy: shapes, streaming deltas, round trips."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai

from fakes.upstream import FakeUpstream, Reply

from .helpers import chat_body, stream_events

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}},
}
QUESTION = [{"role": "user", "content": "Weather in Paris and the time in Tokyo?"}]


def tool_deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [call for chunk in chunks for choice in chunk["choices"] for call in choice["delta"].get("tool_calls") or []]


def test_tool_call_non_streaming(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"id": "call_w1", "name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]))
    completion = client.chat.completions.create(model="fake-tools", messages=QUESTION, tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].id == "call_w1"
    assert calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris", "unit": "c"}
    assert fake.last_body["tools"] == [WEATHER_TOOL]


def test_tool_call_streaming_sdk_reassembles(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"id": "call_w2", "name": "get_weather", "arguments": {"city": "Paris"}}], arg_chunks=5))
    done_events = []
    with client.chat.completions.stream(model="fake-tools", messages=QUESTION, tools=[WEATHER_TOOL]) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.done":
                done_events.append((event.name, event.index, event.arguments))
        final = stream.get_final_completion()
    assert done_events == [("get_weather", 0, '{"city": "Paris"}')]
    calls = final.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].id == "call_w2"  # a repeated id would have been concatenated
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert final.choices[0].finish_reason == "tool_calls"


def test_parallel_tool_calls_raw_sse(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(
        Reply(
            tool_calls=[
                {"id": "call_a", "name": "get_weather", "arguments": {"city": "Paris"}},
                {"id": "call_b", "name": "get_time", "arguments": {"tz": "Asia/Tokyo"}},
            ],
            arg_chunks=4,
        )
    )
    _, events, raw = stream_events(http, chat_body("fake-tools", messages=QUESTION, tools=[WEATHER_TOOL, TIME_TOOL], stream=True))
    assert raw.count(b"[DONE]") == 1
    chunks = [e.json for e in events if not e.is_done]
    deltas = tool_deltas(chunks)
    assert {d["index"] for d in deltas} == {0, 1}
    assert all(isinstance(d["index"], int) for d in deltas)
    for index, (call_id, name) in enumerate([("call_a", "get_weather"), ("call_b", "get_time")]):
        mine = [d for d in deltas if d["index"] == index]
        # id, type and name only in the call's first delta; later ones carry argument fragments only.
        assert mine[0]["id"] == call_id and mine[0]["type"] == "function" and mine[0]["function"]["name"] == name
        assert all("id" not in d and "type" not in d and "name" not in d.get("function", {}) for d in mine[1:]), mine
        assert len(mine) > 2
        arguments = "".join(d["function"].get("arguments") or "" for d in mine)
        assert json.loads(arguments) == ({"city": "Paris"} if index == 0 else {"tz": "Asia/Tokyo"})
    finishes = [c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]]
    assert finishes == ["tool_calls"]


def test_parallel_tool_calls_sdk(client: openai.OpenAI, fake: FakeUpstream) -> None:
    calls = [
        {"id": "call_p1", "name": "get_weather", "arguments": {"city": "Paris"}},
        {"id": "call_p2", "name": "get_time", "arguments": {"tz": "Asia/Tokyo"}},
    ]
    fake.enqueue(Reply(tool_calls=calls))
    with client.chat.completions.stream(model="fake-tools", messages=QUESTION, tools=[WEATHER_TOOL, TIME_TOOL]) as stream:
        final = stream.get_final_completion()
    got = final.choices[0].message.tool_calls
    assert got is not None
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in got] == [
        ("call_p1", "get_weather", {"city": "Paris"}),
        ("call_p2", "get_time", {"tz": "Asia/Tokyo"}),
    ]
    fake.enqueue(Reply(tool_calls=calls))
    plain = client.chat.completions.create(model="fake-tools", messages=QUESTION, tools=[WEATHER_TOOL, TIME_TOOL])
    assert [c.id for c in plain.choices[0].message.tool_calls or []] == ["call_p1", "call_p2"]


def test_tool_round_trip_results_reach_upstream_intact(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(
        Reply(
            tool_calls=[
                {"id": "call_rt1", "name": "get_weather", "arguments": {"city": "Paris"}},
                {"id": "call_rt2", "name": "get_time", "arguments": {"tz": "UTC"}},
            ]
        ),
        Reply(content="It is 18°C in Paris and 12:00 UTC."),
    )
    first = client.chat.completions.create(model="fake-tools", messages=QUESTION, tools=[WEATHER_TOOL, TIME_TOOL], stream=True)
    # Reassemble like a hand-written client would, from the raw SDK chunks.
    calls: dict[int, dict[str, Any]] = {}
    for chunk in first:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                slot = calls.setdefault(delta.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                if delta.id:
                    slot["id"] += delta.id
                if delta.function and delta.function.name:
                    slot["function"]["name"] += delta.function.name
                if delta.function and delta.function.arguments:
                    slot["function"]["arguments"] += delta.function.arguments
    assistant = {"role": "assistant", "content": None, "tool_calls": [calls[i] for i in sorted(calls)]}
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_rt1", "call_rt2"]
    tool_results = [
        {"role": "tool", "tool_call_id": "call_rt1", "content": json.dumps({"temp_c": 18, "sky": "clear ☀"})},
        {"role": "tool", "tool_call_id": "call_rt2", "content": [{"type": "text", "text": "12:00"}]},
    ]
    messages = [*QUESTION, assistant, *tool_results]
    second = client.chat.completions.create(model="fake-tools", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL])
    assert second.choices[0].message.content == "It is 18°C in Paris and 12:00 UTC."
    received = fake.last_body
    assert received["messages"] == messages
    assert received["tools"] == [WEATHER_TOOL, TIME_TOOL]


def test_tool_choice_and_parallel_flag_forwarded(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"name": "get_weather", "arguments": "{}"}]))
    choice = {"type": "function", "function": {"name": "get_weather"}}
    client.chat.completions.create(model="fake-tools", messages=QUESTION, tools=[WEATHER_TOOL], tool_choice=choice, parallel_tool_calls=False)
    assert fake.last_body["tool_choice"] == choice
    assert fake.last_body["parallel_tool_calls"] is False


def test_parameterless_tool_call_keeps_empty_object(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"id": "call_e", "name": "get_time", "arguments": "{}"}]))
    with client.chat.completions.stream(model="fake-tools", messages=QUESTION, tools=[TIME_TOOL]) as stream:
        final = stream.get_final_completion()
    call = (final.choices[0].message.tool_calls or [])[0]
    assert call.function.arguments == "{}"


# --------------------------------------------------------------------------- non-compliant upstreams


def test_dict_arguments_from_upstream_become_a_json_string(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"id": "call_d", "name": "get_weather", "arguments": {"city": "Oslo"}}], dict_arguments=True))
    completion = client.chat.completions.create(model="fake-tools", messages=QUESTION, tools=[WEATHER_TOOL])
    call = (completion.choices[0].message.tool_calls or [])[0]
    assert isinstance(call.function.arguments, str)
    assert json.loads(call.function.arguments) == {"city": "Oslo"}


def test_dict_arguments_streamed_become_a_json_string(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"id": "call_ds", "name": "get_weather", "arguments": {"city": "Oslo"}}], dict_arguments=True))
    _, events, _ = stream_events(http, chat_body("fake-tools", messages=QUESTION, tools=[WEATHER_TOOL], stream=True))
    deltas = tool_deltas([e.json for e in events if not e.is_done])
    assert all(isinstance(d["function"].get("arguments", ""), str) for d in deltas)
    assert json.loads("".join(d["function"].get("arguments") or "" for d in deltas)) == {"city": "Oslo"}


def test_streamed_tool_calls_without_index_get_one(client: openai.OpenAI, fake: FakeUpstream) -> None:
    envelope = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "fake-tools"}
    chunks: list[dict[str, Any] | bytes] = [
        {
            **envelope,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "tool_calls": [{"id": "call_ni", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}],
                    },
                    "finish_reason": None,
                }
            ],
        },
        {**envelope, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    fake.enqueue(Reply(chunks=chunks))
    with client.chat.completions.stream(model="fake-tools", messages=QUESTION, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    call = (final.choices[0].message.tool_calls or [])[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("call_ni", "get_weather", {"city": "Rome"})


def test_non_streamed_tool_call_without_id_gets_one(client: openai.OpenAI, fake: FakeUpstream) -> None:
    body = {
        "id": "chatcmpl-y",
        "object": "chat.completion",
        "created": 1,
        "model": "fake-tools",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "get_weather", "arguments": "{}"}}]},
                "finish_reason": "tool_calls",
            }
        ],
    }
    fake.enqueue(Reply(raw_body=json.dumps(body).encode()))
    completion = client.chat.completions.create(model="fake-tools", messages=QUESTION, tools=[WEATHER_TOOL])
    call = (completion.choices[0].message.tool_calls or [])[0]
    assert call.id.startswith("call_") and len(call.id) > 5
    assert call.type == "function"
