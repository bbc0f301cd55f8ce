"""Built-in tool calls: executed by the server, fed back to the model, shown as steps."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from agent_helpers import (
    USER,
    assert_minted,
    assert_stream_contract,
    assert_unique_indexes,
    choice_deltas,
    content_of,
    expected_usage,
    extra,
    no_system,
    offered_tool_names,
    records,
    sent_usage,
    steps_of,
    stream_raw,
    streamed_steps,
    streamed_tool_calls,
    tool_messages,
    usage_dict,
)
from agent_test_tools import TestTools

from fakes.upstream import FakeUpstream, Reply

ANSWER = "It is noon in UTC right now."


def script_time_then_answer(fake: FakeUpstream, call_id: str = "call_time_1") -> None:
    fake.enqueue(
        Reply(tool_calls=[{"id": call_id, "name": "current_time", "arguments": {"timezone": "UTC"}}]),
        Reply(content=ANSWER),
    )


def check_time_steps(steps: list[dict[str, Any]], call_id: str = "call_time_1") -> None:
    assert_unique_indexes(steps)
    assert [s["type"] for s in steps] == ["tool_call", "tool_result"], steps
    call, result = steps
    assert call["tool"] == "current_time" and result["tool"] == "current_time"
    assert call["call_id"] == result["call_id"] == call_id
    assert call["arguments"] == {"timezone": "UTC"}
    assert result["status"] == "ok", result
    assert '"timezone":"UTC"' in result["summary"]
    assert call["step"] == result["step"] == 1


def check_second_upstream_request(fake: FakeUpstream, call_id: str = "call_time_1") -> None:
    reqs = fake.chat_requests
    assert len(reqs) == 2, [r.body for r in reqs]
    first, second = reqs[0].body, reqs[1].body
    assert first["model"] == "fake-model"
    assert "current_time" in offered_tool_names(first)
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert "agent_options" not in first
    convo = no_system(second["messages"])
    assert convo[0] == USER[0]
    assistant, tool = convo[1], convo[2]
    assert assistant["role"] == "assistant"
    assert [c["id"] for c in assistant["tool_calls"]] == [call_id]
    assert assistant["tool_calls"][0]["function"]["name"] == "current_time"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"timezone": "UTC"}
    assert tool["role"] == "tool" and tool["tool_call_id"] == call_id
    payload = json.loads(tool["content"])
    assert payload["timezone"] == "UTC" and payload["date"] in payload["datetime"]


def test_builtin_then_answer_non_streaming(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    script_time_then_answer(fake)
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    choice = completion.choices[0]
    assert completion.model == "agent/fake-model"
    assert completion.id.startswith("chatcmpl-")
    assert choice.finish_reason == "stop"
    assert choice.message.content == ANSWER
    assert not choice.message.tool_calls
    check_time_steps(steps_of(choice.message))
    reasoning = extra(choice.message, "reasoning_content")
    assert isinstance(reasoning, str) and "current_time" in reasoning, reasoning
    assert extra(choice.message, "reasoning") == reasoning
    check_second_upstream_request(fake)
    assert usage_dict(completion.usage) == expected_usage(fake)
    first_call = sent_usage(fake, fake.chat_requests[0])
    assert completion.usage.prompt_tokens > first_call["prompt_tokens"]  # both model calls are counted, not just one


def test_builtin_then_answer_streaming_sdk(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    script_time_then_answer(fake)
    contents: list[str] = []
    with oai.chat.completions.stream(model="agent/fake-model", messages=USER, stream_options={"include_usage": True}) as stream:
        for event in stream:
            if event.type == "content.delta":
                contents.append(event.delta)
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert final.model == "agent/fake-model"
    assert choice.finish_reason == "stop"
    assert choice.message.content == ANSWER
    assert "".join(contents) == ANSWER
    assert len(contents) >= 3, contents  # token by token, not one block
    assert not choice.message.tool_calls
    check_time_steps(steps_of(choice.message))
    reasoning = extra(choice.message, "reasoning_content")
    assert isinstance(reasoning, str) and "current_time" in reasoning
    check_second_upstream_request(fake)
    assert final.usage is not None
    assert usage_dict(final.usage) == expected_usage(fake)


@pytest.mark.parametrize("include_usage", [True, False])
def test_builtin_then_answer_raw_sse(ahttp: httpx.Client, fake: FakeUpstream, include_usage: bool) -> None:
    script_time_then_answer(fake)
    body: dict[str, Any] = {"model": "agent/fake-model", "messages": USER}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    response, raw = stream_raw(ahttp, body)
    assert response.status_code == 200, raw
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers.get("x-request-id")
    chunks = assert_stream_contract(raw, model="agent/fake-model", include_usage=include_usage, finish_reason="stop")
    assert content_of(chunks) == ANSWER
    content_chunks = [d for d in choice_deltas(chunks) if d.get("content")]
    assert len(content_chunks) >= 3, content_chunks
    steps = streamed_steps(chunks)
    check_time_steps(steps)
    # Each step record travels with its readable text, in both reasoning fields.
    for delta in choice_deltas(chunks):
        if delta.get("agent_steps_delta"):
            assert delta["reasoning_content"] and delta["reasoning"] == delta["reasoning_content"], delta
            assert not delta.get("content"), delta
    # Steps come before the answer.
    order = [("step" if d.get("agent_steps_delta") else "content") for d in choice_deltas(chunks) if d.get("agent_steps_delta") or d.get("content")]
    assert order == sorted(order, key=lambda k: k == "content"), order
    assert streamed_tool_calls(chunks) == []  # built-in calls never appear as tool_calls
    if include_usage:
        assert usage_dict(chunks[-1]["usage"]) == expected_usage(fake)


def test_two_builtin_calls_run_concurrently(oai: openai.OpenAI, fake: FakeUpstream, test_tools: TestTools) -> None:
    fake.enqueue(
        Reply(
            tool_calls=[
                {"id": "call_slow_a", "name": "slow", "arguments": {"seconds": 1, "tag": "a"}},
                {"id": "call_slow_b", "name": "slow", "arguments": {"seconds": 1, "tag": "b"}},
            ]
        ),
        Reply(content="Both done."),
    )
    started = time.monotonic()
    completion = oai.chat.completions.create(model="agent/fake-model", messages=[{"role": "user", "content": "wait twice"}])
    elapsed = time.monotonic() - started
    assert completion.choices[0].message.content == "Both done."
    assert elapsed < 1.8, f"two 1 s tools took {elapsed:.2f} s: not run in parallel"
    starts = test_tools.slow.of("start")
    ends = test_tools.slow.of("end")
    assert len(starts) == 2 and len(ends) == 2
    assert max(s.at for s in starts) < min(e.at for e in ends), "the second tool started only after the first ended"
    steps = steps_of(completion.choices[0].message)
    assert_unique_indexes(steps)
    assert {s["call_id"] for s in records(steps, "tool_call")} == {"call_slow_a", "call_slow_b"}
    results = records(steps, "tool_result")
    assert {s["call_id"] for s in results} == {"call_slow_a", "call_slow_b"}
    assert all(s["status"] == "ok" for s in results)
    second = fake.chat_requests[1].body
    assistant = [m for m in second["messages"] if m.get("role") == "assistant"]
    assert len(assistant) == 1 and [c["id"] for c in assistant[0]["tool_calls"]] == ["call_slow_a", "call_slow_b"]
    fed = {m["tool_call_id"]: m["content"] for m in tool_messages(second)}
    assert fed == {"call_slow_a": "slept 1 s (tag a)", "call_slow_b": "slept 1 s (tag b)"}


def test_tool_context_carries_scope_and_request_id(oai: openai.OpenAI, fake: FakeUpstream, test_tools: TestTools) -> None:
    fake.enqueue(Reply(tool_calls=[{"name": "echo", "arguments": {"text": "hi"}}]), Reply(content="ok"))
    raw = oai.chat.completions.with_raw_response.create(model="agent/fake-model", messages=USER, user="alice")
    assert raw.parse().choices[0].message.content == "ok"
    (event,) = test_tools.echo.of("start")
    assert event.context is not None
    assert event.context.user == "alice"
    assert event.context.scope == "k:local/u:alice"
    assert event.context.request_id and event.context.request_id == raw.headers.get("x-request-id")


def test_usage_estimated_when_the_upstream_sends_none(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"name": "current_time", "arguments": {}}], send_usage=False), Reply(content="hello there friend", send_usage=False))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 50  # two prompts, each with the tool schemas, counted with tiktoken
    assert usage.completion_tokens >= 3
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_client_function_shadows_builtin_of_same_name(oai: openai.OpenAI, fake: FakeUpstream, test_tools: TestTools) -> None:
    mine = {"type": "function", "function": {"name": "echo", "description": "The client's own echo.", "parameters": {"type": "object", "properties": {}}}}
    fake.enqueue(Reply(tool_calls=[{"id": "call_echo", "name": "echo", "arguments": {"text": "hi"}}]))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER, tools=[mine])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls or []] == ["echo"]
    assert_minted([c.id for c in choice.message.tool_calls or []], 1)
    assert not test_tools.echo.of("start")
    offered = fake.last_body["tools"]
    assert [t["function"]["name"] for t in offered].count("echo") == 1
    assert mine in offered


def test_disabled_tools_are_not_offered(agent_relay_factory: Any, fake: FakeUpstream) -> None:
    server, _tools = agent_relay_factory(agent={"disabled_tools": ["current_time", "echo"]})
    fake.enqueue(Reply(content="ok"))
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=60) as client:
        client.chat.completions.create(model="agent/fake-model", messages=USER)
        names = offered_tool_names(fake.last_body)
        assert "current_time" not in names and "echo" not in names and "slow" in names, names
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="agent/fake-model", messages=USER, extra_body={"agent_options": {"builtin_tools": ["current_time"]}})
    assert info.value.param == "agent_options.builtin_tools"  # type: ignore[attr-defined]


def test_max_parallel_tools_is_honoured(agent_relay_factory: Any, fake: FakeUpstream) -> None:
    server, tools = agent_relay_factory(agent={"max_parallel_tools": 1})
    fake.enqueue(
        Reply(tool_calls=[{"name": "slow", "arguments": {"seconds": 0.4, "tag": "a"}}, {"name": "slow", "arguments": {"seconds": 0.4, "tag": "b"}}]),
        Reply(content="ok"),
    )
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=60) as client:
        assert client.chat.completions.create(model="agent/fake-model", messages=USER).choices[0].message.content == "ok"
    starts = sorted(e.at for e in tools.slow.of("start"))
    ends = sorted(e.at for e in tools.slow.of("end"))
    assert len(starts) == 2 and starts[1] >= ends[0], "two tools ran at once despite max_parallel_tools = 1"


def test_upstream_refusal_reaches_the_client(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(refusal="I can't help with that."))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    assert completion.choices[0].message.refusal == "I can't help with that."


def test_upstream_content_filter_finish_reason_is_kept(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="", finish_reason="content_filter"))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    assert completion.choices[0].finish_reason == "content_filter"
