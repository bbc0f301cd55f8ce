"""pydantic-ai against toolrelay over real HTTP, unchanged.

Its default OpenAI model string, ``"openai:<id>"``, is an
``OpenAIResponsesModel``: it speaks ``/v1/responses`` (``"openai-chat:<id>"``
is the Chat Completions one). The relay translates to the fake
Chat-Completions upstream, so each test checks both sides: the endpoint the
client reached and what the upstream was sent.
"""

from __future__ import annotations

import pytest
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

from .conftest import ServedRequests

RESPONSES = ("POST", "/v1/responses", 200)


@pytest.fixture
def openai_env(relay: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented zero-code setup: the OpenAI variables every OpenAI-based client reads."""
    monkeypatch.setenv("OPENAI_BASE_URL", relay.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


async def test_default_openai_model_string_runs_on_responses(openai_env: None, fake: FakeUpstream, served: ServedRequests) -> None:
    fake.enqueue(Reply(content="Hi there.", usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}))
    agent = Agent("openai:fake-model", instructions="Be brief.")
    assert isinstance(agent.model, OpenAIResponsesModel)
    result = await agent.run("Say hi")
    assert result.output == "Hi there."
    usage = result.usage
    assert (usage.input_tokens, usage.output_tokens) == (7, 3)
    assert served.exactly(1) == [RESPONSES]
    [request] = fake.chat_requests
    assert request.body["model"] == "fake-model"
    assert request.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]


async def test_function_tool_round_trip(relay: RunningServer, fake: FakeUpstream, served: ServedRequests) -> None:
    provider = OpenAIProvider(base_url=relay.base_url, api_key="sk-test")
    agent = Agent(OpenAIResponsesModel("fake-model", provider=provider))
    cities: list[str] = []

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        cities.append(city)
        return f"sunny in {city}"

    fake.enqueue(Reply(tool_calls=[{"id": "call_w1", "name": "get_weather", "arguments": {"city": "Paris"}}]), Reply(content="Sunny in Paris."))
    result = await agent.run("Weather in Paris?")
    assert result.output == "Sunny in Paris."
    assert cities == ["Paris"]  # the tool ran in the client, between two relay turns
    assert served.exactly(2) == [RESPONSES, RESPONSES]
    first, second = (r.body for r in fake.chat_requests)
    [tool] = first["tools"]
    assert tool["function"]["name"] == "get_weather"
    assert tool["function"]["parameters"]["properties"] == {"city": {"type": "string"}}
    assert second["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}],
        },
        {"role": "tool", "tool_call_id": "call_w1", "content": "sunny in Paris"},
    ]


async def test_streamed_run(openai_env: None, fake: FakeUpstream, served: ServedRequests) -> None:
    fake.enqueue(Reply(content="one two three four", chunk_delay=0.02))
    agent = Agent("openai:fake-model")
    async with agent.run_stream("Count to four") as run:
        deltas = [text async for text in run.stream_text(delta=True, debounce_by=None)]
    assert "".join(deltas) == "one two three four"
    assert len(deltas) > 1  # as the upstream's chunks arrived, not one buffered answer
    assert served.exactly(1) == [RESPONSES]
    [request] = fake.chat_requests
    assert request.is_stream and request.body["messages"] == [{"role": "user", "content": "Count to four"}]
