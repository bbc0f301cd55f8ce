"""The OpenAI Agents SDK with its default settings against toolrelay's ``/v1/responses``, proxy mode.

Only the client is set (``set_default_openai_client``) and tracing switched
off (it would upload traces to api.openai.com); the model provider and the
API stay the SDK's defaults: ``MultiProvider`` and the Responses API. An
Agent with a function tool runs through ``Runner.run`` and
``Runner.run_streamed``; the relay translates to the fake Chat-Completions
upstream. Agent mode through the SDK is tested in tests/responses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import agents
import openai
import pytest
from agents.models import _openai_shared as shared  # the SDK keeps its defaults as module globals

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

from .conftest import ServedRequests

RESPONSES = ("POST", "/v1/responses", 200)
WEATHER_CALL = {"id": "call_w1", "name": "get_weather", "arguments": {"city": "Paris"}}


@pytest.fixture
async def sdk_on_relay(relay: RunningServer) -> AsyncIterator[openai.AsyncOpenAI]:
    saved = (shared.get_default_openai_client(), shared.get_use_responses_by_default())
    assert saved[1] is True  # the SDK's default API, which this module tests; nothing here changes it
    client = openai.AsyncOpenAI(base_url=relay.base_url, api_key="sk-test", max_retries=0)
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_tracing_disabled(True)
    try:
        yield client
    finally:
        shared.set_default_openai_client(saved[0])
        await client.close()


def weather_agent(cities: list[str]) -> agents.Agent[Any]:
    @agents.function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        cities.append(city)
        return f"sunny in {city}"

    return agents.Agent(name="weather", instructions="Answer briefly.", model="fake-model", tools=[get_weather])


def assert_round_trip_upstream(fake: FakeUpstream, *, stream: bool) -> None:
    first, second = fake.chat_requests
    assert first.is_stream is stream and second.is_stream is stream
    assert first.body["model"] == second.body["model"] == "fake-model"
    assert first.body["messages"] == [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Weather in Paris?"}]
    [tool] = first.body["tools"]
    assert tool["function"]["name"] == "get_weather" and tool["function"]["strict"] is True
    assert second.body["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
        },
        {"role": "tool", "tool_call_id": "call_w1", "content": "sunny in Paris"},
    ]


async def test_runner_run_with_a_function_tool(sdk_on_relay: openai.AsyncOpenAI, fake: FakeUpstream, served: ServedRequests) -> None:
    cities: list[str] = []
    fake.enqueue(Reply(tool_calls=[WEATHER_CALL]), Reply(content="Sunny in Paris.", usage={"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}))
    result = await agents.Runner.run(weather_agent(cities), "Weather in Paris?")
    assert result.final_output == "Sunny in Paris."
    assert cities == ["Paris"]  # the function tool ran in the SDK, between two relay turns
    assert [item.type for item in result.new_items] == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert [r.usage.output_tokens for r in result.raw_responses] == [3, 4]
    assert served.exactly(2) == [RESPONSES, RESPONSES]
    assert_round_trip_upstream(fake, stream=False)


async def test_runner_run_streamed_with_a_function_tool(sdk_on_relay: openai.AsyncOpenAI, fake: FakeUpstream, served: ServedRequests) -> None:
    cities: list[str] = []
    fake.enqueue(Reply(tool_calls=[WEATHER_CALL]), Reply(content="Sunny in Paris."))
    result = agents.Runner.run_streamed(weather_agent(cities), "Weather in Paris?")
    raw_types: list[str] = []
    text_deltas: list[str] = []
    item_types: list[str] = []
    async for event in result.stream_events():
        if event.type == "raw_response_event":
            raw_types.append(event.data.type)
            if event.data.type == "response.output_text.delta":
                text_deltas.append(event.data.delta)
        elif event.type == "run_item_stream_event":
            item_types.append(event.item.type)
    assert result.final_output == "Sunny in Paris."
    assert cities == ["Paris"]
    assert item_types == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert text_deltas == ["Sunny ", "in ", "Paris."]
    assert raw_types.count("response.created") == raw_types.count("response.completed") == 2
    assert "response.function_call_arguments.delta" in raw_types
    assert served.exactly(2) == [RESPONSES, RESPONSES]
    assert_round_trip_upstream(fake, stream=True)
