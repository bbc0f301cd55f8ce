"""Issue 10 items 12 and 13: /v1/memories passes the gate and is capped; search shows no BM25 scores.

12. /v1/memories skipped the gate: a key's rpm and parallel limits and its
    model allow-list did not apply, nothing was booked, and a key could fill
    the disk. Now rpm applies, requests are ledger rows, a key without agent
    models may not use memory, and saves stop at per-scope and per-key caps
    (HTTP 403 ``memory_limit_reached``; the ``memory_save`` tool says so).
13. Search returned raw BM25 scores whose IDF counts every scope's memories:
    key A could count how many of key B's memories contain a word. Now ranks.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

ADMIN_KEY = "sec-memories-admin-key-0123456789"
CAPS = {"max_memories_per_scope": 5, "max_bytes_per_scope": 3000, "max_memories_per_key": 8, "max_bytes_per_key": 100_000}


class Relay:
    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.admin = httpx.Client(base_url=server.root_url, timeout=30.0, headers={"authorization": f"Bearer {ADMIN_KEY}"})

    def key(self, **spec: Any) -> tuple[str, httpx.Client]:
        created = self.admin.post("/admin/keys", json={"name": "mem-sec", **spec})
        assert created.status_code == 200, created.text
        body = created.json()
        return body["id"], httpx.Client(base_url=self.server.root_url, timeout=30.0, headers={"authorization": f"Bearer {body['value']}"})


@pytest.fixture
def relay(relay_factory: Any) -> Relay:
    server = relay_factory(
        auth={"admin_key": ADMIN_KEY, "ledger_flush_seconds": 0.05},
        agent={"builtin_tools": ["memory_save", "memory_search"]},
        memory=CAPS,
    )
    return Relay(server)


def _save(client: httpx.Client, text: str, user: str | None = None) -> httpx.Response:
    return client.post("/v1/memories", json={"text": text}, params={"user": user} if user else None)


def test_rpm_limit_applies_to_memories(relay: Relay) -> None:
    _, client = relay.key(rpm=3)
    statuses = [client.get("/v1/memories").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = client.get("/v1/memories/search", params={"q": "anything"})
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "retry-after" in refused.headers
    # Saving counts too: a flood cannot write past the limit.
    assert _save(client, "One more fact").status_code == 429


def test_memory_requests_are_booked_with_rate_headers(relay: Relay) -> None:
    key_id, client = relay.key(rpm=100)
    listed = client.get("/v1/memories")
    assert listed.status_code == 200 and listed.headers["x-ratelimit-limit-requests"] == "100"
    deadline = time.monotonic() + 10
    while True:
        rows = relay.admin.get("/admin/usage", params={"group_by": "request", "key_id": key_id}).json()["data"]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [(r["mode"], r["status"], r["cost_usd"], r["request_id"]) for r in rows] == [("memory", 200, 0, listed.headers["x-request-id"])]


def test_model_allow_list_decides_memory_access(relay: Relay) -> None:
    _, proxy_only = relay.key(models=["fake-model"])
    refused = proxy_only.get("/v1/memories")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "memory_not_allowed"
    assert _save(proxy_only, "planted").status_code == 403
    _, agent_key = relay.key(models=["agent/*"])
    assert agent_key.get("/v1/memories").status_code == 200


def test_caps_bound_what_a_key_can_store(relay: Relay) -> None:
    _, client = relay.key()
    for i in range(5):
        assert _save(client, f"Fact number {i}").status_code == 200
    full = _save(client, "Fact number 5")
    assert full.status_code == 403, full.text
    error = full.json()["error"]
    assert error["code"] == "memory_limit_reached" and "limit is 5" in error["message"]
    # Other `user` scopes of the same key: the per-key cap (8) still holds.
    assert [_save(client, f"User fact {i}", user=f"u{i}").status_code for i in range(5)] == [200, 200, 200, 403, 403]
    assert "all its users" in _save(client, "again", user="u9").json()["error"]["message"]
    # Bytes: a fresh key, one big memory fills its scope's 3000 bytes.
    _, other = relay.key()
    assert _save(other, "x" * 2500).status_code == 200
    assert _save(other, "y" * 600).json()["error"]["code"] == "memory_limit_reached"
    # Deleting makes room again.
    first = client.get("/v1/memories", params={"order": "asc"}).json()["data"][0]
    assert client.delete(f"/v1/memories/{first['id']}").status_code == 200
    assert _save(client, "Fact number 5").status_code == 200
    # Disk use stays bounded: after 200 refused saves the database holds what the caps allow.
    for i in range(200):
        _save(client, f"flood {i} " + "z" * 500, user=f"flood{i}")
    listed = sum(len(client.get("/v1/memories", params={"user": u, "limit": 100}).json()["data"]) for u in [None, "u0", "u1", "u2"])
    assert listed == 8


def test_memory_save_tool_says_the_cap_is_reached(relay: Relay, fake: FakeUpstream) -> None:
    _, client = relay.key()
    for i in range(5):
        assert _save(client, f"Known fact {i}").status_code == 200
    fake.enqueue(Reply(tool_calls=[{"name": "memory_save", "arguments": {"text": "My favourite colour is teal."}}]), Reply(content="I could not save that."))
    answer = client.post(
        "/v1/chat/completions", json={"model": "agent/fake-model", "messages": [{"role": "user", "content": "Remember: my favourite colour is teal."}]}
    )
    assert answer.status_code == 200, answer.text
    tool_messages = [m for m in fake.last_body["messages"] if m.get("role") == "tool"]
    assert len(tool_messages) == 1
    assert "memory is full" in tool_messages[0]["content"] and "limit is 5" in tool_messages[0]["content"]
    assert len(client.get("/v1/memories").json()["data"]) == 5


def test_search_results_do_not_reveal_other_scopes_statistics(relay_factory: Any) -> None:
    relay = Relay(relay_factory(auth={"admin_key": ADMIN_KEY}))
    _, owner = relay.key()
    _, prober = relay.key()
    for text in ("The zebra at the zoo is called Stripes", "Zebra crossings are near the school", "Bought a zebra plant", "Walked the dog"):
        assert _save(prober, text).status_code == 200

    def probe() -> list[dict[str, Any]]:
        response = prober.get("/v1/memories/search", params={"q": "zebra", "limit": 10})
        assert response.status_code == 200
        return response.json()["data"]

    before = probe()
    assert len(before) == 3 and [m["rank"] for m in before] == [1, 2, 3]
    assert all("score" not in m for m in before)
    for i in range(1000):
        assert _save(owner, f"zebra note {i}").status_code == 200
    after = probe()
    assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True)


def test_caps_hold_for_a_database_from_before_them(tmp_path: Any) -> None:
    from toolrelay.memory import MemoryLimits, MemoryQuotaExceeded, SyncMemoryStore

    path = tmp_path / "memory.db"
    with SyncMemoryStore(path) as old:
        old.save_many("k:a", ["one", "two", "three"])
        old.save("k:a/u:x", "four")
        with old._write() as db:  # as a database written before the caps existed (schema 1)
            for trigger in ("memories_usage_ai", "memories_usage_ad", "memories_usage_au"):
                db.execute(f"DROP TRIGGER {trigger}")
            db.execute("DROP TABLE memory_usage")
            db.execute("PRAGMA user_version=1")
    with SyncMemoryStore(path, limits=MemoryLimits(max_memories_per_scope=3, max_memories_per_key=5)) as store:
        with pytest.raises(MemoryQuotaExceeded):
            store.save("k:a", "five")
        store.save("k:a/u:y", "five")
        with pytest.raises(MemoryQuotaExceeded, match="all its users"):
            store.save("k:a/u:z", "six")
        store.save("k:b", "other keys are not affected")
