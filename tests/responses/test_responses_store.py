"""Stored responses: retrieve, delete, input items; scoped to the key that made them."""

from __future__ import annotations

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

from .helpers import strict_response


def test_retrieve_delete_and_input_items(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="Stored answer."))
    created = client.responses.create(
        model="fake-model",
        input=[{"role": "user", "content": "first"}, {"role": "user", "content": "second"}, {"role": "user", "content": "third"}],
    )
    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == "Stored answer."
    strict_response(fetched.to_dict())

    items = client.responses.input_items.list(created.id)
    texts = [item.content[0].text for item in items.data if item.type == "message"]  # pyright: ignore[reportAttributeAccessIssue]
    assert texts == ["third", "second", "first"]  # newest first by default
    assert all(item.id.startswith("msg_") for item in items.data if item.type == "message")
    ascending = client.responses.input_items.list(created.id, order="asc", limit=2)
    assert [item.content[0].text for item in ascending.data] == ["first", "second"]  # pyright: ignore[reportAttributeAccessIssue]
    assert ascending.has_more is True and ascending.first_id == ascending.data[0].id and ascending.last_id == ascending.data[1].id
    rest = client.responses.input_items.list(created.id, order="asc", after=ascending.last_id)
    assert [item.content[0].text for item in rest.data] == ["third"] and rest.has_more is False  # pyright: ignore[reportAttributeAccessIssue]

    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)


def test_delete_body_shape(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="x"))
    response_id = http.post("/v1/responses", json={"model": "fake-model", "input": "x"}).json()["id"]
    deleted = http.delete(f"/v1/responses/{response_id}")
    assert deleted.status_code == 200 and deleted.json() == {"id": response_id, "object": "response", "deleted": True}


def test_store_false_keeps_nothing(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="ephemeral"))
    created = client.responses.create(model="fake-model", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


@pytest.fixture(scope="module")
def auth_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("responses-auth")
    with RelayPool(root) as pool:
        yield pool.start(auth_tree(fake_upstream, pool.data_dir()))


def test_another_keys_response_is_not_found(auth_relay: RunningServer, fake: FakeUpstream) -> None:
    with Admin(auth_relay) as admin:
        owner_id, owner_key = admin.create_key("owner")
        _, other_key = admin.create_key("other")
        with sdk(auth_relay, owner_key) as owner, sdk(auth_relay, other_key) as other:
            fake.enqueue(Reply(content="secret text"))
            created = owner.responses.create(model="fake-model", input="keep this")
            for attempt in (
                lambda: other.responses.retrieve(created.id),
                lambda: other.responses.input_items.list(created.id),
                lambda: other.responses.delete(created.id),
                lambda: other.responses.create(model="fake-model", input="more", previous_response_id=created.id),
            ):
                with pytest.raises(openai.NotFoundError) as caught:
                    attempt()
                assert "secret" not in caught.value.response.text
            # Still there for its owner, and booked in the ledger as a responses request.
            assert owner.responses.retrieve(created.id).output_text == "secret text"
            rows = admin.usage_rows(owner_id, count=2)
            assert {row.get("mode") for row in rows} == {"responses"}, rows


def test_retention_setting_is_read(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    from fakes.relays import session_tree

    with RelayPool(tmp_path) as pool:
        tree = session_tree(fake_upstream, pool.data_dir(), 1)
        tree["responses"] = {"retention_days": 0.000001}  # about 0.09 s
        relay = pool.start(tree)
        with sdk(relay) as client:
            fake_upstream.reset()
            created = client.responses.create(model="fake-model", input="x")
            import time

            time.sleep(0.3)
            with pytest.raises(openai.NotFoundError):
                client.responses.retrieve(created.id)


def test_a_keys_oldest_responses_go_beyond_the_cap_over_http(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    from fakes.relays import session_tree

    with RelayPool(tmp_path) as pool:
        tree = session_tree(fake_upstream, pool.data_dir(), 1)
        tree["responses"] = {"max_stored_per_key": 2}
        relay = pool.start(tree)
        with sdk(relay) as client:
            fake_upstream.reset()
            ids = [client.responses.create(model="fake-model", input=f"turn {i}").id for i in range(3)]
            with pytest.raises(openai.NotFoundError):
                client.responses.retrieve(ids[0])
            assert [client.responses.retrieve(i).id for i in ids[1:]] == ids[1:]
