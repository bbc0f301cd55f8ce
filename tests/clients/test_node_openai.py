"""The official OpenAI Node SDK's Responses API against toolrelay over real HTTP (``tests/node/openai_responses.mjs``).

``client.responses.create``, the ``client.responses.stream`` helper's
``finalResponse()`` with a function call continued by ``previous_response_id``,
and retrieve / input items / delete, against a real relay in front of the fake
Chat-Completions upstream.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

from .node_scripts import require_node, run_node


@pytest.fixture
def node() -> str:
    return require_node("openai")


def responses(node: str, relay: RunningServer, scenario: str) -> dict[str, Any]:
    return run_node(node, "openai_responses.mjs", scenario, "fake-model", relay=relay)


def test_create(node: str, relay: RunningServer, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="Hi there.", usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}))
    result = responses(node, relay, "create")
    response = result["response"]
    assert response["id"].startswith("resp_") and response["object"] == "response"
    assert (response["status"], response["model"], response["instructions"]) == ("completed", "fake-model", "Be brief.")
    assert result["output_text"] == "Hi there."
    usage = response["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (7, 3, 10)
    [request] = fake.chat_requests
    assert request.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    assert not request.is_stream


def test_stream_final_response_and_continuation(node: str, relay: RunningServer, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_w1"}]), Reply(content="Sunny in Paris."))
    result = responses(node, relay, "stream")
    assert result["eventTypes"] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * len(result["argumentDeltas"]),
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert len(result["argumentDeltas"]) > 1  # streamed in pieces, as the upstream sent them
    first = result["first"]
    [call] = first["output"]
    assert (call["type"], call["name"], call["call_id"], call["status"]) == ("function_call", "get_weather", "call_w1", "completed")
    assert "".join(result["argumentDeltas"]) == call["arguments"]
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    final = result["final"]
    assert final["previous_response_id"] == first["id"] and final["status"] == "completed"
    assert result["output_text"] == "Sunny in Paris."
    assert result["textDeltas"] == ["Sunny ", "in ", "Paris."]
    asked, answered = fake.chat_requests
    assert asked.is_stream and answered.is_stream
    assert [tool["function"]["name"] for tool in asked.body["tools"]] == ["get_weather"]
    # The stored conversation, then the client's function output.
    user, assistant, tool = answered.body["messages"]
    assert user == {"role": "user", "content": "Weather in Paris?"}
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_w1"]
    assert tool == {"role": "tool", "tool_call_id": "call_w1", "content": '{"forecast":"sunny"}'}


def test_retrieve_input_items_delete(node: str, relay: RunningServer, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="Noted."))
    result = responses(node, relay, "lifecycle")
    created = result["created"]
    assert created["metadata"] == {"ticket": "42"}
    assert result["retrieved"] == created
    [item] = result["inputItems"]
    assert (item["type"], item["role"], item["content"]) == ("message", "user", [{"type": "input_text", "text": "Remember this"}])
    assert result["deleted"] == {"id": created["id"], "object": "response", "deleted": True}
    after = result["afterDelete"]
    assert after["status"] == 404, after
    assert after["error"]["type"] == "invalid_request_error"
    assert len(fake.chat_requests) == 1  # retrieve, list and delete call no model
