"""``item_reference`` input items: resolved from the caller's own stored responses, on every path.

The AI SDK sends an earlier response's items back by id by default; these
tests send the references with the official SDK and raw HTTP and check what
reached the upstream, who may resolve what, and the store's bookkeeping
(per-key totals and the item index) across an upgrade of an old file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from fakes.admin import Admin
from fakes.clients import sdk
from fakes.relays import RelayPool, auth_tree
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from toolrelay.app.responses.store import ResponseStore, StoredResponse


def test_an_output_item_referenced_by_id_reaches_the_model(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="Paris is the capital."), Reply(content="About two million."))
    first = client.responses.create(model="fake-model", input="Capital of France?")
    [answer] = first.output
    second = client.responses.create(
        model="fake-model",
        input=[
            {"role": "user", "content": "Capital of France?"},
            {"type": "item_reference", "id": answer.id},
            {"role": "user", "content": "How many people live there?"},
        ],
    )
    assert second.output_text == "About two million."
    messages = fake.chat_requests[-1].body["messages"]
    assert messages == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris is the capital."},
        {"role": "user", "content": "How many people live there?"},
    ]
    # The stored input lists the item itself, not the reference.
    listed = client.responses.input_items.list(second.id, order="asc")
    assert [item.type for item in listed.data] == ["message", "message", "message"]
    assert listed.data[1].id == answer.id


def test_input_items_and_function_calls_can_be_referenced(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"id": "call_1", "name": "lookup", "arguments": {"q": "x"}}]), Reply(content="done"))
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}
    first = http.post("/v1/responses", json={"model": "fake-model", "input": "look it up", "tools": [tool]}).json()
    [call] = first["output"]
    [question] = http.get(f"/v1/responses/{first['id']}/input_items").json()["data"]
    # A reference may leave out "type", as the API reference allows.
    second = http.post(
        "/v1/responses",
        json={
            "model": "fake-model",
            "tools": [tool],
            "input": [
                {"id": question["id"]},
                {"type": "item_reference", "id": call["id"]},
                {"type": "function_call_output", "call_id": call["call_id"], "output": "42"},
            ],
        },
    )
    assert second.status_code == 200, second.text
    messages = fake.chat_requests[-1].body["messages"]
    assert messages[0] == {"role": "user", "content": "look it up"}
    assert messages[1]["tool_calls"][0]["id"] == call["call_id"] and messages[1]["tool_calls"][0]["function"]["name"] == "lookup"
    assert messages[2] == {"role": "tool", "tool_call_id": call["call_id"], "content": "42"}


def test_unknown_deleted_and_unstored_items_are_404(client: openai.OpenAI, http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="kept"), Reply(content="not kept"))
    stored = client.responses.create(model="fake-model", input="a")
    unstored = client.responses.create(model="fake-model", input="b", store=False)
    client.responses.delete(stored.id)
    for item_id in ("msg_does_not_exist", stored.output[0].id, unstored.output[0].id):
        answer = http.post(
            "/v1/responses", json={"model": "fake-model", "input": [{"role": "user", "content": "hi"}, {"type": "item_reference", "id": item_id}]}
        )
        assert answer.status_code == 404, answer.text
        error = answer.json()["error"]
        assert error["param"] == "input[1]" and item_id in error["message"] and error["type"] == "invalid_request_error"
    assert len(fake.chat_requests) == 2  # nothing went upstream for the refused ones


@pytest.fixture(scope="module")
def auth_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("responses-references")
    with RelayPool(root) as pool:
        yield pool.start(auth_tree(fake_upstream, pool.data_dir()))


def test_another_keys_item_cannot_be_referenced(auth_relay: RunningServer, fake: FakeUpstream) -> None:
    with Admin(auth_relay) as admin:
        _, owner_key = admin.create_key("ref-owner")
        _, other_key = admin.create_key("ref-other")
        with sdk(auth_relay, owner_key) as owner, sdk(auth_relay, other_key) as other:
            fake.enqueue(Reply(content="the owner's secret"))
            created = owner.responses.create(model="fake-model", input="keep this")
            with pytest.raises(openai.NotFoundError) as caught:
                other.responses.create(model="fake-model", input=[{"type": "item_reference", "id": created.output[0].id}])
            assert "secret" not in caught.value.response.text
            assert len(fake.chat_requests) == 1


def _stored(response_id: str, created: int, item_id: str) -> StoredResponse:
    output = [{"id": item_id, "type": "message", "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": item_id}]}]
    return StoredResponse({"id": response_id, "created_at": created, "output": output}, [{"id": f"in_{item_id}", "type": "message"}], [])


def test_an_old_file_gains_totals_and_the_item_index(tmp_path: Path) -> None:
    path = tmp_path / "responses.db"
    store = ResponseStore(path, retention_days=30, max_per_key=3)
    now = int(time.time())
    for i in range(3):
        store._save("k:a", _stored(f"resp_{i}", now + i, f"msg_{i}"))  # pyright: ignore[reportPrivateUsage]
    store.close()
    # Back to the file as the previous release left it: no totals, no index, version 3.
    conn = sqlite3.connect(path)
    for statement in (
        "DROP TRIGGER responses_counted",
        "DROP TRIGGER responses_resized",
        "DROP TRIGGER responses_uncounted",
        "DROP TABLE response_totals",
        "DROP TABLE response_items",
        "PRAGMA user_version = 3",
    ):
        conn.execute(statement)
    conn.commit()
    conn.close()

    store = ResponseStore(path, retention_days=30, max_per_key=3)
    found = store._find_items("k:a", ["msg_0", "in_msg_2", "msg_9"])  # pyright: ignore[reportPrivateUsage]
    assert sorted(found) == ["in_msg_2", "msg_0"] and found["msg_0"]["content"][0]["text"] == "msg_0"
    # The totals were rebuilt: one more save evicts the oldest at once.
    store._save("k:a", _stored("resp_3", now + 3, "msg_3"))  # pyright: ignore[reportPrivateUsage]
    assert store._get("k:a", "resp_0") is None and store._get("k:a", "resp_1") is not None  # pyright: ignore[reportPrivateUsage]
    assert store._find_items("k:a", ["msg_0"]) == {}  # pyright: ignore[reportPrivateUsage]
    # Saving a response again (a background run's later states) counts it once.
    store._save("k:a", _stored("resp_3", now + 3, "msg_3"))  # pyright: ignore[reportPrivateUsage]
    assert store._conn.execute("SELECT count FROM response_totals WHERE scope = 'k:a'").fetchone()[0] == 3  # pyright: ignore[reportPrivateUsage]
    store.close()


def test_the_number_of_input_items_is_bounded_before_any_lookup(http: httpx.Client, fake: FakeUpstream, relay: RunningServer) -> None:
    limit = relay.settings.server.max_messages
    refs = [{"type": "item_reference", "id": f"msg_{i}"} for i in range(limit + 1)]
    answer = http.post("/v1/responses", json={"model": "fake-model", "input": refs})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "input" and error["code"] == "array_above_max_length" and str(limit) in error["message"]
    assert fake.chat_requests == []
