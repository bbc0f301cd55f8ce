"""Issue 10 item 22: an upstream that answers agent mode's streaming request with one JSON body.

Agent mode always asks its upstream for a stream. Some servers ignore
``stream`` and send a ``chat.completion`` object; the agent read only deltas,
so the answer was lost (``content: null``, ``finish_reason: "stop"``). It now
reads such a body through the same conversion proxy mode streams it with
(:func:`app.events.message_as_delta`): content, tool calls and usage are kept,
in native and constrained mode, streamed and not streamed to the client.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from agent_helpers import (
    WEATHER_TOOL,
    assert_minted,
    chunks_of,
    content_of,
    records,
    stream_raw,
    streamed_tool_calls,
)

from fakes.upstream import FakeUpstream, Reply

QUESTION = [{"role": "user", "content": "What time is it, and then the weather in Oslo?"}]
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def _ask(http: httpx.Client, streamed: bool, model: str, **extra: Any) -> tuple[str | None, list[dict[str, Any]], str, dict[str, Any], list[dict[str, Any]]]:
    """(content, client tool calls, finish_reason, usage, step records) of one agent request."""
    body = {"model": model, "messages": QUESTION, **extra}
    if not streamed:
        response = http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        return (
            choice["message"]["content"],
            choice["message"].get("tool_calls") or [],
            choice["finish_reason"],
            response.json()["usage"],
            choice["message"].get("agent_steps") or [],
        )
    response, raw = stream_raw(http, {**body, "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    chunks = chunks_of(raw)
    finish = [c["finish_reason"] for chunk in chunks for c in chunk.get("choices") or [] if c.get("finish_reason")]
    steps = [s for chunk in chunks for c in chunk.get("choices") or [] for s in c["delta"].get("agent_steps") or []]
    calls: dict[int, dict[str, Any]] = {}
    for d in streamed_tool_calls(chunks):
        slot = calls.setdefault(d["index"], {"id": "", "function": {"name": "", "arguments": ""}})
        slot["id"] = d.get("id") or slot["id"]
        slot["function"]["name"] += (d.get("function") or {}).get("name") or ""
        slot["function"]["arguments"] += (d.get("function") or {}).get("arguments") or ""
    return content_of(chunks) or None, [calls[i] for i in sorted(calls)], finish[-1], chunks[-1]["usage"], steps


@pytest.mark.parametrize("streamed", [False, True], ids=["json-to-client", "stream-to-client"])
def test_native_answer_as_json_body(ahttp: httpx.Client, fake: FakeUpstream, streamed: bool) -> None:
    fake.enqueue(Reply(content="It is noon in Oslo.", stream=False, usage=USAGE))
    content, calls, finish, usage, _ = _ask(ahttp, streamed, "agent/fake-model")
    assert fake.last_body["stream"] is True  # asked for a stream, got JSON
    assert (content, calls, finish) == ("It is noon in Oslo.", [], "stop")
    assert usage["prompt_tokens"] == 11 and usage["completion_tokens"] == 7


@pytest.mark.parametrize("streamed", [False, True], ids=["json-to-client", "stream-to-client"])
def test_native_tool_calls_as_json_bodies(ahttp: httpx.Client, fake: FakeUpstream, streamed: bool) -> None:
    """A built-in call and then a client call, each in a JSON body: the built-in runs, the client call is returned."""
    fake.enqueue(
        Reply(tool_calls=[{"id": "call_t", "name": "current_time", "arguments": {"timezone": "UTC"}}], stream=False, usage=USAGE),
        Reply(tool_calls=[{"id": "call_w", "name": "get_weather", "arguments": {"city": "Oslo"}}], stream=False, usage=USAGE),
    )
    content, calls, finish, usage, steps = _ask(ahttp, streamed, "agent/fake-model", tools=[WEATHER_TOOL])
    assert finish == "tool_calls" and content is None
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [("get_weather", {"city": "Oslo"})]
    assert_minted([c["id"] for c in calls], 1)
    (result,) = records(steps, "tool_result", "current_time")
    assert result["status"] == "ok"
    assert usage["prompt_tokens"] == 22 and usage["completion_tokens"] == 14  # both model calls counted


@pytest.mark.parametrize("streamed", [False, True], ids=["json-to-client", "stream-to-client"])
def test_constrained_steps_as_json_bodies(ahttp: httpx.Client, fake: FakeUpstream, streamed: bool) -> None:
    fake.enqueue(
        Reply(content=json.dumps({"tool": "current_time", "arguments": {"timezone": "UTC"}}), stream=False, usage=USAGE),
        Reply(content=json.dumps({"answer": "It is noon."}), stream=False, usage=USAGE),
    )
    content, calls, finish, usage, steps = _ask(ahttp, streamed, "agent/fake-constrained")
    assert (content, calls, finish) == ("It is noon.", [], "stop")
    assert [s["status"] for s in records(steps, "tool_result", "current_time")] == ["ok"]
    assert usage["prompt_tokens"] == 22 and usage["completion_tokens"] == 14


@pytest.mark.parametrize("streamed", [False, True], ids=["json-to-client", "stream-to-client"])
def test_constrained_client_call_as_json_body(ahttp: httpx.Client, fake: FakeUpstream, streamed: bool) -> None:
    fake.enqueue(Reply(content=json.dumps({"tool": "get_weather", "arguments": {"city": "Oslo"}}), stream=False, usage=USAGE))
    content, calls, finish, usage, _ = _ask(ahttp, streamed, "agent/fake-constrained", tools=[WEATHER_TOOL])
    assert finish == "tool_calls" and not content
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [("get_weather", {"city": "Oslo"})]
    assert usage["total_tokens"] == 18
