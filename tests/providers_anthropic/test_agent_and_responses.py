"""Agent mode and the Responses API on a native Anthropic upstream: both run on its chat events."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from fakes.anthropic import FakeAnthropic, MessagesReply

from .conftest import MODEL


def _has_tool_result(body: dict[str, Any]) -> bool:
    return any(isinstance(m.get("content"), list) and any(b.get("type") == "tool_result" for b in m["content"]) for m in body["messages"])


def _clock_then_answer(body: dict[str, Any]) -> MessagesReply:
    if _has_tool_result(body):
        return MessagesReply(blocks=[{"type": "text", "text": "It is late."}])
    return MessagesReply(blocks=[{"type": "tool_use", "id": "toolu_clock", "name": "current_time", "input": {}}])


@pytest.mark.parametrize("stream", [False, True])
def test_agent_mode_calls_a_builtin_tool_through_native_tool_use(claude: FakeAnthropic, cclient: openai.OpenAI, stream: bool) -> None:
    claude.responder = _clock_then_answer
    messages: Any = [{"role": "user", "content": "What time is it?"}]
    if stream:
        chunks = list(cclient.chat.completions.create(model=f"agent/{MODEL}", messages=messages, stream=True))
        answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        answer = cclient.chat.completions.create(model=f"agent/{MODEL}", messages=messages).choices[0].message.content
    assert answer == "It is late."
    first, second = (c.body for c in claude.calls if c.path == "/v1/messages")
    assert "current_time" in [t["name"] for t in first["tools"]]
    # The tool's answer went back as a tool_result for Claude's own tool_use id, in a user turn.
    assistant, result = second["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["content"][-1]["type"] == "tool_use"
    tool_use_id = assistant["content"][-1]["id"]
    assert result["role"] == "user" and result["content"][0]["type"] == "tool_result" and result["content"][0]["tool_use_id"] == tool_use_id


@pytest.mark.parametrize("stream", [False, True])
def test_responses_api_runs_on_the_anthropic_model(claude: FakeAnthropic, cclient: openai.OpenAI, stream: bool) -> None:
    claude.enqueue(MessagesReply(blocks=[{"type": "text", "text": "Hi from Claude via Responses."}], usage={"input_tokens": 9, "output_tokens": 6}))
    if stream:
        events = list(cclient.responses.create(model=MODEL, input="Hello", instructions="Be brief.", stream=True))
        response = next(e.response for e in events if e.type == "response.completed")
    else:
        response = cclient.responses.create(model=MODEL, input="Hello", instructions="Be brief.")
    assert response.output_text == "Hi from Claude via Responses."
    assert response.usage is not None and (response.usage.input_tokens, response.usage.output_tokens) == (9, 6)
    body = claude.last_body
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "Hello"}]
