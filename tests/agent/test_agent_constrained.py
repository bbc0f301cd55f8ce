"""Models without native tool calling: constrained JSON steps, lenient parsing, automatic detection."""

from __future__ import annotations

import json
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
    choice_deltas,
    content_of,
    expected_usage,
    no_system,
    records,
    steps_of,
    stream_raw,
    streamed_steps,
    streamed_tool_calls,
    tool_messages,
    usage_dict,
)
from agent_test_tools import TestTools

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

ANSWER = "The date today is 2031-05-06, a Tuesday."
TOOL_STEP = '{"tool": "current_time", "arguments": {}}'
ANSWER_STEP = json.dumps({"answer": ANSWER})


def saw_tool_result(body: dict[str, Any], tool: str = "current_time") -> bool:
    return any(f"The tool {tool} returned" in (m.get("content") or "") for m in body.get("messages") or [] if isinstance(m.get("content"), str))


def constrained_model(body: dict[str, Any]) -> Reply:
    """Calls current_time once, then answers; both as JSON steps, streamed word by word."""
    if saw_tool_result(body):
        return Reply(content=ANSWER_STEP)
    return Reply(content=TOOL_STEP)


def schema_branches(body: dict[str, Any]) -> list[dict[str, Any]]:
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema", fmt
    schema = fmt["json_schema"]["schema"]
    return schema.get("anyOf", [schema])


def branch_tools(body: dict[str, Any]) -> list[str]:
    return [b["properties"]["tool"]["enum"][0] for b in schema_branches(body) if "tool" in b.get("properties", {})]


def allows_answer(body: dict[str, Any]) -> bool:
    return any("answer" in b.get("properties", {}) for b in schema_branches(body))


def check_constrained_requests(fake: FakeUpstream) -> None:
    reqs = [r.body for r in fake.chat_requests]
    assert len(reqs) == 2, reqs
    for body in reqs:
        assert "tools" not in body and "tool_choice" not in body and "parallel_tool_calls" not in body, body
        assert body["temperature"] == 0
        assert body["stream"] is True
        assert body["messages"][0]["role"] == "system"
        assert sum(1 for m in body["messages"] if m["role"] == "system") == 1
        assert "current_time" in body["messages"][0]["content"]
    first, second = reqs
    assert "current_time" in branch_tools(first) and allows_answer(first)
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    rendered = second["messages"]
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"], rendered
    assert json.loads(rendered[2]["content"]) == {"tool": "current_time", "arguments": {}}
    assert rendered[3]["content"].startswith("The tool current_time returned:\n{")
    assert '"timezone":"UTC"' in rendered[3]["content"]


def test_constrained_non_streaming(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.responder = constrained_model
    completion = oai.chat.completions.create(model="agent/fake-constrained", messages=USER)
    choice = completion.choices[0]
    assert completion.model == "agent/fake-constrained"
    assert choice.message.content == ANSWER
    assert choice.finish_reason == "stop"
    steps = steps_of(choice.message)
    assert_unique_indexes(steps)
    assert [(s["type"], s["tool"]) for s in steps] == [("tool_call", "current_time"), ("tool_result", "current_time")]
    assert steps[0]["call_id"] == steps[1]["call_id"] and steps[1]["status"] == "ok"
    check_constrained_requests(fake)
    assert usage_dict(completion.usage) == expected_usage(fake)


def test_constrained_answer_streams_token_by_token(ahttp: httpx.Client, fake: FakeUpstream) -> None:
    fake.responder = constrained_model
    response, raw = stream_raw(ahttp, {"model": "agent/fake-constrained", "messages": USER, "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    chunks = assert_stream_contract(raw, model="agent/fake-constrained", include_usage=True, finish_reason="stop")
    assert content_of(chunks) == ANSWER
    pieces = [d["content"] for d in choice_deltas(chunks) if d.get("content")]
    assert len(pieces) >= 4, pieces
    assert not any('"' in p or "{" in p or "answer" in p for p in pieces), pieces  # only the decoded answer text
    assert [s["type"] for s in streamed_steps(chunks)] == ["tool_call", "tool_result"]
    assert streamed_tool_calls(chunks) == []
    check_constrained_requests(fake)
    assert usage_dict(chunks[-1]["usage"]) == expected_usage(fake)


def test_constrained_keeps_client_temperature(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content=ANSWER_STEP))
    oai.chat.completions.create(model="agent/fake-constrained", messages=USER, temperature=0.7)
    assert fake.last_body["temperature"] == 0.7


def test_constrained_client_tool_round_trip(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content='{"tool": "get_weather", "arguments": {"city": "Paris"}}'))
    first = oai.chat.completions.create(model="agent/fake-constrained", messages=USER, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content in (None, "")
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert "get_weather" in branch_tools(fake.last_body)
    fake.enqueue(Reply(content=json.dumps({"answer": "Sunny in Paris."})))
    second = oai.chat.completions.create(
        model="agent/fake-constrained",
        messages=[
            *USER,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert second.choices[0].message.content == "Sunny in Paris."
    rendered = fake.last_body["messages"]
    assert json.loads(rendered[-2]["content"]) == {"tool": "get_weather", "arguments": {"city": "Paris"}}
    assert rendered[-1]["role"] == "user" and rendered[-1]["content"].startswith("The tool get_weather returned:\nsunny")


def test_constrained_forced_tool_then_final_answer_schema(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.responder = constrained_model
    completion = oai.chat.completions.create(model="agent/fake-constrained", messages=USER, extra_body={"agent_options": {"tool_choice": "current_time"}})
    assert completion.choices[0].message.content == ANSWER
    first, second = (r.body for r in fake.chat_requests)
    assert branch_tools(first) == ["current_time"] and not allows_answer(first)  # forced: only that call is possible
    assert allows_answer(second)


def test_constrained_repeat_asks_for_an_answer_only(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    def model(body: dict[str, Any]) -> Reply:
        if branch_tools(body):
            return Reply(content='{"tool": "echo", "arguments": {"text": "same"}}')
        return Reply(content=json.dumps({"answer": "Enough echoing."}))

    fake.responder = model
    completion = oai.chat.completions.create(model="agent/fake-constrained", messages=USER)
    assert completion.choices[0].message.content == "Enough echoing."
    assert [s["type"] for s in steps_of(completion.choices[0].message)] == ["tool_call", "tool_result", "repeat"]
    last = fake.last_body
    assert branch_tools(last) == [] and allows_answer(last)
    assert "Stop using tools now" in last["messages"][0]["content"]


def test_constrained_answer_cut_by_max_tokens(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content='{"answer": "It is a fine', finish_reason="length"))
    completion = oai.chat.completions.create(model="agent/fake-constrained", messages=USER, max_tokens=5)
    assert completion.choices[0].message.content == "It is a fine"
    assert completion.choices[0].finish_reason == "length"
    assert fake.last_body["max_tokens"] == 5


@pytest.mark.parametrize("stream", [False, True])
def test_constrained_answer_with_escaped_emoji(ahttp: httpx.Client, fake: FakeUpstream, stream: bool) -> None:
    fake.enqueue(Reply(content='{"answer": "Smile \\ud83d\\ude00 and caf\\u00e9"}'))
    body = {"model": "agent/fake-constrained", "messages": USER}
    if stream:
        response, raw = stream_raw(ahttp, body)
        chunks = assert_stream_contract(raw, model="agent/fake-constrained", include_usage=False, finish_reason="stop")
        assert content_of(chunks) == "Smile \U0001f600 and café"
    else:
        response = ahttp.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "Smile \U0001f600 and café"


# ---------------------------------------------------------------- lenient parsing (native mode)

CALL_FORMS = {
    "tagged": '<tool_call>{"name": "current_time", "arguments": {"timezone": "UTC"}}</tool_call>',
    "fenced": '```json\n{"name": "current_time", "arguments": {"timezone": "UTC"}}\n```',
    "bare": '{"name": "current_time", "arguments": {"timezone": "UTC"}}',
}


@pytest.mark.parametrize("form", list(CALL_FORMS))
def test_textual_tool_call_in_native_mode(ahttp: httpx.Client, oai: openai.OpenAI, fake: FakeUpstream, form: str) -> None:
    fake.enqueue(Reply(content=CALL_FORMS[form]), Reply(content=ANSWER))
    response, raw = stream_raw(ahttp, {"model": "agent/fake-model", "messages": USER})
    assert response.status_code == 200
    chunks = assert_stream_contract(raw, model="agent/fake-model", include_usage=False, finish_reason="stop")
    assert content_of(chunks) == ANSWER
    for delta in choice_deltas(chunks):
        text = delta.get("content") or ""
        assert "current_time" not in text and "<tool_call" not in text and "```" not in text and "{" not in text, delta
    steps = streamed_steps(chunks)
    assert [(s["type"], s["tool"]) for s in steps] == [("tool_call", "current_time"), ("tool_result", "current_time")]
    assert steps[0]["arguments"] == {"timezone": "UTC"} and steps[1]["status"] == "ok"
    assert streamed_tool_calls(chunks) == []
    second = fake.chat_requests[1].body
    assistant = next(m for m in no_system(second["messages"]) if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["function"]["name"] == "current_time"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"timezone": "UTC"}
    (fed,) = tool_messages(second)
    assert fed["tool_call_id"] == assistant["tool_calls"][0]["id"] and '"timezone":"UTC"' in fed["content"]
    # Non-streaming, same story.
    fake.reset()
    fake.enqueue(Reply(content=CALL_FORMS[form]), Reply(content=ANSWER))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    assert completion.choices[0].message.content == ANSWER
    assert len(records(steps_of(completion.choices[0].message), "tool_result", "current_time")) == 1


def test_textual_client_tool_call_is_handed_back(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content='<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER, tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content in (None, "")
    (call,) = choice.message.tool_calls or []
    assert call.id and call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}


def test_json_answer_naming_no_tool_is_content(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    text = '{"name": "Bob", "arguments": {"age": 3}}'
    fake.enqueue(Reply(content=text))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    assert completion.choices[0].message.content == text
    assert len(fake.chat_requests) == 1


def test_text_beside_builtin_calls_is_not_part_of_the_answer(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="Let me check the clock.", tool_calls=[{"name": "current_time", "arguments": {}}]), Reply(content=ANSWER))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    assert completion.choices[0].message.content == ANSWER


# ---------------------------------------------------------------- automatic detection


def ollama_like(body: dict[str, Any]) -> Reply:
    if "tools" in body:
        return Reply(
            status=400, error={"error": {"message": "registry.ollama.ai/library/x does not support tools", "type": "api_error", "param": None, "code": None}}
        )
    assert "response_format" in body, body
    return constrained_model(body)


def test_no_native_tools_detected_then_constrained(agent_relay_factory: Callable[..., tuple[RunningServer, TestTools]], fake: FakeUpstream) -> None:
    server, _ = agent_relay_factory()
    fake.responder = ollama_like
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=60) as client:
        completion = client.chat.completions.create(model="agent/fake-model", messages=USER)
        assert completion.choices[0].message.content == ANSWER
        assert completion.choices[0].finish_reason == "stop"
        assert [s["type"] for s in steps_of(completion.choices[0].message)] == ["tool_call", "tool_result"]
        reqs = [r.body for r in fake.chat_requests]
        assert len(reqs) == 3
        assert "tools" in reqs[0] and "response_format" not in reqs[0]
        assert all("tools" not in b and "response_format" in b for b in reqs[1:])
        assert usage_dict(completion.usage) == {
            k: sum(fake._usage(r.body, r.reply, 1)[k] for r in fake.chat_requests[1:]) for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        }

        # The next run starts constrained directly.
        fake.reset()
        fake.responder = ollama_like
        again = client.chat.completions.create(model="agent/fake-model", messages=USER, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in again if c.choices)
        assert text == ANSWER
        reqs = [r.body for r in fake.chat_requests]
        assert len(reqs) == 2 and all("tools" not in b and "response_format" in b for b in reqs)
