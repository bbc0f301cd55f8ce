"""Run limits (steps, wall time, tokens, tool timeout, output size) and every way a tool call can go wrong."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from agent_helpers import (
    USER,
    WEATHER_TOOL,
    assert_stream_contract,
    assert_unique_indexes,
    content_of,
    expected_usage,
    offered_tool_names,
    records,
    steps_of,
    stream_raw,
    streamed_steps,
    tool_messages,
    usage_dict,
)
from agent_test_tools import TestTools

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

FINAL = "Here is what I found."


def keeps_calling(tool: str = "echo", *, vary: bool = True) -> Callable[[dict[str, Any]], Reply]:
    """A model that calls ``tool`` whenever tools are offered (new arguments each time unless ``vary`` is off)."""

    def respond(body: dict[str, Any]) -> Reply:
        if tool not in offered_tool_names(body) or body.get("tool_choice") == "none":
            return Reply(content=FINAL)
        n = len(tool_messages(body))
        return Reply(tool_calls=[{"name": tool, "arguments": {"text": f"round {n}" if vary else "same"}}])

    return respond


def limit_record(steps: list[dict[str, Any]], name: str) -> dict[str, Any]:
    limits = records(steps, "limit")
    assert [s.get("limit") for s in limits] == [name], steps
    assert isinstance(limits[0]["message"], str) and limits[0]["message"]
    return limits[0]


def agent_options(**options: Any) -> dict[str, Any]:
    return {"agent_options": options}


# ---------------------------------------------------------------- limits


def test_max_steps(oai: openai.OpenAI, fake: FakeUpstream, test_tools: TestTools) -> None:
    fake.responder = keeps_calling()
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER, extra_body=agent_options(max_steps=1))
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content == FINAL  # a final answer was asked for after the limit
    steps = steps_of(choice.message)
    assert_unique_indexes(steps)
    assert [s["type"] for s in steps] == ["tool_call", "tool_result", "limit"], steps
    limit_record(steps, "max_steps")
    assert len(test_tools.echo.of("start")) == 1
    reqs = fake.chat_requests
    assert len(reqs) == 3
    # The final-answer request may not call tools: offered (histories with calls need them) but tool_choice none.
    assert reqs[-1].body.get("tool_choice") == "none"
    assert usage_dict(completion.usage) == expected_usage(fake)


def test_max_steps_streamed(ahttp: httpx.Client, fake: FakeUpstream) -> None:
    fake.responder = keeps_calling()
    response, raw = stream_raw(
        ahttp, {"model": "agent/fake-model", "messages": USER, "agent_options": {"max_steps": 2}, "stream_options": {"include_usage": True}}
    )
    assert response.status_code == 200
    chunks = assert_stream_contract(raw, model="agent/fake-model", include_usage=True, finish_reason="length")
    steps = streamed_steps(chunks)
    assert_unique_indexes(steps)
    assert [s["type"] for s in steps] == ["tool_call", "tool_result", "tool_call", "tool_result", "limit"]
    limit_record(steps, "max_steps")
    assert content_of(chunks) == FINAL
    assert usage_dict(chunks[-1]["usage"]) == expected_usage(fake)


def test_client_cannot_raise_the_server_step_limit(agent_relay_factory: Callable[..., tuple[RunningServer, TestTools]], fake: FakeUpstream) -> None:
    server, tools = agent_relay_factory(agent={"max_steps": 2})
    fake.responder = keeps_calling()
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=60) as client:
        completion = client.chat.completions.create(model="agent/fake-model", messages=USER, extra_body=agent_options(max_steps=50))
    assert completion.choices[0].finish_reason == "length"
    limit_record(steps_of(completion.choices[0].message), "max_steps")
    assert len(tools.echo.of("start")) == 2


def test_max_wall_seconds_during_a_tool(oai: openai.OpenAI, fake: FakeUpstream, test_tools: TestTools) -> None:
    fake.enqueue(Reply(tool_calls=[{"name": "slow", "arguments": {"seconds": 20}}]), Reply(content="too late"))
    started = time.monotonic()
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER, extra_body=agent_options(max_wall_seconds=1.0))
    elapsed = time.monotonic() - started
    assert elapsed < 8, elapsed
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    steps = steps_of(choice.message)
    assert_unique_indexes(steps)
    assert steps[-1]["type"] == "limit"
    limit_record(steps, "max_wall_seconds")
    assert choice.message.content in (None, "")
    assert test_tools.slow.wait_for("cancelled", timeout=5)
    assert not test_tools.slow.of("end")


def test_max_wall_seconds_during_a_model_call(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="slow answer", delay=10))
    started = time.monotonic()
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER, extra_body=agent_options(max_wall_seconds=1.0))
    assert time.monotonic() - started < 8
    assert completion.choices[0].finish_reason == "length"
    limit_record(steps_of(completion.choices[0].message), "max_wall_seconds")
    assert fake.wait_for_disconnect(1, timeout=5), "the upstream call was not cancelled"


def test_max_total_tokens(oai: openai.OpenAI, fake: FakeUpstream, test_tools: TestTools) -> None:
    fake.responder = keeps_calling()
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER, extra_body=agent_options(max_total_tokens=5))
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    limit_record(steps_of(choice.message), "max_total_tokens")
    assert len(fake.chat_requests) == 1  # no further model call once the budget is spent
    assert not test_tools.echo.of("start")
    assert usage_dict(completion.usage) == expected_usage(fake)
    assert completion.usage.total_tokens > 5


def test_tool_timeout_from_settings(agent_relay_factory: Callable[..., tuple[RunningServer, TestTools]], fake: FakeUpstream) -> None:
    server, tools = agent_relay_factory(agent={"tool_timeout_seconds": 0.5})
    fake.enqueue(Reply(tool_calls=[{"id": "call_slow", "name": "slow", "arguments": {"seconds": 10}}]), Reply(content=FINAL))
    started = time.monotonic()
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=60) as client:
        completion = client.chat.completions.create(model="agent/fake-model", messages=USER)
    assert time.monotonic() - started < 6
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content == FINAL  # the run went on
    (result,) = records(steps_of(choice.message), "tool_result")
    assert result["status"] == "timeout" and result["call_id"] == "call_slow"
    (fed,) = tool_messages(fake.last_body)
    assert fed["tool_call_id"] == "call_slow"
    assert "did not finish within 0.5 seconds" in fed["content"], fed
    assert tools.slow.wait_for("cancelled", timeout=5)


def test_tool_own_timeout(oai: openai.OpenAI, fake: FakeUpstream, test_tools: TestTools) -> None:
    fake.enqueue(Reply(tool_calls=[{"name": "hang", "arguments": {"seconds": 10}}]), Reply(content=FINAL))
    started = time.monotonic()
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    assert time.monotonic() - started < 6
    (result,) = records(steps_of(completion.choices[0].message), "tool_result")
    assert result["status"] == "timeout"
    assert completion.choices[0].message.content == FINAL
    assert "did not finish within 0.5 seconds" in tool_messages(fake.last_body)[0]["content"]


def test_tool_output_truncated(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"name": "huge", "arguments": {}}]), Reply(content=FINAL))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    (result,) = records(steps_of(completion.choices[0].message), "tool_result")
    assert result["status"] == "ok" and result.get("truncated") is True, result
    assert len(result["summary"]) <= 300
    (fed,) = tool_messages(fake.last_body)
    # The limit (2000) keeps the first three quarters and the last quarter: a result's end matters too.
    head, marker, tail = fed["content"].partition("\n[output truncated: 8000 characters omitted]\n")
    assert marker and head == "x" * 1500 and tail == "x" * 500
    assert len(fed["content"]) < 2100


# ---------------------------------------------------------------- bad tools, bad calls


@pytest.mark.parametrize(
    ("tool", "arguments", "status", "fed_text"),
    [
        ("boom", {}, "error", "error: boom failed: RuntimeError: kaboom 42"),
        ("bad_output", {}, "error", "error: bad_output returned an invalid result."),
        ("echo", "{not json", "invalid_arguments", "are not valid JSON"),
        ("echo", {"text": 5}, "invalid_arguments", "text: 5 is not of type 'string'"),
        ("echo", {}, "invalid_arguments", "'text' is a required property"),
        ("echo", {"text": "hi", "loud": True}, "invalid_arguments", "Additional properties are not allowed"),
        ("echo", "[1, 2]", "invalid_arguments", "must be a JSON object"),
        ("teleport", {"to": "Mars"}, "unknown_tool", "there is no tool named 'teleport'"),
    ],
)
def test_failed_call_is_reported_and_the_run_continues(
    oai: openai.OpenAI, fake: FakeUpstream, test_tools: TestTools, tool: str, arguments: Any, status: str, fed_text: str
) -> None:
    fake.enqueue(Reply(tool_calls=[{"id": "call_bad", "name": tool, "arguments": arguments}]), Reply(content=FINAL))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content == FINAL
    assert not choice.message.tool_calls
    steps = steps_of(choice.message)
    assert_unique_indexes(steps)
    call, result = steps
    assert call["type"] == "tool_call" and call["tool"] == tool and call["call_id"] == "call_bad"
    assert call["arguments"] == (json.loads(arguments) if arguments == "[1, 2]" else arguments)
    assert result["type"] == "tool_result" and result["status"] == status and result["call_id"] == "call_bad", result
    (fed,) = tool_messages(fake.last_body)
    assert fed["tool_call_id"] == "call_bad"
    assert fed_text in fed["content"], fed["content"]
    assert fed["content"].startswith("error:")
    if status == "invalid_arguments":
        assert not test_tools.echo.of("start")  # validation happens before the tool runs
    if status == "unknown_tool":
        assert "current_time" in fed["content"]  # the model is told what exists


def test_repeated_identical_call_is_stopped(oai: openai.OpenAI, fake: FakeUpstream, test_tools: TestTools) -> None:
    fake.responder = keeps_calling(vary=False)
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    choice = completion.choices[0]
    assert choice.message.content == FINAL
    assert choice.finish_reason == "stop"
    steps = steps_of(choice.message)
    assert_unique_indexes(steps)
    assert [s["type"] for s in steps] == ["tool_call", "tool_result", "repeat"], steps
    assert "echo" in steps[-1]["message"]
    assert len(test_tools.echo.of("start")) == 1
    reqs = fake.chat_requests
    assert len(reqs) == 3
    assert reqs[-1].body.get("tool_choice") == "none"


def test_repeated_call_with_client_tools_asks_final_answer_with_tool_choice_none(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.responder = keeps_calling(vary=False)
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER, tools=[WEATHER_TOOL])
    assert completion.choices[0].message.content == FINAL
    assert records(steps_of(completion.choices[0].message), "repeat")
    last = fake.last_body
    assert last["tool_choice"] == "none"
    assert "get_weather" in offered_tool_names(last)


def test_repeat_detection_ignores_argument_key_order(oai: openai.OpenAI, fake: FakeUpstream, test_tools: TestTools) -> None:
    fake.enqueue(
        Reply(tool_calls=[{"name": "slow", "arguments": '{"seconds": 0, "tag": "t"}'}]),
        Reply(tool_calls=[{"name": "slow", "arguments": '{"tag":"t","seconds":0}'}]),
        Reply(content=FINAL),
    )
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    assert completion.choices[0].message.content == FINAL
    assert [s["type"] for s in steps_of(completion.choices[0].message)] == ["tool_call", "tool_result", "repeat"]
    assert len(test_tools.slow.of("start")) == 1


@pytest.mark.parametrize("stopper", ["repeat", "max_steps"])
def test_final_answer_request_says_tool_choice_none(oai: openai.OpenAI, fake: FakeUpstream, stopper: str) -> None:
    fake.responder = keeps_calling(vary=stopper != "repeat")
    options = agent_options(max_steps=1) if stopper == "max_steps" else None
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER, extra_body=options)
    assert completion.choices[0].message.content == FINAL
    assert fake.last_body.get("tool_choice") == "none"
