"""``GET /v1/responses/{id}/input_items`` pages, the last (empty) one included, against the published schema and the SDK.

An ``after`` at the last item leaves an empty page: its ``first_id`` and
``last_id`` are ``""``, because the API reference and the typed SDKs declare
both required non-null strings (a ``null`` fails Rust's serde and the
Stainless Java SDKs' getters).
"""

from __future__ import annotations

import httpx
import msgspec
import openai
import pytest
from openai.types.responses import ResponseItemList as SDKResponseItemList

from fakes.upstream import FakeUpstream, Reply
from toolrelay.app.protocol import ResponseItemList

from .schema import SchemaMismatch, validate_input_items

INPUT = [{"role": "user", "content": f"message {i}"} for i in range(3)]


def _created(http: httpx.Client, fake: FakeUpstream) -> str:
    fake.enqueue(Reply(content="ok"))
    created = http.post("/v1/responses", json={"model": "fake-model", "input": INPUT})
    assert created.status_code == 200, created.text
    return created.json()["id"]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_every_page_validates_the_empty_last_one_too(http: httpx.Client, fake: FakeUpstream, order: str) -> None:
    response_id = _created(http, fake)
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params = {"limit": 2, "order": order, **({"after": after} if after else {})}
        raw = http.get(f"/v1/responses/{response_id}/input_items", params=params)
        assert raw.status_code == 200, raw.text
        listing = raw.json()
        validate_input_items(listing)
        # Strictly typed readers: the SDK's model (pydantic, not its lenient construct) and our Struct.
        SDKResponseItemList.model_validate(listing, strict=True)
        msgspec.json.decode(raw.content, type=ResponseItemList)
        pages += 1
        ids = [item["id"] for item in listing["data"]]
        seen += ids
        if ids:
            assert (listing["first_id"], listing["last_id"]) == (ids[0], ids[-1])
        else:
            assert (listing["first_id"], listing["last_id"], listing["has_more"]) == ("", "", False)
        if not listing["has_more"]:
            break
        after = listing["last_id"]
    assert pages == 2 and len(seen) == 3 == len(set(seen))
    # An `after` naming the last item: the empty page.
    empty = http.get(f"/v1/responses/{response_id}/input_items", params={"order": order, "after": seen[-1]}).json()
    assert empty["data"] == [] and empty["first_id"] == "" and empty["last_id"] == ""
    validate_input_items(empty)


def test_the_published_schema_refuses_null_ids() -> None:
    with pytest.raises(SchemaMismatch):
        validate_input_items({"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False})


def test_sdk_pages_through_and_reads_the_empty_page(client: openai.OpenAI, http: httpx.Client, fake: FakeUpstream) -> None:
    response_id = _created(http, fake)
    texts = [item.content[0].text for item in client.responses.input_items.list(response_id, order="asc", limit=1)]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType, reportUnknownVariableType]
    assert texts == [f"message {i}" for i in range(3)]
    last = client.responses.input_items.list(response_id, order="asc").data[-1].id  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType, reportUnknownVariableType]
    empty = client.responses.input_items.list(response_id, order="asc", after=last)  # pyright: ignore[reportUnknownArgumentType]
    assert empty.data == [] and not empty.has_next_page()
