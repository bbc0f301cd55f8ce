"""Client tools: handed back as standard tool_calls; the loop resumes with the built-in steps restored."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from agent_helpers import (
    STOCK_TOOL,
    USER,
    WEATHER_TOOL,
    assert_minted,
    assert_stream_contract,
    assert_unique_indexes,
    choice_deltas,
    extra,
    no_system,
    offered_tool_names,
    records,
    steps_of,
    stream_raw,
    streamed_steps,
    streamed_tool_calls,
)

from fakes.upstream import FakeUpstream, Reply

QUESTION = [{"role": "user", "content": "What's the weather in Paris and the ACME price, and what time is it?"}]
TIME_CALL = {"id": "call_time_x", "name": "current_time", "arguments": {}}
WEATHER_CALL = {"id": "call_w1", "name": "get_weather", "arguments": {"city": "Paris"}}
STOCK_CALL = {"id": "call_s1", "name": "get_stock", "arguments": {"ticker": "ACME"}}
FINAL = "Sunny in Paris, ACME at 42."


def script_builtin_then_client(fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[TIME_CALL]), Reply(tool_calls=[WEATHER_CALL, STOCK_CALL], arg_chunks=4))


def client_results(ids: list[str]) -> list[dict[str, Any]]:
    """The client's answers to its two calls, under the ids the relay gave them."""
    return [
        {"role": "tool", "tool_call_id": ids[0], "content": "sunny, 21 C"},
        {"role": "tool", "tool_call_id": ids[1], "content": "42.00 USD"},
    ]


# What the upstream gets for them: the relay maps its ids back to the upstream's.
UPSTREAM_RESULTS = client_results(["call_w1", "call_s1"])


def plain_assistant(calls: list[dict[str, Any]], ids: list[str] | None = None) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": ids[i] if ids else c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
            for i, c in enumerate(calls)
        ],
    }


def assert_restored(body: dict[str, Any], *, builtin_in_same_turn: bool = False) -> None:
    """The upstream got the hidden built-in step back, before the client's own calls and results."""
    convo = no_system(body["messages"])
    roles = [m["role"] for m in convo]
    if builtin_in_same_turn:
        assert roles == ["user", "assistant", "tool", "tool"], roles
        ids = [c["id"] for c in convo[1]["tool_calls"]]
        assert ids == ["call_time_x", "call_w1"], ids
        assert convo[2]["tool_call_id"] == "call_time_x" and json.loads(convo[2]["content"])["timezone"] == "UTC"
        assert convo[3] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 21 C"}
        return
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "tool"], roles
    assert [c["id"] for c in convo[1]["tool_calls"]] == ["call_time_x"]
    assert convo[1]["tool_calls"][0]["function"]["name"] == "current_time"
    assert convo[2]["tool_call_id"] == "call_time_x" and json.loads(convo[2]["content"])["timezone"] == "UTC"
    assert [c["id"] for c in convo[3]["tool_calls"]] == ["call_w1", "call_s1"]
    assert convo[4:] == UPSTREAM_RESULTS


def test_client_calls_returned_then_resume_restores_builtin_steps(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    script_builtin_then_client(fake)
    first = oai.chat.completions.create(model="agent/fake-model", messages=QUESTION, tools=[WEATHER_TOOL, STOCK_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None
    ids = assert_minted([c.id for c in calls], 2)
    assert [c.function.name for c in calls] == ["get_weather", "get_stock"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"ticker": "ACME"}]
    assert all(c.type == "function" for c in calls)
    steps = steps_of(choice.message)
    assert_unique_indexes(steps)
    assert [(s["type"], s["tool"]) for s in steps] == [("tool_call", "current_time"), ("tool_result", "current_time")]
    assert len(fake.chat_requests) == 2
    assert offered_tool_names(fake.chat_requests[0].body)[-2:] == ["get_weather", "get_stock"]

    # The client answers its calls, echoing the SDK's assistant message as most clients do.
    fake.enqueue(Reply(content=FINAL))
    second = oai.chat.completions.create(
        model="agent/fake-model",
        messages=[*QUESTION, choice.message, *client_results(ids)],  # type: ignore[list-item]
        tools=[WEATHER_TOOL, STOCK_TOOL],
    )
    assert second.choices[0].message.content == FINAL
    assert second.choices[0].finish_reason == "stop"
    assert len(fake.chat_requests) == 3
    assert_restored(fake.chat_requests[-1].body)


def test_client_calls_streamed_sdk_and_raw(oai: openai.OpenAI, ahttp: httpx.Client, fake: FakeUpstream) -> None:
    script_builtin_then_client(fake)
    done: list[tuple[str, int, str]] = []
    with oai.chat.completions.stream(model="agent/fake-model", messages=QUESTION, tools=[WEATHER_TOOL, STOCK_TOOL]) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.done":
                done.append((event.name, event.index, event.arguments))
        final = stream.get_final_completion()
    assert done == [("get_weather", 0, json.dumps({"city": "Paris"})), ("get_stock", 1, json.dumps({"ticker": "ACME"}))]
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert_minted([c.id for c in choice.message.tool_calls or []], 2)  # a repeated id would be concatenated
    assert [s["tool"] for s in steps_of(choice.message)] == ["current_time", "current_time"]

    # The same turn, raw.
    fake.reset()
    script_builtin_then_client(fake)
    response, raw = stream_raw(ahttp, {"model": "agent/fake-model", "messages": QUESTION, "tools": [WEATHER_TOOL, STOCK_TOOL]})
    assert response.status_code == 200
    chunks = assert_stream_contract(raw, model="agent/fake-model", include_usage=False, finish_reason="tool_calls")
    deltas = streamed_tool_calls(chunks)
    assert deltas, chunks
    assert all(isinstance(d["index"], int) and not isinstance(d["index"], bool) for d in deltas), deltas
    assert sorted({d["index"] for d in deltas}) == [0, 1]
    raw_ids = assert_minted([d["id"] for d in deltas if "id" in d], 2)
    for index, call in ((0, WEATHER_CALL), (1, STOCK_CALL)):
        mine = [d for d in deltas if d["index"] == index]
        head, rest = mine[0], mine[1:]
        assert head["id"] == raw_ids[index] and head["type"] == "function" and head["function"]["name"] == call["name"], head
        for d in rest:
            assert set(d) == {"index", "function"} and set(d["function"]) == {"arguments"}, d
        assert json.loads("".join(d["function"].get("arguments") or "" for d in mine)) == call["arguments"]
    assert {d["function"]["name"] for d in deltas if "name" in d.get("function", {})} == {"get_weather", "get_stock"}
    assert [s["tool"] for s in streamed_steps(chunks)] == ["current_time", "current_time"]
    assert not any(d.get("content") for d in choice_deltas(chunks))

    # Resume: the restored history reaches the upstream.
    fake.enqueue(Reply(content=FINAL))
    resumed = oai.chat.completions.create(
        model="agent/fake-model",
        messages=[*QUESTION, plain_assistant([WEATHER_CALL, STOCK_CALL], raw_ids), *client_results(raw_ids)],
        tools=[WEATHER_TOOL, STOCK_TOOL],
    )
    assert resumed.choices[0].message.content == FINAL
    assert_restored(fake.chat_requests[-1].body)


def test_client_sending_full_history_without_continuation(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    history = [
        *QUESTION,
        plain_assistant([{"id": "call_never_issued", "name": "get_weather", "arguments": {"city": "Oslo"}}]),
        {"role": "tool", "tool_call_id": "call_never_issued", "content": "rainy"},
    ]
    fake.enqueue(Reply(content="Rainy in Oslo."))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=history, tools=[WEATHER_TOOL])
    assert completion.choices[0].message.content == "Rainy in Oslo."
    assert completion.choices[0].finish_reason == "stop"
    assert extra(completion.choices[0].message, "agent_steps") in (None, [])
    assert no_system(fake.last_body["messages"]) == history


@pytest.mark.parametrize(
    ("first_user", "second_user", "restored"), [("alice", "alice", True), ("alice", "bob", False), ("alice", None, False), (None, None, True)]
)
def test_continuation_scope_is_key_and_user(oai: openai.OpenAI, fake: FakeUpstream, first_user: str | None, second_user: str | None, restored: bool) -> None:
    script_builtin_then_client(fake)
    kwargs: dict[str, Any] = {"user": first_user} if first_user else {}
    first = oai.chat.completions.create(model="agent/fake-model", messages=QUESTION, tools=[WEATHER_TOOL, STOCK_TOOL], **kwargs)
    assert first.choices[0].finish_reason == "tool_calls"
    fake.enqueue(Reply(content=FINAL))
    kwargs = {"user": second_user} if second_user else {}
    ids = assert_minted([c.id for c in first.choices[0].message.tool_calls or []], 2)
    resume = [*QUESTION, plain_assistant([WEATHER_CALL, STOCK_CALL], ids), *client_results(ids)]
    oai.chat.completions.create(model="agent/fake-model", messages=resume, tools=[WEATHER_TOOL, STOCK_TOOL], **kwargs)
    body = fake.last_body
    if restored:
        assert_restored(body)
    else:
        assert no_system(body["messages"]) == resume
        assert "call_time_x" not in json.dumps(body["messages"])


def test_mixed_builtin_and_client_calls_in_one_turn(oai: openai.OpenAI, ahttp: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{**TIME_CALL, "arguments": {"timezone": "UTC"}}, WEATHER_CALL]))
    response, raw = stream_raw(ahttp, {"model": "agent/fake-model", "messages": QUESTION, "tools": [WEATHER_TOOL]})
    assert response.status_code == 200
    chunks = assert_stream_contract(raw, model="agent/fake-model", include_usage=False, finish_reason="tool_calls")
    deltas = streamed_tool_calls(chunks)
    assert {d["index"] for d in deltas} == {0}
    (minted,) = assert_minted([d["id"] for d in deltas if "id" in d], 1)
    assert "current_time" not in json.dumps(deltas)
    steps = streamed_steps(chunks)
    assert_unique_indexes(steps)
    assert [(s["type"], s["tool"], s["call_id"]) for s in steps] == [
        ("tool_call", "current_time", "call_time_x"),
        ("tool_result", "current_time", "call_time_x"),
    ]
    assert steps[1]["status"] == "ok"
    assert len(fake.chat_requests) == 1

    fake.enqueue(Reply(content="Sunny, and it is noon."))
    completion = oai.chat.completions.create(
        model="agent/fake-model",
        messages=[*QUESTION, plain_assistant([WEATHER_CALL], [minted]), {"role": "tool", "tool_call_id": minted, "content": "sunny, 21 C"}],
        tools=[WEATHER_TOOL],
    )
    assert completion.choices[0].message.content == "Sunny, and it is noon."
    assert_restored(fake.last_body, builtin_in_same_turn=True)


def test_mixed_turn_non_streaming(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[WEATHER_CALL, TIME_CALL]))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=QUESTION, tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls or []] == ["get_weather"]
    assert_minted([c.id for c in choice.message.tool_calls or []], 1)
    assert [s["type"] for s in records(steps_of(choice.message), "tool_result", "current_time")] == ["tool_result"]


# ---------------------------------------------------------------- tool_choice


def test_tool_choice_none_hides_client_tools(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="No tools needed."))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=QUESTION, tools=[WEATHER_TOOL], tool_choice="none")
    assert completion.choices[0].message.content == "No tools needed."
    body = fake.last_body
    names = offered_tool_names(body)
    assert "get_weather" not in names and "current_time" in names, names
    assert body.get("tool_choice") != "none"  # built-ins stay usable


def test_tool_choice_none_client_call_is_not_handed_back(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[WEATHER_CALL]), Reply(content="Fine."))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=QUESTION, tools=[WEATHER_TOOL], tool_choice="none")
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls
    (result,) = records(steps_of(choice.message), "tool_result")
    assert result["status"] == "unknown_tool"


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_tool_choice_forwarded_upstream(oai: openai.OpenAI, fake: FakeUpstream, tool_choice: Any) -> None:
    fake.enqueue(Reply(tool_calls=[WEATHER_CALL]))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=QUESTION, tools=[WEATHER_TOOL], tool_choice=tool_choice)
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in completion.choices[0].message.tool_calls or []] == ["get_weather"]
    assert_minted([c.id for c in completion.choices[0].message.tool_calls or []], 1)
    body = fake.last_body
    assert body["tool_choice"] == tool_choice
    assert "get_weather" in offered_tool_names(body)


def test_parallel_tool_calls_false_returns_only_the_first_client_call(oai: openai.OpenAI, ahttp: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[WEATHER_CALL, STOCK_CALL]))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=QUESTION, tools=[WEATHER_TOOL, STOCK_TOOL], parallel_tool_calls=False)
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in completion.choices[0].message.tool_calls or []] == ["get_weather"]
    assert_minted([c.id for c in completion.choices[0].message.tool_calls or []], 1)
    assert fake.last_body.get("parallel_tool_calls") is False

    fake.enqueue(Reply(tool_calls=[WEATHER_CALL, STOCK_CALL]))
    _response, raw = stream_raw(ahttp, {"model": "agent/fake-model", "messages": QUESTION, "tools": [WEATHER_TOOL, STOCK_TOOL], "parallel_tool_calls": False})
    chunks = assert_stream_contract(raw, model="agent/fake-model", include_usage=False, finish_reason="tool_calls")
    deltas = streamed_tool_calls(chunks)
    assert {d["index"] for d in deltas} == {0}
    assert "get_stock" not in json.dumps(deltas)


@pytest.mark.parametrize(
    ("agent_choice", "upstream_choice"),
    [("required", "required"), ("current_time", {"type": "function", "function": {"name": "current_time"}})],
)
def test_agent_options_tool_choice_forces_first_step_only(oai: openai.OpenAI, fake: FakeUpstream, agent_choice: str, upstream_choice: Any) -> None:
    fake.enqueue(Reply(tool_calls=[TIME_CALL]), Reply(content="Done."))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER, extra_body={"agent_options": {"tool_choice": agent_choice}})
    assert completion.choices[0].message.content == "Done."
    first, second = (r.body for r in fake.chat_requests)
    assert first["tool_choice"] == upstream_choice
    assert second.get("tool_choice") in (None, "auto")


def test_echoed_agent_fields_are_not_forwarded_upstream(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    """A chat client appends the agent's answer message as the SDK returned it (agent_steps included)
    and asks a follow-up: the relay's own extension field must not reach the upstream, which would
    refuse an unknown message property (OpenAI: "Additional properties are not allowed")."""
    fake.enqueue(Reply(tool_calls=[TIME_CALL]), Reply(content="It is noon."))
    first = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    message = first.choices[0].message
    assert extra(message, "agent_steps")
    fake.enqueue(Reply(content="You are welcome."))
    oai.chat.completions.create(model="agent/fake-model", messages=[*USER, message, {"role": "user", "content": "thanks"}])  # type: ignore[list-item]
    sent = no_system(fake.last_body["messages"])
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == "It is noon."
    assert "agent_steps" not in sent[1], sent[1]


def test_client_indexes_skip_interleaved_builtin_calls(ahttp: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[WEATHER_CALL, TIME_CALL, STOCK_CALL]))
    _response, raw = stream_raw(ahttp, {"model": "agent/fake-model", "messages": QUESTION, "tools": [WEATHER_TOOL, STOCK_TOOL]})
    chunks = assert_stream_contract(raw, model="agent/fake-model", include_usage=False, finish_reason="tool_calls")
    deltas = streamed_tool_calls(chunks)
    heads = [(d["index"], d["function"]["name"]) for d in deltas if "id" in d]
    assert heads == [(0, "get_weather"), (1, "get_stock")]
    assert_minted([d["id"] for d in deltas if "id" in d], 2)
    for index, call in ((0, WEATHER_CALL), (1, STOCK_CALL)):
        assert json.loads("".join(d["function"].get("arguments") or "" for d in deltas if d["index"] == index)) == call["arguments"]
    assert [s["tool"] for s in streamed_steps(chunks)] == ["current_time", "current_time"]


def test_two_pauses_in_one_conversation_restore_both(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    tools = [WEATHER_TOOL, STOCK_TOOL]
    fake.enqueue(Reply(tool_calls=[TIME_CALL]), Reply(tool_calls=[WEATHER_CALL]))
    first = oai.chat.completions.create(model="agent/fake-model", messages=QUESTION, tools=tools)
    (w1,) = assert_minted([c.id for c in first.choices[0].message.tool_calls or []], 1)
    history = [*QUESTION, plain_assistant([WEATHER_CALL], [w1]), {"role": "tool", "tool_call_id": w1, "content": "sunny"}]
    fake.enqueue(Reply(tool_calls=[{"id": "call_echo_2", "name": "echo", "arguments": {"text": "second"}}]), Reply(tool_calls=[STOCK_CALL]))
    second = oai.chat.completions.create(model="agent/fake-model", messages=history, tools=tools)
    (s1,) = assert_minted([c.id for c in second.choices[0].message.tool_calls or []], 1)
    assert [s["tool"] for s in steps_of(second.choices[0].message)] == ["echo", "echo"]
    history += [plain_assistant([STOCK_CALL], [s1]), {"role": "tool", "tool_call_id": s1, "content": "42"}]
    fake.enqueue(Reply(content=FINAL))
    third = oai.chat.completions.create(model="agent/fake-model", messages=history, tools=tools)
    assert third.choices[0].message.content == FINAL
    convo = no_system(fake.last_body["messages"])
    summary = [(m["role"], [c["id"] for c in m.get("tool_calls") or []] or m.get("tool_call_id")) for m in convo]
    assert summary == [
        ("user", None),
        ("assistant", ["call_time_x"]),
        ("tool", "call_time_x"),
        ("assistant", ["call_w1"]),
        ("tool", "call_w1"),
        ("assistant", ["call_echo_2"]),
        ("tool", "call_echo_2"),
        ("assistant", ["call_s1"]),
        ("tool", "call_s1"),
    ], summary
    assert convo[6]["content"] == "echo: second"


def test_expired_continuation_is_not_restored(agent_relay_factory: Any, fake: FakeUpstream) -> None:
    server, _ = agent_relay_factory(agent={"continuation_ttl_seconds": 0})
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=60) as client:
        script_builtin_then_client(fake)
        paused = client.chat.completions.create(model="agent/fake-model", messages=QUESTION, tools=[WEATHER_TOOL, STOCK_TOOL])
        ids = assert_minted([c.id for c in paused.choices[0].message.tool_calls or []], 2)
        time.sleep(0.05)
        fake.enqueue(Reply(content=FINAL))
        resume = [*QUESTION, plain_assistant([WEATHER_CALL, STOCK_CALL], ids), *client_results(ids)]
        client.chat.completions.create(model="agent/fake-model", messages=resume, tools=[WEATHER_TOOL, STOCK_TOOL])
    assert no_system(fake.last_body["messages"]) == resume
