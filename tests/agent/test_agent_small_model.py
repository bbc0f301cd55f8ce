"""Issue 10 item 23: simple requests on a model too small to fill tool arguments.

The embedded SmolLM2-135M, forced by a tool hint, called python with the code
``{{code}}`` and saved memory_save's own description of ``text`` as the
user's memory. Here the fake upstream plays that model (constrained mode,
hints on, as the embedded model is served): hinted calls whose arguments the
request spells out run without asking the model, and whatever the model
copies from the schema is refused and never stored. The real model runs the
same two prompts in test_agent_embedded.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from agent_helpers import records

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from toolrelay.agent.hints import Hint, hint_for

DESCRIPTION = "The fact to remember, as one self-contained sentence."
TOOLS = ["current_time", "python", "web_search", "fetch_page", "memory_save", "memory_search", "memory_forget"]


@pytest.fixture
def small_model_relay(relay_factory: Callable[..., RunningServer]) -> RunningServer:
    return relay_factory(
        agent={"builtin_tools": ["current_time", "python", "memory_save", "memory_search", "memory_forget"]},
        memory={"enabled": True},
        # Served like the embedded model: JSON steps, keyword hints.
        models={"fake-model": {"tool_calling": "constrained", "tool_hints": True}},
        sandbox={"sandbox_uid_base": 64500 + (os.getpid() % 100) * 4, "max_concurrent": 2},
    )


def ask(relay: RunningServer, content: str, model: str = "agent/fake-model") -> dict[str, Any]:
    response = httpx.post(
        relay.url("/v1/chat/completions"),
        json={"model": model, "messages": [{"role": "user", "content": content}]},
        headers={"Authorization": "Bearer sk-test"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]


def memories(relay: RunningServer) -> list[str]:
    response = httpx.get(relay.url("/v1/memories"), headers={"Authorization": "Bearer sk-test"}, timeout=30)
    assert response.status_code == 200, response.text
    return [m["text"] for m in response.json()["data"]]


def step(tool: str, **arguments: Any) -> Reply:
    """A constrained-mode step calling ``tool`` (the JSON a grammar-bound model writes)."""
    return Reply(content=json.dumps({"tool": tool, "arguments": arguments}))


def answer(text: str) -> Reply:
    return Reply(content=json.dumps({"answer": text}))


def test_remember_that_saves_the_stated_fact_without_asking_the_model(small_model_relay: RunningServer, fake: FakeUpstream) -> None:
    fake.enqueue(answer("I will remember that."))
    message = ask(small_model_relay, "Remember that my favourite colour is teal.")
    (call,) = records(message["agent_steps"], "tool_call", "memory_save")
    assert call["arguments"] == {"text": "The user's favourite colour is teal."}
    assert memories(small_model_relay) == ["The user's favourite colour is teal."]
    # The model was asked once, for the answer, with the saved memory in front of it.
    (request,) = fake.chat_requests
    assert "The tool memory_save returned" in json.dumps(request.body["messages"])
    assert message["content"] == "I will remember that."


def test_arithmetic_runs_print_of_the_expression(small_model_relay: RunningServer, fake: FakeUpstream) -> None:
    fake.enqueue(answer("123456789 * 987654321 = 121932631112635269"))
    message = ask(small_model_relay, "What is 123456789 * 987654321? Use python.")
    (call,) = records(message["agent_steps"], "tool_call", "python")
    assert call["arguments"] == {"code": "print(123456789 * 987654321)"}
    (result,) = records(message["agent_steps"], "tool_result", "python")
    if "unavailable" not in result["summary"]:
        assert "121932631112635269" in result["summary"], result


def test_a_copied_description_is_never_stored(small_model_relay: RunningServer, fake: FakeUpstream) -> None:
    # "remember this" names no fact: the model fills the forced call, and copies the schema.
    fake.enqueue(step("memory_save", text=DESCRIPTION), answer("Done."))
    message = ask(small_model_relay, "Please remember this for me")
    (result,) = records(message["agent_steps"], "tool_result", "memory_save")
    assert result["status"] == "invalid_arguments", result
    assert "repeats the schema's description" in result["summary"]
    assert memories(small_model_relay) == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("My favourite colour is {{colour}}.", "contains a template placeholder"),
        ("User: " + DESCRIPTION, "copied from the memory_save tool's own description"),
        ("Save one fact to long-term memory", "copied from the memory_save tool's own description"),
        ("{{text}}", "template placeholder"),
    ],
)
def test_memory_save_refuses_schema_text_and_placeholders(small_model_relay: RunningServer, fake: FakeUpstream, text: str, reason: str) -> None:
    fake.enqueue(step("memory_save", text=text), answer("Done."))
    message = ask(small_model_relay, "Please remember this for me")
    (result,) = records(message["agent_steps"], "tool_result", "memory_save")
    assert result["status"] in ("error", "invalid_arguments"), result
    assert reason in result["summary"], result
    assert memories(small_model_relay) == []


@pytest.mark.parametrize("code", ["{{code}}", "{code}", "<code>", "..."])
def test_python_refuses_placeholder_code(small_model_relay: RunningServer, fake: FakeUpstream, code: str) -> None:
    # "calculate" without an expression: the model fills the forced python call.
    fake.enqueue(step("python", code=code), answer("Done."))
    message = ask(small_model_relay, "Calculate the answer for me")
    (result,) = records(message["agent_steps"], "tool_result", "python")
    assert result["status"] == "invalid_arguments", result
    assert "template placeholder" in result["summary"], result


@pytest.mark.parametrize(
    ("message", "hint"),
    [
        ("What is 123456789 * 987654321? Use python.", Hint("python", {"code": "print(123456789 * 987654321)"})),
        ("what is 2^10", Hint("python", {"code": "print(2**10)"})),
        ("What is 12 x 7?", Hint("python", {"code": "print(12 * 7)"})),
        ("calculate (3+4)*5 please", Hint("python", {"code": "print((3+4)*5)"})),
        ("1,234,567 + 1", Hint("python", {"code": "print(1234567 + 1)"})),
        ("compute the factorial of 20", Hint("python", None)),
        ("Remember that my favourite colour is teal.", Hint("memory_save", {"text": "The user's favourite colour is teal."})),
        ("Please remember: I am vegetarian", Hint("memory_save", {"text": "The user is vegetarian."})),
        ("Remember that I like tea", Hint("memory_save", {"text": "The user said: I like tea."})),
        ("remember this", Hint("memory_save", None)),
        ("What did I tell you about my favourite colour?", Hint("memory_search", {"query": "favourite colour"})),
        ("do you remember my dog's name?", Hint("memory_search", {"query": "dog's name"})),
        ("What do you know about me?", Hint("memory_search", {"query": "user"})),
        ("Read https://example.com/a.html, please.", Hint("fetch_page", {"url": "https://example.com/a.html"})),
        ("search for litestar latest release", Hint("web_search", {"query": "litestar latest release"})),
        ("What is the date today?", Hint("current_time", {})),
        ("Tell me a joke", None),
    ],
)
def test_hints_fill_the_arguments_a_request_spells_out(message: str, hint: Hint | None) -> None:
    assert hint_for(message, TOOLS) == hint


def test_hints_only_name_offered_tools() -> None:
    assert hint_for("What is 2 + 2?", ["current_time"]) is None
    assert hint_for("Remember that my cat is Tom", ["memory_search"]) is None
