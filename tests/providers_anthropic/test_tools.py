"""Tools over a native Anthropic upstream: definitions, tool_choice, parallel tool use, a round trip."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from fakes.anthropic import FakeAnthropic, MessagesReply

from .conftest import MODEL

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tools_and_tool_choice_are_translated(claude: FakeAnthropic, cclient: openai.OpenAI, tool_choice: Any, parallel: Any, expected: Any) -> None:
    extra: dict[str, Any] = {}
    if tool_choice is not None:
        extra["tool_choice"] = tool_choice
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    cclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER], **extra)
    body = claude.last_body
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    assert body.get("tool_choice") == expected


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_tool_use_round_trip(claude: FakeAnthropic, cclient: openai.OpenAI, stream: bool) -> None:
    claude.enqueue(
        MessagesReply(
            blocks=[
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_paris", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_rome", "name": "get_weather", "input": {"city": "Rome"}},
            ]
        ),
        MessagesReply(blocks=[{"type": "text", "text": "Sunny in both."}]),
    )
    question = {"role": "user", "content": "Weather in Paris and Rome?"}
    if stream:
        chunks = list(cclient.chat.completions.create(model=MODEL, messages=[question], tools=[WEATHER], stream=True))
        calls: dict[int, dict[str, str]] = {}
        for chunk in chunks:
            for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.id or ""
                entry["name"] += (call.function.name or "") if call.function else ""
                entry["arguments"] += (call.function.arguments or "") if call.function else ""
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        got = [calls[i] for i in sorted(calls)]
        assert finish == ["tool_calls"]
    else:
        completion = cclient.chat.completions.create(model=MODEL, messages=[question], tools=[WEATHER])
        assert completion.choices[0].finish_reason == "tool_calls"
        assert completion.choices[0].message.content == "Checking both."
        got = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in completion.choices[0].message.tool_calls or []]  # type: ignore[union-attr]
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in got] == [
        ("toolu_paris", "get_weather", {"city": "Paris"}),
        ("toolu_rome", "get_weather", {"city": "Rome"}),
    ]
    # The client answers both calls; the fake refuses a tool_result without its tool_use and non-alternating roles.
    follow_up = cclient.chat.completions.create(
        model=MODEL,
        messages=[
            question,
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in got],
            },
            {"role": "tool", "tool_call_id": "toolu_paris", "content": "18C sunny"},
            {"role": "tool", "tool_call_id": "toolu_rome", "content": "24C sunny"},
        ],
        tools=[WEATHER],
    )
    assert follow_up.choices[0].message.content == "Sunny in both."
    assert claude.last_body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_paris", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_rome", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_paris", "content": "18C sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_rome", "content": "24C sunny"},
            ],
        },
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_response_format_json_schema_is_a_forced_tool_whose_input_is_the_answer(claude: FakeAnthropic, cclient: openai.OpenAI, stream: bool) -> None:
    claude.enqueue(MessagesReply(blocks=[{"type": "tool_use", "name": "json_response", "input": {"city": "Paris", "temp": 18}}]))
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}}, "required": ["city", "temp"]}
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema}}
    messages: Any = [{"role": "user", "content": "Paris weather as JSON"}]
    if stream:
        chunks = list(cclient.chat.completions.create(model=MODEL, messages=messages, response_format=response_format, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        completion = cclient.chat.completions.create(model=MODEL, messages=messages, response_format=response_format)
        text = completion.choices[0].message.content or ""
        finish = [completion.choices[0].finish_reason]
        assert not completion.choices[0].message.tool_calls
    assert json.loads(text) == {"city": "Paris", "temp": 18}
    assert finish == ["stop"]
    body = claude.last_body
    assert body["tools"][-1] == {"name": "json_response", "description": "Give the answer as this tool's input.", "input_schema": schema}
    assert body["tool_choice"] == {"type": "tool", "name": "json_response"}
