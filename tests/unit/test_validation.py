"""check_request: what OpenAI refuses with a 400, and the ``param``/``code`` it names.

Each row is a request body and the error OpenAI's API answers for it (the
``param`` path and ``code`` of its ``invalid_request_error``); ``None`` as the
expected error means the request is accepted and forwarded unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest

from toolrelay.app.errors import OpenAIError
from toolrelay.app.schema_check import SchemaLimits
from toolrelay.app.validation import check_request

USER = {"role": "user", "content": "hi"}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {}},
    },
}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [USER], **fields}


def error_of(request: Any, **limits: Any) -> tuple[str | None, str | None] | None:
    try:
        check_request(request, **limits)
    except OpenAIError as exc:
        assert exc.status == 400 and exc.type == "invalid_request_error", exc
        assert exc.message, exc
        return exc.param, exc.code
    return None


ACCEPTED = [
    pytest.param(body(), id="minimal"),
    pytest.param({"messages": [USER]}, id="no model (routing decides)"),
    pytest.param(
        body(temperature=0, top_p=1, n=1, presence_penalty=-2, frequency_penalty=2),
        id="bounds inclusive",
    ),
    pytest.param(
        body(temperature=2.0, max_tokens=1, max_completion_tokens=2**31 - 1),
        id="upper bounds",
    ),
    pytest.param(
        body(stream=True, stream_options={"include_usage": True}),
        id="stream options with stream",
    ),
    pytest.param(body(logprobs=True, top_logprobs=20), id="top_logprobs with logprobs"),
    pytest.param(body(stop="END"), id="stop string"),
    pytest.param(body(stop=["a", "b", "c", "d"]), id="four stops"),
    pytest.param(body(logit_bias={"50256": -100, "1": 100}), id="logit bias bounds"),
    pytest.param(body(tools=[TOOL], tool_choice="required"), id="tool_choice string"),
    pytest.param(
        body(
            tools=[TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        ),
        id="tool_choice function",
    ),
    pytest.param(
        body(tools=[{"type": "custom", "custom": {"name": "x y"}}]),
        id="custom tool types are the upstream's business",
    ),
    pytest.param(
        body(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": {"type": "object"}},
            }
        ),
        id="json_schema format",
    ),
    pytest.param(
        body(
            messages=[
                {"role": "system", "content": "s"},
                {"role": "developer", "content": [{"type": "text", "text": "d"}]},
                USER,
            ]
        ),
        id="system and developer",
    ),
    pytest.param(
        body(
            messages=[
                USER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c", "content": "42"},
            ]
        ),
        id="tool round trip",
    ),
    pytest.param(
        body(messages=[USER, {"role": "assistant", "refusal": "no"}]),
        id="assistant refusal without content",
    ),
    pytest.param(
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "image_url", "image_url": {"url": "data:,"}},
                    ],
                }
            ]
        ),
        id="user parts",
    ),
    pytest.param(
        body(messages=[{"role": "function", "name": "f", "content": "legacy"}]),
        id="legacy function role",
    ),
    pytest.param(
        body(
            metadata={"k": "v"},
            seed=1,
            user="u",
            store=False,
            parallel_tool_calls=True,
            unknown_field={"x": 1},
        ),
        id="unknown fields pass through",
    ),
]

REFUSED = [
    # (body, param, code)
    pytest.param([USER], None, "invalid_json", id="not an object"),
    pytest.param(body(model=3), "model", "invalid_type", id="model not a string"),
    pytest.param({"model": "m"}, "messages", "missing_required_parameter", id="no messages"),
    pytest.param(body(messages="hi"), "messages", "invalid_type", id="messages not an array"),
    pytest.param(body(messages=[]), "messages", "empty_array", id="empty messages"),
    pytest.param(body(messages=["hi"]), "messages[0]", "invalid_type", id="message not an object"),
    pytest.param(
        body(messages=[{"content": "hi"}]),
        "messages[0].role",
        "missing_required_parameter",
        id="no role",
    ),
    pytest.param(
        body(messages=[{"role": "robot", "content": "hi"}]),
        "messages[0].role",
        "invalid_value",
        id="unknown role",
    ),
    pytest.param(
        body(messages=[{"role": "user"}]),
        "messages[0].content",
        "missing_required_parameter",
        id="user without content",
    ),
    pytest.param(
        body(messages=[{"role": "user", "content": 5}]),
        "messages[0].content",
        "invalid_type",
        id="content a number",
    ),
    pytest.param(
        body(messages=[{"role": "user", "content": [{"type": "video"}]}]),
        "messages[0].content[0].type",
        "invalid_value",
        id="unknown part type",
    ),
    pytest.param(
        body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
        "messages[0].content[0].type",
        "missing_required_parameter",
        id="part without type",
    ),
    pytest.param(
        body(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]),
        "messages[0].content[0].text",
        "invalid_type",
        id="text part not a string",
    ),
    pytest.param(
        body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        "messages[0].content[0].image_url.url",
        "missing_required_parameter",
        id="image without url",
    ),
    pytest.param(
        body(
            messages=[
                {
                    "role": "system",
                    "content": [{"type": "image_url", "image_url": {"url": "x"}}],
                }
            ]
        ),
        "messages[0].content[0].type",
        "invalid_value",
        id="image in a system message",
    ),
    pytest.param(
        body(messages=[USER, {"role": "assistant"}]),
        "messages[1].content",
        "missing_required_parameter",
        id="empty assistant message",
    ),
    pytest.param(
        body(messages=[USER, {"role": "assistant", "tool_calls": {}}]),
        "messages[1].tool_calls",
        "invalid_type",
        id="tool_calls not an array",
    ),
    pytest.param(
        body(
            messages=[
                USER,
                {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
                },
            ]
        ),
        "messages[1].tool_calls[0].id",
        "missing_required_parameter",
        id="tool call without id",
    ),
    pytest.param(
        body(
            messages=[
                USER,
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}],
                },
            ]
        ),
        "messages[1].tool_calls[0].function.arguments",
        "invalid_type",
        id="arguments not a string",
    ),
    pytest.param(
        body(messages=[USER, {"role": "tool", "content": "42"}]),
        "messages[1].tool_call_id",
        "missing_required_parameter",
        id="tool result without call id",
    ),
    pytest.param(
        body(messages=[{"role": "function", "content": "x"}]),
        "messages[0].name",
        "missing_required_parameter",
        id="function message without name",
    ),
    pytest.param(
        body(messages=[{"role": "user", "content": "x", "name": 1}]),
        "messages[0].name",
        "invalid_type",
        id="name not a string",
    ),
    pytest.param(body(stream="yes"), "stream", "invalid_type", id="stream not a boolean"),
    pytest.param(
        body(stream_options={"include_usage": True}),
        "stream_options",
        None,
        id="stream options without stream",
    ),
    pytest.param(
        body(stream=True, stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
        "invalid_type",
        id="include_usage not a boolean",
    ),
    pytest.param(
        body(temperature=2.5),
        "temperature",
        "decimal_above_max_value",
        id="temperature too high",
    ),
    pytest.param(
        body(temperature=-0.1),
        "temperature",
        "decimal_below_min_value",
        id="temperature negative",
    ),
    pytest.param(
        body(temperature="hot"),
        "temperature",
        "invalid_type",
        id="temperature a string",
    ),
    pytest.param(
        body(temperature=True),
        "temperature",
        "invalid_type",
        id="temperature a boolean",
    ),
    pytest.param(body(top_p=1.5), "top_p", "decimal_above_max_value", id="top_p too high"),
    pytest.param(body(n=0), "n", "integer_below_min_value", id="n zero"),
    pytest.param(body(n=129), "n", "integer_above_max_value", id="n too high"),
    pytest.param(body(n=1.5), "n", "invalid_type", id="n not an integer"),
    pytest.param(
        body(max_tokens=0),
        "max_tokens",
        "integer_below_min_value",
        id="max_tokens zero",
    ),
    pytest.param(
        body(max_completion_tokens=-1),
        "max_completion_tokens",
        "integer_below_min_value",
        id="max_completion_tokens negative",
    ),
    pytest.param(
        body(presence_penalty=3),
        "presence_penalty",
        "decimal_above_max_value",
        id="presence_penalty too high",
    ),
    pytest.param(
        body(frequency_penalty=-3),
        "frequency_penalty",
        "decimal_below_min_value",
        id="frequency_penalty too low",
    ),
    pytest.param(body(seed=1.5), "seed", "invalid_type", id="seed not an integer"),
    pytest.param(body(logprobs="yes"), "logprobs", "invalid_type", id="logprobs not a boolean"),
    pytest.param(body(top_logprobs=3), "top_logprobs", None, id="top_logprobs without logprobs"),
    pytest.param(
        body(logprobs=True, top_logprobs=21),
        "top_logprobs",
        "integer_above_max_value",
        id="top_logprobs too high",
    ),
    pytest.param(body(user=5), "user", "invalid_type", id="user not a string"),
    pytest.param(
        body(stop=["a", "b", "c", "d", "e"]),
        "stop",
        "array_above_max_length",
        id="five stops",
    ),
    pytest.param(body(stop=[1]), "stop[0]", "invalid_type", id="stop not strings"),
    pytest.param(body(stop=5), "stop", "invalid_type", id="stop a number"),
    pytest.param(
        body(logit_bias={"1": 101}),
        "logit_bias",
        "invalid_value",
        id="bias out of range",
    ),
    pytest.param(
        body(logit_bias={"1": "x"}),
        "logit_bias.1",
        "invalid_type",
        id="bias not a number",
    ),
    pytest.param(
        body(logit_bias=[1]),
        "logit_bias",
        "invalid_type",
        id="logit_bias not an object",
    ),
    pytest.param(body(metadata=[]), "metadata", "invalid_type", id="metadata not an object"),
    pytest.param(
        body(response_format="json"),
        "response_format",
        "invalid_type",
        id="response_format a string",
    ),
    pytest.param(
        body(response_format={"type": "xml"}),
        "response_format.type",
        "invalid_value",
        id="unknown response format",
    ),
    pytest.param(
        body(response_format={"type": "json_schema"}),
        "response_format.json_schema",
        "missing_required_parameter",
        id="json_schema missing",
    ),
    pytest.param(
        body(response_format={"type": "json_schema", "json_schema": {}}),
        "response_format.json_schema.name",
        "missing_required_parameter",
        id="json_schema without name",
    ),
    pytest.param(
        body(response_format={"type": "json_schema", "json_schema": {"name": "a b"}}),
        "response_format.json_schema.name",
        "invalid_value",
        id="json_schema name with a space",
    ),
    pytest.param(
        body(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": []},
            }
        ),
        "response_format.json_schema.schema",
        "invalid_type",
        id="schema not an object",
    ),
    pytest.param(body(tools={}), "tools", "invalid_type", id="tools not an array"),
    pytest.param(body(tools=["f"]), "tools[0]", "invalid_type", id="tool not an object"),
    pytest.param(
        body(tools=[{"type": "function"}]),
        "tools[0].function",
        "missing_required_parameter",
        id="tool without function",
    ),
    pytest.param(
        body(tools=[{"type": "function", "function": {}}]),
        "tools[0].function.name",
        "missing_required_parameter",
        id="function without name",
    ),
    pytest.param(
        body(tools=[{"type": "function", "function": {"name": "get weather"}}]),
        "tools[0].function.name",
        "invalid_value",
        id="name with a space",
    ),
    pytest.param(
        body(tools=[{"type": "function", "function": {"name": "x" * 65}}]),
        "tools[0].function.name",
        "invalid_value",
        id="name longer than 64",
    ),
    pytest.param(
        body(tools=[TOOL, TOOL]),
        "tools[1].function.name",
        "invalid_value",
        id="duplicate function name",
    ),
    pytest.param(
        body(tools=[{"type": "function", "function": {"name": "f", "description": 1}}]),
        "tools[0].function.description",
        "invalid_type",
        id="description not a string",
    ),
    pytest.param(
        body(tools=[{"type": "function", "function": {"name": "f", "strict": "yes"}}]),
        "tools[0].function.strict",
        "invalid_type",
        id="strict not a boolean",
    ),
    pytest.param(
        body(tools=[{"type": "function", "function": {"name": "f", "parameters": "object"}}]),
        "tools[0].function.parameters",
        "invalid_type",
        id="parameters not an object",
    ),
    pytest.param(body(tool_choice="auto"), "tool_choice", None, id="tool_choice without tools"),
    pytest.param(
        body(tools=[TOOL], tool_choice="any"),
        "tool_choice",
        "invalid_value",
        id="unknown tool_choice",
    ),
    pytest.param(
        body(tools=[TOOL], tool_choice=1),
        "tool_choice",
        "invalid_type",
        id="tool_choice a number",
    ),
    pytest.param(
        body(tools=[TOOL], tool_choice={"type": "function", "function": {}}),
        "tool_choice.function.name",
        "missing_required_parameter",
        id="tool_choice without name",
    ),
    pytest.param(
        body(
            tools=[TOOL],
            tool_choice={"type": "function", "function": {"name": "other"}},
        ),
        "tool_choice",
        "invalid_value",
        id="tool_choice names no tool",
    ),
]


@pytest.mark.parametrize("request_body", ACCEPTED)
def test_accepted(request_body: dict[str, Any]) -> None:
    assert error_of(request_body) is None


@pytest.mark.parametrize(("request_body", "param", "code"), REFUSED)
def test_refused(request_body: Any, param: str | None, code: str | None) -> None:
    assert error_of(request_body) == (param, code)


@pytest.mark.parametrize(
    ("request_body", "limits", "expected"),
    [
        (body(messages=[USER] * 3), {"max_messages": 3}, None),
        (
            body(messages=[USER] * 4),
            {"max_messages": 3},
            ("messages", "array_above_max_length"),
        ),
        (
            body(tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(3)]),
            {"max_tools": 3},
            None,
        ),
        (
            body(tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(4)]),
            {"max_tools": 3},
            ("tools", "array_above_max_length"),
        ),
    ],
)
def test_configured_limits(
    request_body: dict[str, Any],
    limits: dict[str, Any],
    expected: tuple[str, str] | None,
) -> None:
    assert error_of(request_body, **limits) == expected


def test_the_first_error_in_message_order_is_reported() -> None:
    request = body(messages=[USER, {"role": "robot"}, {"role": "tool"}])
    assert error_of(request) == ("messages[1].role", "invalid_value")


def test_a_deep_schema_is_refused_before_any_meta_validation() -> None:
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(50):
        deep = {"type": "object", "properties": {"x": deep}}
    param, _ = error_of(
        body(tools=[{"type": "function", "function": {"name": "f", "parameters": deep}}]),
        schema_limits=SchemaLimits(max_depth=10),
    ) or (None, None)
    assert param is not None and param.startswith("tools[0].function.parameters")
