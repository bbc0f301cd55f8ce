"""Issue 10 item 14: paused agent runs keyed by the upstream's tool-call ids.

llama.cpp and Ollama give tool calls predictable ids and reuse them
("call_0"). Paused runs were stored under those ids in one table, so a second
scope pausing on the same id overwrote the first one's record: the first
scope's resume lost its built-in steps. Now every client tool call gets an id
minted by the relay, records are keyed by (scope, id) in every backend
(SQLite, Redis against a real redis-server, PostgreSQL against a real server), and the upstream still sees
its own ids in the history.

Over HTTP against a real relay: two users of one key, and two API keys, whose
upstream pauses on the same id each get their own unguessable id and each
resume their own history; presenting another scope's id restores nothing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.server import RunningServer, relay_config
from fakes.upstream import FakeUpstream, Reply

ADMIN_KEY = "test-admin-key-0123456789abcdef"
MINTED = re.compile(r"call_[A-Za-z0-9_-]{24}")
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
}
QUESTION = {"role": "user", "content": "What's the weather where I am, and what time is it there?"}


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings sections choosing the continuation store under test (none: SQLite)."""
    if request.param == "sqlite":
        return {}
    if request.param == "postgres":
        return {"database": {"url": request.getfixturevalue("postgres_url")}}
    url = request.getfixturevalue("redis_url")
    return {"redis": {"url": url, "prefix": "sec" + os.urandom(4).hex()}}


def _relay(relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path, backend: dict[str, Any], **sections: Any) -> RunningServer:
    tree = relay_config(fake.base_url, tmp_path / "data", agent={"builtin_tools": ["current_time"]}, **backend, **sections)
    return relay_factory(tree=tree)


def _chat(server: RunningServer, key: str, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body = {"model": "agent/fake-model", "messages": messages, "tools": [WEATHER], **extra}
    response = httpx.post(server.url("/v1/chat/completions"), json=body, headers={"authorization": f"Bearer {key}"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def _pause(fake: FakeUpstream, server: RunningServer, key: str, timezone: str, city: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    """A run that takes a built-in step, then pauses on a client call; the upstream names both calls "call_0"."""
    fake.enqueue(
        Reply(tool_calls=[{"id": "call_0", "name": "current_time", "arguments": {"timezone": timezone}}]),
        Reply(tool_calls=[{"id": "call_0", "name": "get_weather", "arguments": {"city": city}}]),
    )
    answer = _chat(server, key, [QUESTION], **extra)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls", answer
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    return call["id"], choice["message"]


def _resume(fake: FakeUpstream, server: RunningServer, key: str, call_id: str, city: str, **extra: Any) -> list[dict[str, Any]]:
    """Answer the client call; returns the history the upstream received."""
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}],
    }
    fake.enqueue(Reply(content=f"Done for {city}."))
    answer = _chat(server, key, [QUESTION, assistant, {"role": "tool", "tool_call_id": call_id, "content": f"sunny in {city}"}], **extra)
    assert answer["choices"][0]["message"]["content"] == f"Done for {city}."
    return [m for m in fake.last_body["messages"] if m["role"] != "system"]


def _restored_timezone(sent: list[dict[str, Any]]) -> str | None:
    """The timezone of the hidden current_time step the upstream got back, None if none was restored."""
    for message in sent:
        for call in message.get("tool_calls") or ():
            if call["function"]["name"] == "current_time":
                return json.loads(call["function"]["arguments"])["timezone"]
    return None


def _assert_consistent(sent: list[dict[str, Any]], city: str) -> None:
    """The upstream sees its own ids: the client's result answers the upstream's "call_0"."""
    roles = [m["role"] for m in sent]
    assert roles == ["user", "assistant", "tool", "assistant", "tool"], roles
    assert sent[3]["tool_calls"][0]["id"] == "call_0"
    assert sent[4] == {"role": "tool", "tool_call_id": "call_0", "content": f"sunny in {city}"}


def test_two_users_with_the_same_upstream_id_each_resume_their_own_run(
    relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path, backend: dict[str, Any]
) -> None:
    server = _relay(relay_factory, fake, tmp_path, backend)
    alice_id, _ = _pause(fake, server, "sk-test", "UTC", "Oslo", user="alice")
    bob_id, _ = _pause(fake, server, "sk-test", "Asia/Tokyo", "Tokyo", user="bob")
    assert MINTED.fullmatch(alice_id) and MINTED.fullmatch(bob_id), (alice_id, bob_id)
    assert alice_id != bob_id

    # Bob's pause did not overwrite Alice's record, and each gets only their own.
    sent = _resume(fake, server, "sk-test", alice_id, "Oslo", user="alice")
    assert _restored_timezone(sent) == "UTC"
    _assert_consistent(sent, "Oslo")
    sent = _resume(fake, server, "sk-test", bob_id, "Tokyo", user="bob")
    assert _restored_timezone(sent) == "Asia/Tokyo"
    _assert_consistent(sent, "Tokyo")


def test_another_scope_presenting_a_run_id_gets_nothing_restored(
    relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path, backend: dict[str, Any]
) -> None:
    server = _relay(relay_factory, fake, tmp_path, backend)
    alice_id, _ = _pause(fake, server, "sk-test", "UTC", "Oslo", user="alice")
    # Mallory learned (or guessed) Alice's id, and also tries the upstream's predictable one.
    for guess in (alice_id, "call_0"):
        sent = _resume(fake, server, "sk-test", guess, "Oslo", user="mallory")
        assert _restored_timezone(sent) is None
        assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
        assert sent[2]["tool_call_id"] == guess  # her own history, untouched
    # Alice's run is still there for her.
    assert _restored_timezone(_resume(fake, server, "sk-test", alice_id, "Oslo", user="alice")) == "UTC"


def test_two_api_keys_with_the_same_upstream_id(
    relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path, backend: dict[str, Any]
) -> None:
    server = _relay(relay_factory, fake, tmp_path, backend, auth={"admin_key": ADMIN_KEY})
    keys = []
    for name in ("team-a", "team-b"):
        created = httpx.post(server.root_url + "/admin/keys", json={"name": name}, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        assert created.status_code == 200, created.text
        keys.append(created.json()["value"])
    a_id, _ = _pause(fake, server, keys[0], "UTC", "Oslo")
    b_id, _ = _pause(fake, server, keys[1], "Asia/Tokyo", "Tokyo")
    assert a_id != b_id and MINTED.fullmatch(a_id) and MINTED.fullmatch(b_id)
    # Key B presenting key A's id restores nothing; key A still resumes its own run.
    assert _restored_timezone(_resume(fake, server, keys[1], a_id, "Oslo")) is None
    assert _restored_timezone(_resume(fake, server, keys[0], a_id, "Oslo")) == "UTC"
    assert _restored_timezone(_resume(fake, server, keys[1], b_id, "Tokyo")) == "Asia/Tokyo"
