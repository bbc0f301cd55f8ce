"""Issue 10 item 4: one bad request must not stop usage accounting for everyone.

A body with NaN and a lone surrogate in ``model`` reached the ledger, the
writer thread died on the row (orjson refuses lone surrogates) and no row
was booked again until restart. The HTTP parser may now refuse such bodies,
so the ledger is also driven directly with poison rows; either way, later
requests over HTTP must still be booked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply
from toolrelay.app.auth.ledger import Ledger
from toolrelay.app.middleware import RequestInfo

ADMIN_KEY = "sec-ledger-admin-key-0123456789"
MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def booked(relay_factory: Any) -> Iterator[tuple[RunningServer, httpx.Client, str, str]]:
    """(relay with auth and a fast ledger, admin client, key id, key)."""
    server = relay_factory(auth={"admin_key": ADMIN_KEY, "ledger_flush_seconds": 0.05})
    admin = httpx.Client(base_url=server.root_url, timeout=30.0, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    created = admin.post("/admin/keys", json={"name": "ledger-sec"})
    assert created.status_code == 200, created.text
    yield server, admin, created.json()["id"], created.json()["value"]
    admin.close()


def _rows(admin: httpx.Client, key_id: str, request_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The key's ledger rows once ``request_id`` is among them (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        response = admin.get("/admin/usage", params={"group_by": "request", "key_id": key_id})
        assert response.status_code == 200, response.text
        rows = response.json()["data"]
        if any(r["request_id"] == request_id for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _normal_request(server: RunningServer, fake: FakeUpstream, key: str) -> str:
    fake.enqueue(Reply(content="still booked"))
    response = httpx.post(
        server.url("/v1/chat/completions"), json={"model": "fake-model", "messages": MESSAGES}, headers={"authorization": f"Bearer {key}"}, timeout=30.0
    )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def test_poison_body_over_http_does_not_stop_the_ledger(booked: Any, fake: FakeUpstream) -> None:
    server, admin, key_id, key = booked
    # NaN and a lone surrogate: the stdlib fallback parser accepted both.
    poison = b'{"model": "fake-\\ud800model", "temperature": NaN, "messages": [{"role": "user", "content": "x"}]}'
    response = httpx.post(
        server.url("/v1/chat/completions"), content=poison, headers={"authorization": f"Bearer {key}", "content-type": "application/json"}, timeout=30.0
    )
    # Its status is the parser's business (a 400 now, see the JSON tests); here
    # only what reaches the ledger matters.
    assert response.status_code != 200
    request_id = _normal_request(server, fake, key)
    rows = _rows(admin, key_id, request_id)
    assert request_id in [r["request_id"] for r in rows], "the ledger stopped writing after the poison body"
    assert server.services.gate.ledger._thread.is_alive()


def test_poison_rows_in_the_live_ledger_then_http_rows_still_written(booked: Any, fake: FakeUpstream) -> None:
    server, admin, key_id, key = booked
    ledger = server.services.gate.ledger
    poison = RequestInfo("req_poison_\ud800")
    poison.status = 404
    ledger.record(
        poison,
        ts=time.time(),
        key_id=key_id,
        model="agent/\ud800\udfff-" + "m" * 100_000,
        mode="proxy",
        upstream=None,
        prompt_tokens=2**80,  # orjson and SQLite refuse integers beyond 64 bits
        completion_tokens=-(2**70),
        cost_nano=float("nan"),  # type: ignore[arg-type]
        latency_ms=float("inf"),
        estimated=False,
    )
    request_id = _normal_request(server, fake, key)
    rows = _rows(admin, key_id, request_id)
    ids = [r["request_id"] for r in rows]
    assert request_id in ids, "a poison row stopped the ledger"
    [bad] = [r for r in rows if r["request_id"].startswith("req_poison_")]
    assert bad["request_id"] == "req_poison_\ufffd"
    assert bad["model"].startswith("agent/\ufffd\ufffd-") and len(bad["model"]) <= 256
    assert bad["prompt_tokens"] == 2**63 - 1 and bad["latency_ms"] is None and bad["cost_usd"] == 0
    # Later requests keep being booked too.
    again = _normal_request(server, fake, key)
    assert again in [r["request_id"] for r in _rows(admin, key_id, again)]


class _BrokenInfo(RequestInfo):
    """A request whose status cannot be read: the row cannot be built at all."""

    __slots__ = ()

    @property  # type: ignore[override]
    def status(self) -> int:
        raise RuntimeError("unreadable status")

    @status.setter
    def status(self, value: int) -> None:
        pass


def _record(ledger: Ledger, info: RequestInfo, model: str = "fake-model") -> None:
    ledger.record(
        info,
        ts=time.time(),
        key_id="k",
        model=model,
        mode="proxy",
        upstream="fake",
        prompt_tokens=1,
        completion_tokens=1,
        cost_nano=1,
        latency_ms=1.0,
        estimated=False,
    )


def _ok(request_id: str) -> RequestInfo:
    info = RequestInfo(request_id)
    info.status = 200
    return info


def test_an_unwritable_row_is_dropped_and_counted_the_rest_written(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "usage.db", flush_seconds=0.02)
    ledger.start()
    try:
        _record(ledger, _ok("req_a"))
        _record(ledger, _BrokenInfo("req_broken"))
        _record(ledger, _ok("req_b"))
        assert ledger.flush()
        assert ledger.dropped_bad == 1
        _record(ledger, _ok("req_c"))
        assert ledger.flush()
        assert [r["request_id"] for r in ledger.rows()] == ["req_a", "req_b", "req_c"]
    finally:
        ledger.close()


def test_the_writer_is_restarted_when_its_loop_fails(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "usage.db", flush_seconds=0.02)
    real_write = ledger._write
    failures = []

    def fail_once(conn: Any, rows: list[Any]) -> list[Any]:
        if not failures:
            failures.append(len(rows))
            raise MemoryError("simulated fault outside row handling")
        return real_write(conn, rows)

    ledger._write = fail_once  # type: ignore[method-assign]
    ledger.start()
    try:
        _record(ledger, _ok("req_1"))
        deadline = time.monotonic() + 10
        while not failures and time.monotonic() < deadline:
            time.sleep(0.01)
        _record(ledger, _ok("req_2"))
        assert ledger.flush(timeout=10)
        assert ledger.restarts >= 1
        # The row of the failed round was kept and written by the restarted loop.
        assert [r["request_id"] for r in ledger.rows()] == ["req_1", "req_2"]
    finally:
        ledger.close()


def test_a_dead_writer_thread_is_replaced(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "usage.db", flush_seconds=0.02)
    ledger.start()
    try:
        # Stop the real writer as if it had died (nothing left to run it).
        writer = ledger._thread
        ledger._stop = True
        ledger._wake.set()
        writer.join(5)
        assert not writer.is_alive()
        ledger._stop = False
        _record(ledger, _ok("req_after_death"))
        assert ledger.flush()
        assert ledger._thread is not writer and ledger._thread.is_alive()
        assert ledger.restarts == 1
        assert [r["request_id"] for r in ledger.rows()] == ["req_after_death"]
    finally:
        ledger.close()


def test_the_queue_is_bounded_and_drops_are_counted(tmp_path: Path) -> None:
    # Not started: the writer is "behind" forever, as with a stalled disk.
    ledger = Ledger(tmp_path / "usage.db", flush_seconds=0.02, max_queued_rows=10)
    for i in range(25):
        _record(ledger, _ok(f"req_{i:02d}"))
    assert len(ledger._rows) == 10 and ledger.dropped_overflow == 15
    ledger.start()
    ledger.close()  # a clean shutdown writes everything still queued
    assert [r["request_id"] for r in ledger.rows()] == [f"req_{i:02d}" for i in range(15, 25)]


def test_concurrent_recording_during_shutdown_loses_nothing_queued(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "usage.db", flush_seconds=0.02)
    ledger.start()
    threads = [threading.Thread(target=lambda n=n: [_record(ledger, _ok(f"req_{n}_{i}")) for i in range(200)]) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger.close()
    assert len(ledger.rows(limit=10_000)) == 800 and ledger.dropped_bad == ledger.dropped_overflow == 0


def test_metrics_show_ledger_drops(booked: Any) -> None:
    _server, admin, _key_id, _key = booked
    text = admin.get("/metrics").text
    assert "toolrelay_ledger_rows_dropped 0" in text
