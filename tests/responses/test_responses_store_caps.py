"""Stored responses are bounded per key: one key cannot fill the disk with `store: true`."""

from __future__ import annotations

import time
from pathlib import Path

from toolrelay.app.responses.store import ResponseStore, StoredResponse


def _stored(response_id: str, created: int, text: str = "x") -> StoredResponse:
    return StoredResponse({"id": response_id, "created_at": created, "output": [text]}, [{"type": "message", "content": text}], [])


def test_oldest_responses_of_a_key_are_evicted_beyond_the_count_cap(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "responses.db", retention_days=30, max_per_key=3)
    now = int(time.time())
    for i in range(5):
        store._save("k:a", _stored(f"resp_{i}", now + i))
    store._save("k:b", _stored("resp_b", now))
    kept = [i for i in range(5) if store._get("k:a", f"resp_{i}") is not None]
    assert kept == [2, 3, 4]
    assert store._get("k:b", "resp_b") is not None  # another key's responses are untouched
    store.close()


def test_oldest_responses_of_a_key_are_evicted_beyond_the_byte_cap(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "responses.db", retention_days=30, max_per_key=1000, max_bytes_per_key=10_000)
    now = int(time.time())
    for i in range(10):
        store._save("k:a", _stored(f"resp_{i}", now + i, "y" * 2_000))
    kept = [i for i in range(10) if store._get("k:a", f"resp_{i}") is not None]
    assert kept and kept == list(range(10 - len(kept), 10)) and len(kept) <= 2
    total = store._conn.execute("SELECT SUM(size) FROM responses WHERE scope = 'k:a'").fetchone()[0]
    assert total <= 10_000
    store.close()
