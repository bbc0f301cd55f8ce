"""The ledger's console reports (recent rows filtered, latency percentiles) on SQLite and PostgreSQL alike."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from toolrelay.app.auth.ledger import Ledger

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    closers: list[Any] = []
    book: Ledger
    if request.param == "sqlite":
        book = Ledger(tmp_path / "usage.db", flush_seconds=0.02)
    else:
        from toolrelay.app.auth.pg_ledger import PgLedger
        from toolrelay.app.postgres import open_pool

        pool = open_pool(request.getfixturevalue("postgres_url"), connect_timeout=2.0)
        closers.append(pool.close)
        book = PgLedger(pool, host="a", flush_seconds=0.02, timeout=2.0)
    book.start()
    yield book
    book.close()
    for close in closers:
        close()


def _record(book: Ledger, request_id: str, *, model: str, mode: str = "proxy", status: int = 200, latency_ms: float = 10.0, ts: float | None = None) -> None:
    book.record(
        SimpleNamespace(request_id=request_id, status=status, error_code="boom" if status >= 400 else None),
        ts=time.time() if ts is None else ts,
        key_id="k1",
        model=model,
        mode=mode,
        upstream="fake",
        prompt_tokens=3,
        completion_tokens=4,
        cost_nano=100,
        latency_ms=latency_ms,
        estimated=False,
    )


# (model, mode, outcome) filter -> the request ids expected, newest last (rows() returns oldest first)
FILTERS = [
    ({}, ["r1", "r2", "r3", "r4"]),
    ({"model": "a"}, ["r1", "r3"]),
    ({"mode": "agent"}, ["r3", "r4"]),
    ({"failed": True}, ["r4"]),
    ({"failed": False}, ["r1", "r2", "r3"]),
    ({"model": "b", "mode": "agent", "failed": True}, ["r4"]),
    ({"model": "nope"}, []),
]


def test_rows_filter_by_model_mode_and_outcome(ledger: Ledger) -> None:
    _record(ledger, "r1", model="a")
    _record(ledger, "r2", model="b")
    _record(ledger, "r3", model="a", mode="agent")
    _record(ledger, "r4", model="b", mode="agent", status=502)
    assert ledger.flush()
    for filters, expected in FILTERS:
        assert [r["request_id"] for r in ledger.rows(key_id="k1", **filters)] == expected, filters
    assert [r["request_id"] for r in ledger.rows(limit=2)] == ["r3", "r4"]  # the newest two


def test_latency_percentiles_by_group_and_overall(ledger: Ledger) -> None:
    for i in range(1, 101):  # a: 1..100 ms, b: 1000 ms once
        _record(ledger, f"a{i}", model="a", latency_ms=float(i))
    _record(ledger, "b1", model="b", latency_ms=1000.0)
    assert ledger.flush()
    by_model = {row["model"]: row for row in ledger.latency_percentiles(group_by="model")}
    assert by_model["a"] == {"model": "a", "requests": 100, "p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0, "max_ms": 100.0}
    assert by_model["b"]["p50_ms"] == by_model["b"]["p99_ms"] == 1000.0
    (overall,) = ledger.latency_percentiles()
    assert overall["requests"] == 101 and overall["max_ms"] == 1000.0 and overall["p50_ms"] == 51.0
    (today,) = ledger.latency_percentiles(group_by="day")
    assert today["day"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert ledger.latency_percentiles(since=time.time() + 60) == []
    with pytest.raises(ValueError, match="unknown group_by"):
        ledger.latency_percentiles(group_by="latency_ms; DROP TABLE usage")
