"""A key updated or rotated through one toolrelay host, used through another sharing the PostgreSQL database.

Both hosts keep mirrors of the key table; the write on A must reach B's
mirror through LISTEN/NOTIFY within a second: B accepts the new secret, keeps
accepting the old one for the grace period only, and applies new limits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.admin import Admin
from fakes.relays import RelayPool, auth_tree
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from fakes.waiting import wait_until

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def pair(fake_upstream: FakeUpstream, postgres_url: str, tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer]]:
    with RelayPool(tmp_path) as pool:

        def host(name: str) -> RunningServer:
            database = {"url": postgres_url, "host_name": name, "connect_timeout_seconds": 1.0, "key_cache_seconds": 30.0}
            return pool.start(auth_tree(fake_upstream, tmp_path / f"data-{name}", database=database))

        yield host("a"), host("b")


def _models(relay: RunningServer, key: str) -> int:
    return httpx.get(relay.url("/v1/models"), headers={"authorization": f"Bearer {key}"}, timeout=10).status_code


def test_a_rotation_on_a_reaches_b_within_a_second_and_the_grace_ends_there_too(pair: tuple[RunningServer, RunningServer]) -> None:
    a, b = pair
    with Admin(a) as admin:
        key_id, old = admin.create_key("rotated")
        assert _models(b, old) == 200
        rotated = admin.http.post(f"/admin/keys/{key_id}/rotate", json={"grace_seconds": 2})
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["key"]
    started = time.monotonic()
    wait_until(lambda: _models(b, new) == 200, timeout=1.0, what="B accepting the secret rotated on A")
    assert time.monotonic() - started < 1.0
    assert _models(b, old) == 200  # within the grace period
    wait_until(lambda: _models(b, old) == 401, timeout=4.0, what="B refusing the old secret after the grace")
    assert _models(b, new) == 200


def test_an_update_on_a_applies_on_b_within_a_second(pair: tuple[RunningServer, RunningServer], fake: FakeUpstream) -> None:
    a, b = pair
    with Admin(a) as admin:
        key_id, key = admin.create_key("updated")
        assert admin.http.post(f"/admin/keys/{key_id}", json={"max_output_tokens": 33}).status_code == 200

    def capped_on_b() -> bool:
        fake.enqueue(Reply(content="ok"))
        answer = httpx.post(b.url("/v1/chat/completions"), json=CHAT, headers={"authorization": f"Bearer {key}"}, timeout=30)
        body: dict[str, Any] = fake.last_body
        return answer.status_code == 200 and body.get("max_completion_tokens") == 33

    wait_until(capped_on_b, timeout=1.0, what="B applying the ceiling set on A")
