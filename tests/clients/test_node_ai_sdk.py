"""The Vercel AI SDK against toolrelay over real HTTP (``tests/node/ai_sdk.mjs``).

``createOpenAI({ baseURL, apiKey })(model)``, the SDK's default model, speaks
the Responses API; ``.chat(model)`` speaks Chat Completions. Each test runs the
SDK in Node against a real relay in front of the fake Chat-Completions
upstream, and checks both what the program got and what the upstream was sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fakes.relays import agent_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

from .node_scripts import require_node, run_node

# The SDK's own id prefix for each API: the id tells which endpoint answered.
API_ID_PREFIX = {"responses": "resp_", "chat": "chatcmpl-"}
WEATHER_CALL = {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_w1"}
WEATHER_RESULT = {"city": "Paris", "forecast": "sunny"}


@pytest.fixture
def node() -> str:
    return require_node("ai", "@ai-sdk/openai")


@pytest.fixture(scope="module")
def agent_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A relay serving ``agent:<model>`` with the built-in ``current_time``."""
    root = tmp_path_factory.mktemp("node-agent-relay")
    with start_relay(root, agent_tree(fake_upstream, root / "data")) as server:
        yield server


def ai_sdk(node: str, relay: RunningServer, scenario: str, api: str, model: str = "fake-model", *options: str) -> dict[str, Any]:
    return run_node(node, "ai_sdk.mjs", scenario, api, model, *options, relay=relay)


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_generate_text(node: str, relay: RunningServer, fake: FakeUpstream, http: httpx.Client, api: str) -> None:
    fake.enqueue(Reply(content="Hi there.", usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}))
    result = ai_sdk(node, relay, "generate", api)
    assert result["text"] == "Hi there."
    assert result["finishReason"] == "stop"
    usage = result["usage"]
    assert (usage["inputTokens"], usage["outputTokens"], usage["totalTokens"]) == (7, 3, 10)
    [step] = result["steps"]
    assert step["responseId"].startswith(API_ID_PREFIX[api]), step
    [request] = fake.chat_requests
    assert request.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    assert not request.is_stream
    if api == "responses":
        # The SDK stores by default: the response is there for the same key.
        stored = http.get(f"/v1/responses/{step['responseId']}")
        assert stored.status_code == 200, stored.text
        assert stored.json()["output"][0]["content"][0]["text"] == "Hi there."


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_stream_text(node: str, relay: RunningServer, fake: FakeUpstream, api: str) -> None:
    fake.enqueue(Reply(content="One two three four five", usage={"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}))
    result = ai_sdk(node, relay, "stream", api)
    # Streamed as the upstream sent it, one word per chunk, not buffered into one piece.
    assert result["deltas"] == ["One ", "two ", "three ", "four ", "five"]
    assert result["text"] == "One two three four five"
    assert result["finishReason"] == "stop"
    for usage in (result["usage"], result["totalUsage"]):
        assert (usage["inputTokens"], usage["outputTokens"], usage["totalTokens"]) == (5, 6, 11), usage
    [request] = fake.chat_requests
    assert request.is_stream
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["messages"][-1] == {"role": "user", "content": "Count to five"}


def check_tool_round_trip(result: dict[str, Any], fake: FakeUpstream, api: str) -> None:
    assert result["executed"] == ["Paris"]
    first, second = result["steps"]
    assert first["finishReason"] == "tool-calls"
    assert first["toolCalls"] == [{"toolCallId": "call_w1", "toolName": "get_weather", "input": {"city": "Paris"}}]
    assert first["toolResults"] == [{"toolCallId": "call_w1", "toolName": "get_weather", "output": WEATHER_RESULT}]
    assert second["finishReason"] == "stop" and second["text"] == "Sunny in Paris."
    assert result["text"] == "Sunny in Paris."
    assert all(step["responseId"].startswith(API_ID_PREFIX[api]) for step in result["steps"]), result["steps"]
    asked, answered = fake.chat_requests
    [offered] = asked.body["tools"]
    assert offered["function"]["name"] == "get_weather"
    assert offered["function"]["parameters"]["required"] == ["city"]
    call, output = answered.body["messages"][-2:]
    assert call["role"] == "assistant"
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in call["tool_calls"]] == [
        ("call_w1", "get_weather", {"city": "Paris"})
    ]
    assert output == {"role": "tool", "tool_call_id": "call_w1", "content": json.dumps(WEATHER_RESULT, separators=(",", ":"))}


@pytest.mark.parametrize("scenario", ["tool", "stream-tool"])
@pytest.mark.parametrize("api", ["responses", "chat"])
def test_tool_round_trip(node: str, relay: RunningServer, fake: FakeUpstream, api: str, scenario: str) -> None:
    fake.enqueue(Reply(tool_calls=[WEATHER_CALL]), Reply(content="Sunny in Paris."))
    check_tool_round_trip(ai_sdk(node, relay, scenario, api), fake, api)


def test_tool_round_trip_after_text(node: str, relay: RunningServer, fake: FakeUpstream) -> None:
    """A model that says something before calling a tool: the SDK's next step refers to that text by item id (an item_reference)."""
    fake.enqueue(Reply(content="Let me check.", tool_calls=[WEATHER_CALL]), Reply(content="Sunny in Paris."))
    result = ai_sdk(node, relay, "tool", "responses")
    check_tool_round_trip(result, fake, "responses")
    assert result["steps"][0]["text"] == "Let me check."
    # The referenced item reached the model as the assistant's own words.
    assert fake.chat_requests[1].body["messages"][1]["content"] == "Let me check."


@pytest.mark.parametrize("scenario", ["tool", "stream-tool"])
def test_tool_round_trip_after_text_without_store(node: str, relay: RunningServer, fake: FakeUpstream, scenario: str) -> None:
    """The documented workaround: ``providerOptions.openai.store = false`` sends the earlier text whole, as a message."""
    fake.enqueue(Reply(content="Let me check.", tool_calls=[WEATHER_CALL]), Reply(content="Sunny in Paris."))
    result = ai_sdk(node, relay, scenario, "responses", "fake-model", "no-store")
    check_tool_round_trip(result, fake, "responses")
    assert result["steps"][0]["text"] == "Let me check."
    assert fake.chat_requests[1].body["messages"][1]["content"] == "Let me check."


def script_agent_run(fake: FakeUpstream, *client_calls: dict[str, Any]) -> None:
    """A built-in ``current_time`` step, then the given client tool calls (if any), then the answer."""
    fake.enqueue(Reply(tool_calls=[{"name": "current_time", "arguments": {"timezone": "UTC"}}]))
    fake.enqueue(*(Reply(tool_calls=[call]) for call in client_calls))
    fake.enqueue(Reply(content="It is noon in UTC."))


def check_builtin_step_ran(fake: FakeUpstream) -> None:
    first, second = fake.chat_requests[:2]
    assert "current_time" in [tool["function"]["name"] for tool in first.body["tools"]]
    [result] = [m for m in second.body["messages"] if m["role"] == "tool"]
    assert "UTC" in result["content"], result


@pytest.mark.parametrize("scenario", ["generate", "stream"])
def test_agent_model_through_chat_model(node: str, agent_relay: RunningServer, fake: FakeUpstream, scenario: str) -> None:
    """``provider.chat("agent:<m>")``: the agent loop's built-in step stays on the server; the SDK sees the answer."""
    script_agent_run(fake)
    result = ai_sdk(node, agent_relay, scenario, "chat", "agent:fake-model")
    assert result["text"] == "It is noon in UTC."
    assert result["finishReason"] == "stop"
    assert len(fake.chat_requests) == 2
    check_builtin_step_ran(fake)


def test_agent_model_client_tool_round_trip_through_chat_model(node: str, agent_relay: RunningServer, fake: FakeUpstream) -> None:
    """A built-in step, then the SDK's own tool (run in Node), then the agent's answer."""
    script_agent_run(fake, WEATHER_CALL)
    result = ai_sdk(node, agent_relay, "tool", "chat", "agent:fake-model")
    assert result["executed"] == ["Paris"]
    assert [step["toolCalls"][0]["toolName"] for step in result["steps"][:1]] == ["get_weather"]
    assert result["text"] == "It is noon in UTC."
    assert len(fake.chat_requests) == 3
    check_builtin_step_ran(fake)
    tool_results = [m for m in fake.chat_requests[2].body["messages"] if m["role"] == "tool"]
    assert json.loads(tool_results[-1]["content"]) == WEATHER_RESULT


@pytest.mark.parametrize("scenario", ["generate", "stream"])
def test_agent_model_through_default_provider(node: str, agent_relay: RunningServer, fake: FakeUpstream, scenario: str) -> None:
    """``provider("agent:<m>")`` on /v1/responses: the SDK meets the built-in step's server-side output items and must not crash.

    The non-streamed parser of ``@ai-sdk/openai`` accepts only the output item
    types it models (a toolrelay-only type would throw), the streamed one skips
    unknown ones: both are run.
    """
    script_agent_run(fake)
    result = ai_sdk(node, agent_relay, scenario, "responses", "agent:fake-model")
    assert result["text"] == "It is noon in UTC."
    assert result["finishReason"] == "stop"
    assert len(fake.chat_requests) == 2
    check_builtin_step_ran(fake)
    if scenario == "generate":
        # Whatever hosted item the step became, the SDK reports it as a call it did not run itself.
        [step] = result["steps"]
        assert [call["input"] for call in step["toolCalls"]] in ([], [{"timezone": "UTC"}]), step


def test_agent_model_client_tool_round_trip_through_default_provider(node: str, agent_relay: RunningServer, fake: FakeUpstream) -> None:
    script_agent_run(fake, WEATHER_CALL)
    result = ai_sdk(node, agent_relay, "tool", "responses", "agent:fake-model")
    assert result["executed"] == ["Paris"]
    assert result["text"] == "It is noon in UTC."
    check_builtin_step_ran(fake)


def test_agent_model_client_tool_round_trip_through_default_provider_without_store(node: str, agent_relay: RunningServer, fake: FakeUpstream) -> None:
    """With ``store: false`` the SDK leaves the built-in step's item out of its next request, and the run still finishes."""
    script_agent_run(fake, WEATHER_CALL)
    result = ai_sdk(node, agent_relay, "tool", "responses", "agent:fake-model", "no-store")
    assert result["executed"] == ["Paris"]
    assert result["text"] == "It is noon in UTC."
    check_builtin_step_ran(fake)
    tool_results = [m for m in fake.chat_requests[-1].body["messages"] if m["role"] == "tool"]
    assert json.loads(tool_results[-1]["content"]) == WEATHER_RESULT
