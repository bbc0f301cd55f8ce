"""The Node clients against a relay that passes /v1/responses through to an upstream speaking the Responses API.

``native/<name>`` is served by the fake's own ``/v1/responses``
(``responses_api = "native"``, docs/responses.md); the same scripts as the
translated-path tests run against it, and the upstream must see Responses
requests, never a chat one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from fakes.relays import RelayPool, session_tree
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

from .node_scripts import require_node, run_node

MODEL = "native/up-model"
USAGE = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}


@pytest.fixture(scope="module")
def native_relay(fake_upstream: FakeUpstream, dead_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    native = {"kind": "openai", "base_url": fake_upstream.base_url, "model_prefix": "native/", "responses_api": "native"}
    with RelayPool(tmp_path_factory.mktemp("node-native")) as pool:
        yield pool.start(session_tree(fake_upstream, pool.data_dir(), dead_port, extra_upstreams={"native": native}))


def upstream_inputs(fake: FakeUpstream) -> list[dict[str, Any]]:
    """The Responses requests the upstream received, after checking no chat request reached it."""
    assert fake.chat_requests == []
    bodies = [request.body for request in fake.requests_to("responses")]
    assert all(body["model"] == "up-model" for body in bodies), bodies
    return bodies


@pytest.mark.parametrize("scenario", ["generate", "stream"])
def test_ai_sdk_text(native_relay: RunningServer, fake: FakeUpstream, scenario: str) -> None:
    node = require_node("ai", "@ai-sdk/openai")
    fake.enqueue(Reply(content="One two three", usage=USAGE))
    result = run_node(node, "ai_sdk.mjs", scenario, "responses", MODEL, relay=native_relay)
    assert result["text"] == "One two three"
    assert result["finishReason"] == "stop"
    usage = result["usage"]
    assert (usage["inputTokens"], usage["outputTokens"], usage["totalTokens"]) == (7, 3, 10)
    if scenario == "stream":
        assert result["deltas"] == ["One ", "two ", "three"]
    [sent] = upstream_inputs(fake)
    assert sent.get("stream", False) is (scenario == "stream")
    assert sent["input"][-1] == {"role": "user", "content": [{"type": "input_text", "text": "Say hi" if scenario == "generate" else "Count to five"}]}


@pytest.mark.parametrize("scenario", ["tool", "stream-tool"])
def test_ai_sdk_tool_round_trip(native_relay: RunningServer, fake: FakeUpstream, scenario: str) -> None:
    node = require_node("ai", "@ai-sdk/openai")
    fake.enqueue(Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_w1"}]), Reply(content="Sunny in Paris."))
    result = run_node(node, "ai_sdk.mjs", scenario, "responses", MODEL, relay=native_relay)
    assert result["executed"] == ["Paris"]
    assert result["text"] == "Sunny in Paris."
    assert [step["finishReason"] for step in result["steps"]] == ["tool-calls", "stop"]
    asked, answered = upstream_inputs(fake)
    assert [tool["name"] for tool in asked["tools"]] == ["get_weather"]
    call, output = answered["input"][-2:]
    assert (call["type"], call["call_id"], json.loads(call["arguments"])) == ("function_call", "call_w1", {"city": "Paris"})
    assert output == {"type": "function_call_output", "call_id": "call_w1", "output": '{"city":"Paris","forecast":"sunny"}'}


def test_openai_stream_and_continuation(native_relay: RunningServer, fake: FakeUpstream) -> None:
    node = require_node("openai")
    fake.enqueue(Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_w1"}]), Reply(content="Sunny in Paris."))
    result = run_node(node, "openai_responses.mjs", "stream", MODEL, relay=native_relay)
    assert result["eventTypes"][0] == "response.created" and result["eventTypes"][-1] == "response.completed"
    [call] = result["first"]["output"]
    assert (call["type"], call["call_id"], "".join(result["argumentDeltas"])) == ("function_call", "call_w1", call["arguments"])
    assert result["final"]["previous_response_id"] == result["first"]["id"]
    assert result["output_text"] == "Sunny in Paris."
    asked, answered = upstream_inputs(fake)
    assert asked["stream"] is True
    # State stays in toolrelay: the upstream gets the whole conversation, never a previous_response_id.
    assert "previous_response_id" not in answered and answered["store"] is False
    assert [item.get("type") for item in answered["input"]] == ["message", "function_call", "function_call_output"]
    assert answered["input"][-1] == {"type": "function_call_output", "call_id": "call_w1", "output": '{"forecast":"sunny"}'}
