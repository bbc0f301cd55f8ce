"""``tool_choice`` "required" / a named function with client tools, in both modes (issue 10 item 25).

Semantics (docs/agent.md): the answer of such a request is a call of one of
the client's functions; built-in tools may run before it; at the step limit,
after a repeated built-in call or after an answer without a call, the model
is asked once more with only the client's functions offered, and a run that
still has no client call ends with a 502 ``tool_choice_not_satisfied``. As
with OpenAI, this holds for every request: a follow-up that sends
``required`` again asks for another call.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from agent_helpers import WEATHER_TOOL, assert_stream_contract, offered_tool_names, steps_of, stream_raw, streamed_steps, streamed_tool_calls

from fakes.upstream import FakeUpstream, Reply

QUESTION = [{"role": "user", "content": "What's the weather in Paris? Check the time too."}]
WEATHER_ARGS = {"city": "Paris"}


def native_model(body: dict[str, Any]) -> Reply:
    """Calls current_time (the same call every time) while built-ins are offered; the client's function once only it is."""
    if offered_tool_names(body) == ["get_weather"]:
        return Reply(tool_calls=[{"name": "get_weather", "arguments": WEATHER_ARGS}])
    if body.get("tool_choice") == "none":
        return Reply(content="It is noon; I cannot tell the weather.")
    return Reply(tool_calls=[{"name": "current_time", "arguments": {}}])


def check_client_call(message: Any, finish_reason: str) -> None:
    assert finish_reason == "tool_calls", (finish_reason, message)
    (call,) = message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == WEATHER_ARGS


def test_required_builtin_call_does_not_satisfy_it(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.responder = native_model
    completion = oai.chat.completions.create(model="agent/fake-model", messages=QUESTION, tools=[WEATHER_TOOL], tool_choice="required")
    choice = completion.choices[0]
    check_client_call(choice.message, choice.finish_reason)
    assert [s["type"] for s in steps_of(choice.message)] == ["tool_call", "tool_result", "repeat"]
    bodies = [r.body for r in fake.chat_requests]
    assert [b["tool_choice"] for b in bodies] == ["required", "required", "required"]
    assert {"current_time", "get_weather"} <= set(offered_tool_names(bodies[0]))
    assert offered_tool_names(bodies[-1]) == ["get_weather"]


def test_required_streamed_ends_with_the_client_call(ahttp: httpx.Client, fake: FakeUpstream) -> None:
    fake.responder = native_model
    response, raw = stream_raw(ahttp, {"model": "agent/fake-model", "messages": QUESTION, "tools": [WEATHER_TOOL], "tool_choice": "required"})
    assert response.status_code == 200
    chunks = assert_stream_contract(raw, model="agent/fake-model", include_usage=False, finish_reason="tool_calls")
    assert [c["function"].get("name") for c in streamed_tool_calls(chunks) if c.get("id")] == ["get_weather"]
    assert [s["type"] for s in streamed_steps(chunks)] == ["tool_call", "tool_result", "repeat"]


def test_required_at_the_step_limit_forces_the_client_call(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    zones = iter(["UTC", "Europe/Paris", "Asia/Tokyo"])

    def model(body: dict[str, Any]) -> Reply:
        if offered_tool_names(body) == ["get_weather"]:
            return Reply(tool_calls=[{"name": "get_weather", "arguments": WEATHER_ARGS}])
        return Reply(tool_calls=[{"name": "current_time", "arguments": {"timezone": next(zones)}}])

    fake.responder = model
    completion = oai.chat.completions.create(
        model="agent/fake-model", messages=QUESTION, tools=[WEATHER_TOOL], tool_choice="required", extra_body={"agent_options": {"max_steps": 2}}
    )
    choice = completion.choices[0]
    check_client_call(choice.message, choice.finish_reason)
    assert [s["type"] for s in steps_of(choice.message)][-1] == "limit"


def test_required_answer_without_a_call_is_asked_again(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    """An upstream that ignores tool_choice and answers in words: one more call, offering only the client's functions."""

    def model(body: dict[str, Any]) -> Reply:
        if offered_tool_names(body) == ["get_weather"]:
            return Reply(tool_calls=[{"name": "get_weather", "arguments": WEATHER_ARGS}])
        return Reply(content="The weather is probably fine.")

    fake.responder = model
    completion = oai.chat.completions.create(model="agent/fake-model", messages=QUESTION, tools=[WEATHER_TOOL], tool_choice="required")
    check_client_call(completion.choices[0].message, completion.choices[0].finish_reason)
    assert len(fake.chat_requests) == 2


def test_required_never_met_is_a_clear_error(ahttp: httpx.Client, fake: FakeUpstream) -> None:
    fake.responder = lambda body: Reply(content="I will not call anything.")
    response = ahttp.post("/v1/chat/completions", json={"model": "agent/fake-model", "messages": QUESTION, "tools": [WEATHER_TOOL], "tool_choice": "required"})
    # The words were produced before the refusal was known, so the error arrives after them.
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "tool_choice_not_satisfied" and "get_weather" in error["message"], error
    assert len(fake.chat_requests) == 2


@pytest.mark.parametrize(("follow_up_choice", "expect_call"), [("required", True), ("auto", False)])
def test_follow_up_request_decides_again(oai: openai.OpenAI, fake: FakeUpstream, follow_up_choice: str, expect_call: bool) -> None:
    """As with OpenAI, required applies per request: the client resets it to auto after its tool ran."""

    def model(body: dict[str, Any]) -> Reply:
        if body.get("tool_choice") == "required":
            return Reply(tool_calls=[{"name": "get_weather", "arguments": WEATHER_ARGS}])
        return Reply(content="Sunny in Paris.")

    fake.responder = model
    first = oai.chat.completions.create(model="agent/fake-model", messages=QUESTION, tools=[WEATHER_TOOL], tool_choice="required")
    (call,) = first.choices[0].message.tool_calls or []
    history = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = oai.chat.completions.create(model="agent/fake-model", messages=history, tools=[WEATHER_TOOL], tool_choice=follow_up_choice)  # type: ignore[arg-type]
    assert fake.last_body["tool_choice"] == follow_up_choice
    if expect_call:
        assert second.choices[0].finish_reason == "tool_calls"
    else:
        assert second.choices[0].message.content == "Sunny in Paris." and second.choices[0].finish_reason == "stop"


# ---------------------------------------------------------------- constrained mode


def schema_branches(body: dict[str, Any]) -> list[dict[str, Any]]:
    schema = body["response_format"]["json_schema"]["schema"]
    return schema.get("anyOf", [schema])


def branch_tools(body: dict[str, Any]) -> list[str]:
    return sorted(b["properties"]["tool"]["enum"][0] for b in schema_branches(body) if "tool" in b.get("properties", {}))


def allows_answer(body: dict[str, Any]) -> bool:
    return any("answer" in b.get("properties", {}) for b in schema_branches(body))


def constrained_model(body: dict[str, Any]) -> Reply:
    """A small model that keeps picking the built-in while it may."""
    if "current_time" in branch_tools(body):
        return Reply(content='{"tool": "current_time", "arguments": {}}')
    if "get_weather" in branch_tools(body):
        return Reply(content=json.dumps({"tool": "get_weather", "arguments": WEATHER_ARGS}))
    return Reply(content=json.dumps({"answer": "It is noon."}))


def test_constrained_required_ends_with_the_client_call(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.responder = constrained_model
    completion = oai.chat.completions.create(model="agent/fake-constrained", messages=QUESTION, tools=[WEATHER_TOOL], tool_choice="required")
    check_client_call(completion.choices[0].message, completion.choices[0].finish_reason)
    bodies = [r.body for r in fake.chat_requests]
    assert {"current_time", "get_weather"} <= set(branch_tools(bodies[0])) and not allows_answer(bodies[0])
    assert branch_tools(bodies[-1]) == ["get_weather"] and not allows_answer(bodies[-1])


def test_constrained_named_client_function_is_the_only_branch(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.responder = constrained_model
    completion = oai.chat.completions.create(
        model="agent/fake-constrained", messages=QUESTION, tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    check_client_call(completion.choices[0].message, completion.choices[0].finish_reason)
    (body,) = (r.body for r in fake.chat_requests)
    assert branch_tools(body) == ["get_weather"] and not allows_answer(body)
