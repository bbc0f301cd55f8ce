"""Memories in PostgreSQL over HTTP: two toolrelay hosts on one database (``[database] url``), each with its own data directory.

A memory the agent saves through host A (the ``memory_save`` tool) is found
through host B by ``/v1/memories/search`` and by B's agent (``memory_search``);
``/v1/memories`` CRUD works across the hosts; another ``user`` sees nothing of
it on either host; FTS and tsquery syntax in a search is harmless; neither host
writes memory.db. The clients are the official OpenAI SDK and httpx.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import call, last_tool_text, scripted, step_records

from fakes.clients import rest, sdk
from fakes.server import RunningServer, relay_config
from fakes.upstream import FakeUpstream, Reply

MODEL = "agent/fake-model"
FACT = "The user's favourite colour is teal"


@pytest.fixture
def hosts(relay_factory: Callable[..., RunningServer], fake: FakeUpstream, tmp_path: Path, postgres_url: str) -> tuple[RunningServer, RunningServer]:
    def host(name: str) -> RunningServer:
        agent = {"builtin_tools": ["memory_save", "memory_search", "memory_forget"]}
        tree = relay_config(fake.base_url, tmp_path / name, agent=agent, database={"url": postgres_url})
        return relay_factory(tree=tree)

    return host("a"), host("b")


def _search(relay: RunningServer, q: str, user: str) -> list[dict[str, Any]]:
    with rest(relay) as http:
        response = http.get("/v1/memories/search", params={"q": q, "user": user})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_a_memory_saved_through_one_host_is_found_through_the_other(hosts: tuple[RunningServer, RunningServer], fake: FakeUpstream, tmp_path: Path) -> None:
    host_a, host_b = hosts
    fake.responder = scripted(
        lambda _: call("memory_save", text=FACT, tags=["preferences"]),
        lambda results: Reply(content="Noted. " + last_tool_text(results)),
    )
    with sdk(host_a) as a:
        saved = a.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Remember: my favourite colour is teal."}], user="ann")
    (result,) = step_records(saved.choices[0].message, "tool_result", "memory_save")
    assert "saved" in json.dumps(result).lower()

    found = _search(host_b, "favourite colour", "ann")
    assert [m["text"] for m in found] == [FACT] and found[0]["tags"] == ["preferences"] and found[0]["rank"] == 1
    assert _search(host_b, "favourite colour", "bob") == []
    assert _search(host_a, "favourite colour", "bob") == []

    def answer(results: list[dict[str, Any]]) -> Reply:
        hits = json.loads(last_tool_text(results))["results"]
        return Reply(content=f"From memory: {hits[0]['text']}" if hits else "I have no memory of that.")

    fake.responder = scripted(lambda _: call("memory_search", query="favourite colour"), answer)
    with sdk(host_b) as b:
        recalled = b.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is my favourite colour?"}], user="ann")
        assert recalled.choices[0].message.content == f"From memory: {FACT}"
        other = b.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is my favourite colour?"}], user="bob")
        assert other.choices[0].message.content == "I have no memory of that."
    for name in ("a", "b"):
        assert not (tmp_path / name / "memory.db").exists()


def test_memories_crud_across_hosts(hosts: tuple[RunningServer, RunningServer]) -> None:
    host_a, host_b = hosts
    with rest(host_a) as a, rest(host_b) as b:
        created = a.post("/v1/memories", params={"user": "cat"}, json={"text": "Prefers aisle seats on trains", "tags": ["Travel"]})
        assert created.status_code == 200, created.text
        memory = created.json()
        assert memory["object"] == "memory" and memory["tags"] == ["travel"]
        assert b.get(f"/v1/memories/{memory['id']}", params={"user": "cat"}).json() == memory
        assert b.get(f"/v1/memories/{memory['id']}", params={"user": "dan"}).status_code == 404
        for i in range(3):
            assert b.post("/v1/memories", params={"user": "cat"}, json={"text": f"note {i} about trains"}).status_code == 200
        page = a.get("/v1/memories", params={"user": "cat", "limit": 2, "order": "asc"}).json()
        assert page["data"][0]["id"] == memory["id"] and page["has_more"] is True
        rest_page = a.get("/v1/memories", params={"user": "cat", "limit": 10, "order": "asc", "after": page["last_id"]}).json()
        assert len(rest_page["data"]) == 2 and rest_page["has_more"] is False
        assert len(b.get("/v1/memories/export", params={"user": "cat"}).json()["data"]) == 4
        assert [m["text"] for m in b.get("/v1/memories", params={"user": "cat", "tag": "travel"}).json()["data"]] == ["Prefers aisle seats on trains"]
        ranked = a.get("/v1/memories/search", params={"user": "cat", "q": "aisle trains"}).json()["data"]
        assert ranked[0]["id"] == memory["id"] and [m["rank"] for m in ranked] == list(range(1, len(ranked) + 1))
        # tsquery and FTS5 syntax are words, never operators or errors
        for q in ["!aisle", "aisle & trains | x", "'aisle':*", "aisle <-> trains", "(((", "\\", "NEAR(aisle trains)"]:
            hits = b.get("/v1/memories/search", params={"user": "cat", "q": q})
            assert hits.status_code == 200, (q, hits.text)
        assert b.delete(f"/v1/memories/{memory['id']}", params={"user": "dan"}).status_code == 404
        deleted = b.delete(f"/v1/memories/{memory['id']}", params={"user": "cat"})
        assert deleted.json() == {"id": memory["id"], "object": "memory.deleted", "deleted": True}
        assert a.get(f"/v1/memories/{memory['id']}", params={"user": "cat"}).status_code == 404
        assert a.delete("/v1/memories", params={"user": "cat"}).json() == {"object": "memory.deleted", "deleted": True, "count": 3}
        assert b.get("/v1/memories", params={"user": "cat"}).json()["data"] == []
