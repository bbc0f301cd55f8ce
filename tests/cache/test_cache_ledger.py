"""The ledger's ``cache_hit`` column on both databases, and the migration that adds it to an existing usage.db."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from toolrelay.app.auth.ledger import SCHEMA, Ledger


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    closers: list[Any] = []
    made: Ledger
    if request.param == "sqlite":
        made = Ledger(tmp_path / "usage.db", flush_seconds=0.02)
    else:
        from toolrelay.app.auth.pg_ledger import PgLedger
        from toolrelay.app.postgres import open_pool

        pool = open_pool(request.getfixturevalue("postgres_url"), connect_timeout=2.0)
        closers.append(pool.close)
        made = PgLedger(pool, host="a", flush_seconds=0.02, timeout=2.0)
    made.start()
    yield made
    made.close()
    for close in closers:
        close()


def _record(ledger: Ledger, request_id: str, *, cache_hit: bool) -> None:
    ledger.record(
        SimpleNamespace(request_id=request_id, status=200, error_code=None),
        ts=time.time(),
        key_id="k1",
        model="m",
        mode="proxy",
        upstream="fake",
        prompt_tokens=10,
        completion_tokens=5,
        cost_nano=0 if cache_hit else 1000,
        latency_ms=1.0,
        estimated=False,
        cache_hit=cache_hit,
    )


def test_rows_say_which_answers_came_from_the_cache(ledger: Ledger) -> None:
    _record(ledger, "r1", cache_hit=False)
    _record(ledger, "r2", cache_hit=True)
    assert ledger.flush()
    rows = ledger.rows(key_id="k1")
    assert [(r["request_id"], r["cache_hit"], r["cost_usd"]) for r in rows] == [("r1", False, 1e-6), ("r2", True, 0.0)]


def test_a_usage_db_of_the_previous_schema_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO usage (ts, request_id, key_id) VALUES (1.0, 'old', 'k1')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    ledger = Ledger(path, flush_seconds=0.02)
    ledger.start()
    try:
        _record(ledger, "new", cache_hit=True)
        assert ledger.flush()
        assert [(r["request_id"], r["cache_hit"]) for r in ledger.rows(key_id="k1")] == [("old", False), ("new", True)]
    finally:
        ledger.close()
