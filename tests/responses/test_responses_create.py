"""``client.responses.create`` over real HTTP against a Chat-Completions-only upstream."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from fakes.upstream import FakeUpstream, Reply

from .helpers import strict_response

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
    "strict": True,
}


def test_string_input(client: openai.OpenAI, fake: FakeUpstream, http: httpx.Client) -> None:
    fake.enqueue(Reply(content="Hi there.", usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}))
    response = client.responses.create(model="fake-model", input="Say hi")
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == "fake-model"
    assert response.output_text == "Hi there."
    message = response.output[0]
    assert message.type == "message" and message.id.startswith("msg_") and message.role == "assistant" and message.status == "completed"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (7, 3, 10)
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert fake.last_body["messages"] == [{"role": "user", "content": "Say hi"}]
    # The raw body, strictly: no field the API reference does not declare.
    fake.enqueue(Reply(content="Again."))
    strict_response(http.post("/v1/responses", json={"model": "fake-model", "input": "again"}).json())


def test_list_input_with_instructions_and_settings(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="Bonjour."))
    response = client.responses.create(
        model="fake-model",
        instructions="Answer in French.",
        input=[
            {"role": "developer", "content": "Be brief."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello"}]},
            {"role": "assistant", "content": "Earlier answer."},
            {"role": "user", "content": "Again"},
        ],
        temperature=0.3,
        top_p=0.9,
        max_output_tokens=50,
        metadata={"ticket": "42"},
        user="alice",
        reasoning={"effort": "low"},
        store=False,
    )
    sent = fake.last_body
    assert sent["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
        {"role": "assistant", "content": "Earlier answer."},
        {"role": "user", "content": "Again"},
    ]
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["user"], sent["reasoning_effort"]) == (0.3, 0.9, 50, "alice", "low")
    # The echo of the request's settings.
    assert response.instructions == "Answer in French."
    assert (response.temperature, response.top_p, response.max_output_tokens) == (0.3, 0.9, 50)
    assert response.metadata == {"ticket": "42"}
    assert response.to_dict()["store"] is False
    assert response.output_text == "Bonjour."


def test_image_input_is_sent_as_chat_parts(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="A cat."))
    client.responses.create(
        model="fake-model",
        input=[
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "What is it?"}, {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}],
            }
        ],
    )
    assert fake.last_body["messages"][0]["content"] == [
        {"type": "text", "text": "What is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
    ]


def test_function_tool_round_trip_with_previous_response_id(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"id": "call_abc", "name": "get_weather", "arguments": {"city": "Paris"}}]))
    first = client.responses.create(model="fake-model", input="Weather in Paris?", tools=[WEATHER_TOOL], tool_choice="auto")
    sent = fake.last_body
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather in a city.", "parameters": WEATHER_TOOL["parameters"], "strict": True},
        }
    ]
    assert sent["tool_choice"] == "auto"
    call = first.output[0]
    assert call.type == "function_call"
    assert call.id is not None and call.id.startswith("fc_")
    assert (call.call_id, call.name, json.loads(call.arguments), call.status) == ("call_abc", "get_weather", {"city": "Paris"}, "completed")
    assert first.tools[0].type == "function" and first.tools[0].name == "get_weather"

    fake.enqueue(Reply(content="Sunny in Paris."))
    second = client.responses.create(
        model="fake-model",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_abc", "output": '{"sky": "sunny"}'}],
        tools=[WEATHER_TOOL],
    )
    assert second.output_text == "Sunny in Paris."
    assert second.previous_response_id == first.id
    assert fake.last_body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": '{"sky": "sunny"}'},
    ]


def test_function_tool_round_trip_with_full_input_and_store_false(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"id": "call_x1", "name": "get_weather", "arguments": {"city": "Oslo"}}]))
    first = client.responses.create(
        model="fake-model", input="Weather in Oslo?", tools=[WEATHER_TOOL], store=False, tool_choice={"type": "function", "name": "get_weather"}
    )
    assert fake.last_body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    call = first.output[0]
    assert call.type == "function_call"
    fake.enqueue(Reply(content="Cold."))
    second = client.responses.create(
        model="fake-model",
        store=False,
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "Weather in Oslo?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "cold"},
        ],
    )
    assert second.output_text == "Cold."
    assert [m["role"] for m in fake.last_body["messages"]] == ["user", "assistant", "tool"]
    # store=False kept nothing: continuing from it is a 404.
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="fake-model", previous_response_id=first.id, input="more")


def test_json_schema_text_format(client: openai.OpenAI, fake: FakeUpstream) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
    fake.enqueue(Reply(content='{"n": 3}'))
    response = client.responses.create(
        model="fake-model", input="A number", text={"format": {"type": "json_schema", "name": "number", "schema": schema, "strict": True}}
    )
    assert fake.last_body["response_format"] == {"type": "json_schema", "json_schema": {"name": "number", "schema": schema, "strict": True}}
    assert json.loads(response.output_text) == {"n": 3}
    assert response.text is not None and response.text.format is not None and response.text.format.type == "json_schema"


def test_length_is_incomplete(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="cut sho", finish_reason="length"))
    response = client.responses.create(model="fake-model", input="Long story", max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"


def test_reasoning_content_becomes_a_reasoning_item(client: openai.OpenAI, fake: FakeUpstream, http: httpx.Client) -> None:
    fake.enqueue(Reply(content="42", reasoning_content="Think hard."))
    body = http.post("/v1/responses", json={"model": "fake-model", "input": "Answer?"}).json()
    response = strict_response(body)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None and reasoning.content[0].text == "Think hard."


async def test_async_client(aclient: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="Async hello."))
    response = await aclient.responses.create(model="fake-model", input="hello")
    assert response.output_text == "Async hello."
    fetched = await aclient.responses.retrieve(response.id)
    assert fetched.output_text == "Async hello."
