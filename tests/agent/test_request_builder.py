"""The upstream body of each agent turn (agent/request.py), without a server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from toolrelay.agent.request import (
    CLIENT_CALL_PROMPT,
    FINAL_ANSWER_PROMPT,
    RequestBuilder,
    ToolOffer,
)

BUILTIN = {"type": "function", "function": {"name": "current_time", "parameters": {"type": "object"}}}
LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
OTHER = {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}
HISTORY = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "noon"},
]


def names(tools: list[dict[str, Any]] | None) -> list[str]:
    return [t["function"]["name"] for t in tools or ()]


@dataclass
class Case:
    name: str
    payload: dict[str, Any]
    builtins: tuple[str, ...] = ("current_time",)
    builtin_choice: Any = None
    final: bool = False
    first_step: bool = True
    # Expected (native):
    tools: list[str] = field(default_factory=list)
    tool_choice: Any = None


CASES = [
    Case("built-ins and client functions, auto", {"tools": [LOOKUP]}, tools=["current_time", "lookup"], tool_choice="auto"),
    Case("no tools at all", {"parallel_tool_calls": False}, builtins=(), tools=[], tool_choice=None),
    Case("client tool_choice none still offers built-ins", {"tools": [LOOKUP], "tool_choice": "none"}, tools=["current_time"], tool_choice="auto"),
    Case("agent_options.tool_choice on the first step", {}, builtin_choice="required", tools=["current_time"], tool_choice="required"),
    Case("agent_options.tool_choice only on the first step", {}, builtin_choice="required", first_step=False, tools=["current_time"], tool_choice="auto"),
    Case("final turn: offered, none callable", {"tools": [LOOKUP]}, final=True, tools=["current_time", "lookup"], tool_choice="none"),
    Case(
        "final turn with a required client call: only those",
        {"tools": [LOOKUP, OTHER], "tool_choice": "required"},
        final=True,
        tools=["lookup", "other"],
        tool_choice="required",
    ),
    Case(
        "final turn with a named client function",
        {"tools": [LOOKUP, OTHER], "tool_choice": {"type": "function", "function": {"name": "other"}}},
        final=True,
        tools=["other"],
        tool_choice={"type": "function", "function": {"name": "other"}},
    ),
    Case("a client function named like a built-in wins", {"tools": [BUILTIN]}, tools=["current_time"], tool_choice="auto"),
]


def builder(case: Case) -> RequestBuilder:
    payload = {"model": "agent/m", "messages": [], "stream": False, "temperature": 0.5, **case.payload}
    offer = ToolOffer.for_request(payload, list(case.builtins), case.builtin_choice)
    return RequestBuilder(payload, "upstream-m", offer, [BUILTIN] if "current_time" in offer.builtin_names else [])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_native_body(case: Case) -> None:
    body = builder(case).build(HISTORY, final=case.final, first_step=case.first_step, constrained=False)
    assert body["model"] == "upstream-m"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] is HISTORY
    assert body["temperature"] == 0.5  # the client's own fields pass through
    assert "agent_options" not in body
    assert names(body.get("tools")) == case.tools
    assert body.get("tool_choice") == case.tool_choice
    if not case.tools:
        assert "parallel_tool_calls" not in body


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_constrained_body(case: Case) -> None:
    body = builder(case).build(HISTORY, final=case.final, first_step=case.first_step, constrained=True)
    assert "tools" not in body and "tool_choice" not in body
    assert body["response_format"]["json_schema"]["name"] == "agent_step"
    system, *rest = body["messages"]
    assert system["role"] == "system"
    # The history as plain chat: the call as the step JSON, its result as user text.
    assert [m["role"] for m in rest] == ["user", "assistant", "user"]
    assert '"tool":"current_time"' in rest[1]["content"]
    forced = case.final and "tool_choice" in case.payload and case.payload["tool_choice"] != "none"
    if forced:
        assert system["content"].endswith(CLIENT_CALL_PROMPT)
    elif case.final:
        assert system["content"].endswith(FINAL_ANSWER_PROMPT)


def test_constrained_steps_are_greedy_unless_the_client_set_a_temperature() -> None:
    offer = ToolOffer.for_request({}, ["current_time"])
    body = RequestBuilder({"messages": []}, "m", offer, [BUILTIN]).build([], final=False, first_step=True, constrained=True)
    assert body["temperature"] == 0


def test_system_message_names_the_builtins() -> None:
    offer = ToolOffer.for_request({}, ["current_time", "python"])
    requests = RequestBuilder({}, "m", offer, [])
    assert "current_time, python" in (requests.system_message(None) or {})["content"]
    assert requests.system_message("Tools: {names}.") == {"role": "system", "content": "Tools: current_time, python."}
    assert RequestBuilder({}, "m", ToolOffer.for_request({}, []), []).system_message(None) is None
