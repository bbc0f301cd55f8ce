"""The client's ``response_format`` in agent mode (issue 10 item 24).

Constrained mode replaces ``response_format`` with the step schema; the
client's schema must become the answer branch, so the final answer is JSON
matching it (instructor's JSON_SCHEMA mode, the SDK's ``parse``). Native mode
forwards ``response_format`` on every model call, the final-answer call included.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pydantic
import pytest
from agent_helpers import USER, assert_stream_contract, content_of, steps_of, stream_raw, streamed_steps

from fakes.upstream import FakeUpstream, Reply

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp_c": {"type": "integer"}},
    "required": ["city", "temp_c"],
    "additionalProperties": False,
}
JSON_SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "weather", "strict": True, "schema": WEATHER_SCHEMA}}
ANSWER = {"city": "Paris", "temp_c": 21}
# The model writes the answer value with its own spacing; the client gets exactly that JSON text.
ANSWER_STEP = '{"answer": {"city": "Paris", "temp_c": 21}}'
TOOL_STEP = '{"tool": "current_time", "arguments": {}}'


class Weather(pydantic.BaseModel):
    city: str
    temp_c: int


def saw_tool_result(body: dict[str, Any]) -> bool:
    return any("The tool current_time returned" in (m.get("content") or "") for m in body["messages"] if isinstance(m.get("content"), str))


def constrained_model(body: dict[str, Any]) -> Reply:
    return Reply(content=ANSWER_STEP if saw_tool_result(body) else TOOL_STEP)


def answer_branch(body: dict[str, Any]) -> dict[str, Any]:
    schema = body["response_format"]["json_schema"]["schema"]
    (branch,) = [b for b in schema.get("anyOf", [schema]) if "answer" in b.get("properties", {})]
    return branch["properties"]["answer"]


def check_requests(fake: FakeUpstream, expected_answer_schema: dict[str, Any]) -> None:
    bodies = [r.body for r in fake.chat_requests]
    assert len(bodies) == 2, bodies
    for body in bodies:
        assert body["response_format"]["json_schema"]["name"] == "agent_step"
        assert answer_branch(body) == expected_answer_schema, body["response_format"]
        assert "JSON matching this schema" in body["messages"][0]["content"]


@pytest.mark.parametrize("stream", [False, True])
def test_constrained_answer_follows_the_clients_json_schema(ahttp: httpx.Client, fake: FakeUpstream, stream: bool) -> None:
    fake.responder = constrained_model
    body = {"model": "agent/fake-constrained", "messages": USER, "response_format": JSON_SCHEMA_FORMAT}
    if stream:
        response, raw = stream_raw(ahttp, body)
        assert response.status_code == 200, raw
        chunks = assert_stream_contract(raw, model="agent/fake-constrained", include_usage=False, finish_reason="stop")
        content = content_of(chunks)
        assert [s["type"] for s in streamed_steps(chunks)] == ["tool_call", "tool_result"]
    else:
        response = ahttp.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        message = response.json()["choices"][0]["message"]
        content = message["content"]
        assert [s["type"] for s in message["agent_steps"]] == ["tool_call", "tool_result"]
    parsed = json.loads(content)
    jsonschema.validate(parsed, WEATHER_SCHEMA)
    assert parsed == ANSWER
    assert content == '{"city": "Paris", "temp_c": 21}'
    check_requests(fake, WEATHER_SCHEMA)


def test_constrained_sdk_parse_with_a_pydantic_model(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    """What instructor's JSON_SCHEMA mode and the SDK's ``parse`` do: send a strict schema, parse the content."""
    fake.responder = constrained_model
    completion = oai.chat.completions.parse(model="agent/fake-constrained", messages=USER, response_format=Weather)
    assert completion.choices[0].message.parsed == Weather(**ANSWER)
    assert len(steps_of(completion.choices[0].message)) == 2
    assert answer_branch(fake.last_body)["required"] == ["city", "temp_c"]


def test_constrained_json_object_answer(ahttp: httpx.Client, fake: FakeUpstream) -> None:
    fake.responder = constrained_model
    response = ahttp.post("/v1/chat/completions", json={"model": "agent/fake-constrained", "messages": USER, "response_format": {"type": "json_object"}})
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == ANSWER
    check_requests(fake, {"type": "object"})


def test_constrained_final_answer_after_the_step_limit_follows_the_schema(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.responder = constrained_model
    completion = oai.chat.completions.create(
        model="agent/fake-constrained", messages=USER, response_format=JSON_SCHEMA_FORMAT, extra_body={"agent_options": {"max_steps": 1}}
    )
    # The model's first step is a tool call; its answer comes from the final-answer request.
    assert json.loads(completion.choices[0].message.content or "") == ANSWER
    assert answer_branch(fake.last_body) == WEATHER_SCHEMA


def test_plain_text_answer_is_unchanged(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content='{"answer": "Sunny."}'))
    completion = oai.chat.completions.create(model="agent/fake-constrained", messages=USER, response_format={"type": "text"})
    assert completion.choices[0].message.content == "Sunny."
    assert answer_branch(fake.last_body) == {"type": "string"}


@pytest.mark.parametrize("stream", [False, True])
def test_native_mode_forwards_response_format_on_every_call(ahttp: httpx.Client, fake: FakeUpstream, stream: bool) -> None:
    answer = json.dumps(ANSWER)
    fake.enqueue(Reply(tool_calls=[{"name": "current_time", "arguments": {}}]), Reply(content=answer))
    body = {"model": "agent/fake-model", "messages": USER, "response_format": JSON_SCHEMA_FORMAT}
    if stream:
        response, raw = stream_raw(ahttp, body)
        content = content_of(assert_stream_contract(raw, model="agent/fake-model", include_usage=False, finish_reason="stop"))
    else:
        response = ahttp.post("/v1/chat/completions", json=body)
        content = response.json()["choices"][0]["message"]["content"]
    assert response.status_code == 200
    assert json.loads(content) == ANSWER
    bodies = [r.body for r in fake.chat_requests]
    assert len(bodies) == 2 and all(b["response_format"] == JSON_SCHEMA_FORMAT for b in bodies), bodies
    assert "tools" in bodies[0]


def test_native_final_answer_call_after_the_step_limit_keeps_response_format(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(
        Reply(tool_calls=[{"name": "current_time", "arguments": {}}]),
        Reply(tool_calls=[{"name": "current_time", "arguments": {"timezone": "Asia/Tokyo"}}]),
        Reply(content=json.dumps(ANSWER)),
    )
    completion = oai.chat.completions.create(
        model="agent/fake-model", messages=USER, response_format=JSON_SCHEMA_FORMAT, extra_body={"agent_options": {"max_steps": 1}}
    )
    assert json.loads(completion.choices[0].message.content or "") == ANSWER
    final = fake.last_body
    assert final["tool_choice"] == "none" and final["response_format"] == JSON_SCHEMA_FORMAT
