"""Assertions and small utilities shared by the agent-mode tests."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from fakes.clients import stream_raw as post_and_read
from fakes.sse import SSEEvent, json_chunks, parse_sse
from fakes.upstream import FakeUpstream, RecordedRequest

USER = [{"role": "user", "content": "What time is it right now?"}]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
STOCK_TOOL = {
    "type": "function",
    "function": {
        "name": "get_stock",
        "description": "Stock price for a ticker.",
        "parameters": {"type": "object", "properties": {"ticker": {"type": "string"}}, "required": ["ticker"]},
    },
}


# The ids the relay mints for client tool calls, whatever the upstream sent (issue 10 item 14).
MINTED_CALL_ID = re.compile(r"call_[A-Za-z0-9_-]{24}")


def assert_minted(ids: list[str], count: int) -> list[str]:
    """``count`` distinct relay-minted call ids; returns them."""
    assert len(ids) == count and len(set(ids)) == count, ids
    assert all(MINTED_CALL_ID.fullmatch(i) for i in ids), ids
    return ids


def extra(obj: Any, key: str) -> Any:
    """A non-standard field of an SDK model (``message.agent_steps``) or a dict."""
    if isinstance(obj, dict):
        return obj.get(key)
    return (obj.model_extra or {}).get(key)


def steps_of(message: Any) -> list[dict[str, Any]]:
    steps = extra(message, "agent_steps")
    assert isinstance(steps, list), f"no agent_steps list on the message: {message!r}"
    return steps


def assert_unique_indexes(steps: list[dict[str, Any]]) -> None:
    indexes = [s.get("index") for s in steps]
    assert all(isinstance(i, int) and not isinstance(i, bool) for i in indexes), indexes
    assert indexes == list(range(len(steps))), indexes


def records(steps: list[dict[str, Any]], type_: str, tool: str | None = None) -> list[dict[str, Any]]:
    return [s for s in steps if s.get("type") == type_ and (tool is None or s.get("tool") == tool)]


def role_messages(body: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [m for m in body.get("messages") or [] if m.get("role") == role]


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return role_messages(body, "tool")


def offered_tool_names(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in body.get("tools") or []]


def no_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("role") not in ("system", "developer")]


def sent_usage(fake: FakeUpstream, rec: RecordedRequest) -> dict[str, int]:
    """The usage the fake reported for one of its answers (its word-count rule, or the scripted usage)."""
    assert rec.reply is not None and rec.reply.status == 200, rec
    return fake._usage(rec.body, rec.reply, 1)


def expected_usage(fake: FakeUpstream) -> dict[str, int]:
    total = {"prompt_tokens": 0, "completion_tokens": 0}
    for rec in fake.chat_requests:
        used = sent_usage(fake, rec)
        total["prompt_tokens"] += used["prompt_tokens"]
        total["completion_tokens"] += used["completion_tokens"]
    total["total_tokens"] = total["prompt_tokens"] + total["completion_tokens"]
    return total


def usage_dict(usage: Any) -> dict[str, int]:
    if not isinstance(usage, dict):
        usage = usage.model_dump()
    return {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def stream_raw(http: httpx.Client, body: dict[str, Any]) -> tuple[httpx.Response, bytes]:
    """POST ``body`` with ``stream: true`` and read the whole SSE body."""
    return post_and_read(http, {**body, "stream": True})


chunks_of = json_chunks


def choice_deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["delta"] for chunk in chunks for c in chunk.get("choices") or []]


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(d.get("content") or "" for d in choice_deltas(chunks))


def streamed_steps(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The step records streamed live (``agent_steps_delta``), checked against the closing ``agent_steps`` list.

    A finished stream repeats every record once, in the delta that carries the
    finish reason, so an accumulator that keeps only a field's last value (the
    Node SDK's) still ends with all of them.
    """
    live = [s for d in choice_deltas(chunks) for s in d.get("agent_steps_delta") or []]
    choices = [c for chunk in chunks for c in chunk.get("choices") or []]
    closing = [c for c in choices if "agent_steps" in c["delta"]]
    assert len(closing) <= 1, closing
    finished = any(c.get("finish_reason") for c in choices)
    if live and finished:
        assert closing and closing[0]["finish_reason"], "a finished stream with steps must close with the whole agent_steps list"
    if closing:
        assert closing[0]["delta"]["agent_steps"] == live, (closing, live)
    return live


def streamed_tool_calls(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for d in choice_deltas(chunks) for c in d.get("tool_calls") or []]


def assert_stream_contract(raw: bytes, *, model: str, include_usage: bool, finish_reason: str | None = None) -> list[dict[str, Any]]:
    """Design section 2 for one complete, successful stream; returns the chunks (usage chunk included)."""
    events: list[SSEEvent] = parse_sse(raw)
    assert all(e.event is None for e in events), "custom event: names break the OpenAI SDK"
    data = [e for e in events if e.data is not None]
    assert data and data[-1].is_done, raw[-300:]
    assert sum(1 for e in data if e.is_done) == 1, "[DONE] must appear exactly once"
    assert raw.endswith(b"data: [DONE]\n\n"), raw[-100:]
    chunks = [e.json for e in data[:-1]]
    assert chunks, raw
    assert all("error" not in c for c in chunks), chunks
    ids = {c["id"] for c in chunks}
    created = {c["created"] for c in chunks}
    assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-"), ids
    assert len(created) == 1 and isinstance(next(iter(created)), int), created
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {model}
    choice_chunks = [c for c in chunks if c["choices"]]
    first = choice_chunks[0]["choices"][0]
    assert first["index"] == 0 and first["delta"].get("role") == "assistant", first
    roles = [c["choices"][0]["delta"].get("role") for c in choice_chunks]
    assert roles.count("assistant") == 1 and set(roles) <= {"assistant", None}, roles
    for chunk in choice_chunks:
        for choice in chunk["choices"]:
            assert "finish_reason" in choice, choice
            assert choice["index"] == 0, choice
            assert "logprobs" in choice, choice
    finishes = [ch["finish_reason"] for c in choice_chunks for ch in c["choices"]]
    assert all(f is None for f in finishes[:-1]), finishes
    assert finishes[-1] in ("stop", "length", "tool_calls", "content_filter"), finishes
    if finish_reason is not None:
        assert finishes[-1] == finish_reason, finishes
    if include_usage:
        *body, tail = chunks
        assert tail["choices"] == [] and isinstance(tail.get("usage"), dict), tail
        assert all("usage" in c and c["usage"] is None for c in body), [c.get("usage") for c in body]
        assert not any(c["choices"] == [] for c in body)
    else:
        assert all("usage" not in c for c in chunks), [c.get("usage") for c in chunks]
        assert all(c["choices"] for c in chunks)
    return chunks


def args_json(call: dict[str, Any]) -> Any:
    return json.loads(call["function"]["arguments"])
