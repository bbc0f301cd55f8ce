"""Stored responses are bounded per key: one key cannot fill the disk with `store: true` (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.stores import BACKENDS, StoreMaker, scalar
from toolrelay.app.responses.store import StoredResponse


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreMaker]:
    maker = StoreMaker(request, request.param, tmp_path)
    yield maker
    maker.close()


def _stored(response_id: str, created: int, text: str = "x") -> StoredResponse:
    return StoredResponse({"id": response_id, "created_at": created, "output": [text]}, [{"type": "message", "content": text}], [])


def test_oldest_responses_of_a_key_are_evicted_beyond_the_count_cap(stores: StoreMaker) -> None:
    store = stores.responses(max_per_key=3)
    now = int(time.time())
    for i in range(5):
        store._save("k:a", _stored(f"resp_{i}", now + i))
    store._save("k:b", _stored("resp_b", now))
    kept = [i for i in range(5) if store._get("k:a", f"resp_{i}") is not None]
    assert kept == [2, 3, 4]
    assert store._get("k:b", "resp_b") is not None  # another key's responses are untouched


def test_oldest_responses_of_a_key_are_evicted_beyond_the_byte_cap(stores: StoreMaker) -> None:
    store = stores.responses(max_per_key=1000, max_bytes_per_key=10_000)
    now = int(time.time())
    for i in range(10):
        store._save("k:a", _stored(f"resp_{i}", now + i, "y" * 2_000))
    kept = [i for i in range(10) if store._get("k:a", f"resp_{i}") is not None]
    assert kept and kept == list(range(10 - len(kept), 10)) and len(kept) <= 2
    total = scalar(store, "SELECT SUM(size) FROM responses WHERE scope = 'k:a'")
    assert total <= 10_000
    assert scalar(store, "SELECT bytes FROM response_totals WHERE scope = 'k:a'") == total


def test_concurrent_saves_commit_together_and_one_bad_row_spoils_no_other(stores: StoreMaker) -> None:
    """Group commit: saves that overlap share a transaction, each returns once its row is readable."""
    import anyio

    store = stores.responses()
    commits: list[int] = []
    # Every commit goes through one method: SQLite's _write_locked (on the loop or in the writer thread), else _save_all.
    method = "_write_locked" if hasattr(store, "_write_locked") else "_save_all"
    write = getattr(store, method)

    def counting(rows: list[tuple[str, StoredResponse, int | None]]) -> list[Exception | None]:
        commits.append(len(rows))
        return write(rows)

    setattr(store, method, counting)
    now = int(time.time())
    outcomes: dict[str, str] = {}

    async def save(i: int) -> None:
        stored = _stored(f"resp_{i}", now)
        if i == 7:
            stored.input_items.append({"type": "message", "content": 2**70})  # orjson cannot write it
        try:
            await store.save("k:a", stored)
        except TypeError:
            outcomes[f"resp_{i}"] = "refused"
            return
        # Committed when save returns: readable at once.
        outcomes[f"resp_{i}"] = "stored" if store._get("k:a", f"resp_{i}") is not None else "missing"

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for i in range(40):
                group.start_soon(save, i)

    anyio.run(main)
    assert outcomes.pop("resp_7") == "refused"
    assert set(outcomes.values()) == {"stored"} and len(outcomes) == 39
    assert sum(commits) == 40 and len(commits) < 40, commits  # overlapping saves shared commits
