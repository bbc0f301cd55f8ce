"""The key store and the usage ledger: the same tests against SQLite files and PostgreSQL.

The PostgreSQL side adds what only a shared database has: a second process's
mirror (here: a second store on its own pool) follows a change within a
second, a missing key is looked up once, the ledger's host column, and rows
kept while the database is unreachable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fakes.waiting import wait_until
from toolrelay.app.auth.keyformat import matches
from toolrelay.app.auth.keystore import Keys, KeyStore
from toolrelay.app.auth.ledger import Ledger

BACKENDS = ["sqlite", "postgres"]


class Backend:
    """Builds stores of one kind; closes what it built."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self._closers: list[Any] = []
        self.url = request.getfixturevalue("postgres_url") if kind == "postgres" else None

    def pool(self) -> Any:
        from toolrelay.app.postgres import open_pool

        assert self.url is not None
        pool = open_pool(self.url, connect_timeout=2.0)
        self._closers.append(pool.close)
        return pool

    def keys(self) -> Keys:
        store: Keys
        if self.kind == "sqlite":
            store = KeyStore(self.tmp_path / "keys.db")
        else:
            from toolrelay.app.auth.pg_keystore import PgKeyStore

            assert self.url is not None
            store = PgKeyStore(self.pool(), self.url, cache_seconds=30.0, timeout=2.0)
        self._closers.insert(0, store.close)
        return store

    def ledger(self, host: str = "a") -> Ledger:
        ledger: Ledger
        if self.kind == "sqlite":
            ledger = Ledger(self.tmp_path / "usage.db", flush_seconds=0.02)
        else:
            from toolrelay.app.auth.pg_ledger import PgLedger

            ledger = PgLedger(self.pool(), host=host, flush_seconds=0.02, timeout=2.0)
        ledger.start()
        self._closers.insert(0, ledger.close)
        return ledger

    def close(self) -> None:
        for close in self._closers:
            close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = Backend(request.param, tmp_path, request)
    yield made
    made.close()


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = Backend("postgres", tmp_path, request)
    yield made
    made.close()


def _record(ledger: Ledger, request_id: str, *, key_id: str | None = "k1", model: str = "m", cost_nano: int = 1000, ts: float | None = None) -> None:
    ledger.record(
        SimpleNamespace(request_id=request_id, status=200, error_code=None),
        ts=time.time() if ts is None else ts,
        key_id=key_id,
        model=model,
        mode="proxy",
        upstream="fake",
        prompt_tokens=10,
        completion_tokens=5,
        cost_nano=cost_nano,
        latency_ms=12.5,
        estimated=False,
    )


# ---------------------------------------------------------------- keys, both backends


def test_a_created_key_is_found_and_matches_its_secret(backend: Backend) -> None:
    store = backend.keys()
    assert not store.any_keys
    key, full = store.create(name="ci", models=["fake-*"], rpm=10, budget_usd=2.5, mcp_servers=["docs"])
    store.refresh()
    found = store.get(key.id)
    assert found is not None and matches(full, found.key_hash)
    assert found.models == ("fake-*",) and found.rpm == 10 and found.budget_usd == 2.5 and found.mcp_servers == ("docs",)
    assert store.any_keys and [k.id for k in store.all()] == [key.id]
    assert store.load(key.id) == found


def test_update_changes_allow_lists_and_keeps_the_rest(backend: Backend) -> None:
    store = backend.keys()
    key, _ = store.create(name="x", models=["a"], mcp_servers=None)
    changed = store.update(key.id, models=["b", " c "], mcp_servers=["s2", "s1"])
    assert changed is not None and changed.models == ("b", "c") and changed.mcp_servers == ("s1", "s2")
    kept = store.update(key.id, models=None)
    assert kept is not None and kept.models == ("b", "c") and kept.mcp_servers == ("s1", "s2")
    cleared = store.update(key.id, mcp_servers=None)
    assert cleared is not None and cleared.mcp_servers is None
    assert store.update("nosuchkey", models=["a"]) is None


def test_revoke_is_idempotent_and_keeps_the_row(backend: Backend) -> None:
    store = backend.keys()
    key, _ = store.create(name="x")
    first = store.revoke(key.id, now=100.0)
    again = store.revoke(key.id, now=200.0)
    assert first is not None and again is not None and first.revoked_at == again.revoked_at == 100.0
    store.refresh()
    got = store.get(key.id)
    assert got is not None and got.status(time.time()) == "revoked"
    assert store.any_keys  # a revoked key keeps auth on
    assert store.revoke("nosuchkey") is None


def test_a_second_store_sees_changes_made_through_the_first(backend: Backend) -> None:
    """Another process (SQLite: data_version; PostgreSQL: another host's mirror via LISTEN/NOTIFY)."""
    here, there = backend.keys(), backend.keys()
    key, _ = here.create(name="x")

    def seen() -> bool:
        there.refresh()
        return there.get(key.id) is not None

    wait_until(seen, timeout=1.0)
    here.revoke(key.id)

    def revoked() -> bool:
        there.refresh()
        got = there.get(key.id)
        return got is not None and got.revoked_at is not None

    wait_until(revoked, timeout=1.0)


# ---------------------------------------------------------------- ledger, both backends


def test_ledger_rows_summary_and_spend(backend: Backend) -> None:
    ledger = backend.ledger()
    now = time.time()
    _record(ledger, "r1", key_id="k1", model="m1", cost_nano=1_000_000_000, ts=now - 10)
    _record(ledger, "r2", key_id="k1", model="m2", cost_nano=500_000_000, ts=now - 5)
    _record(ledger, "r3", key_id="k2", model="m1", cost_nano=1, ts=now - 1)
    assert ledger.flush()
    rows = ledger.rows()
    assert [r["request_id"] for r in rows] == ["r1", "r2", "r3"]
    assert rows[0]["cost_usd"] == 1.0 and rows[0]["estimated"] is False and rows[0]["latency_ms"] == 12.5
    assert [r["request_id"] for r in ledger.rows(key_id="k2")] == ["r3"]
    by_key = {item["key"]: item for item in ledger.summary(group_by=["key"])}
    assert by_key["k1"]["requests"] == 2 and by_key["k1"]["cost_usd"] == 1.5 and by_key["k1"]["total_tokens"] == 30
    days = ledger.summary(group_by=["day"])
    assert len(days) >= 1 and sum(d["requests"] for d in days) == 3 and len(days[0]["day"]) == 10
    assert ledger.summary(group_by=["hour"])[0]["hour"].endswith(":00")
    assert ledger.spent_nano("k1", now - 7) == 500_000_000
    assert ledger.summary(since=now + 100) == []
    with pytest.raises(ValueError, match="unknown group_by"):
        ledger.summary(group_by=["nope"])


def test_ledger_stores_hostile_values(backend: Backend) -> None:
    ledger = backend.ledger()
    _record(ledger, "r\x00\ud800", model="m\x00" + "x" * 10_000)
    assert ledger.flush()
    (row,) = ledger.rows()
    assert len(row["model"]) <= 256 and ledger.dropped_bad == 0


def test_a_clean_shutdown_writes_every_row(backend: Backend) -> None:
    ledger = backend.ledger()
    for i in range(500):
        _record(ledger, f"r{i}")
    ledger.close()
    assert ledger.written == 500
    reader = backend.ledger()
    assert len(reader.rows(limit=1000)) == 500


# ---------------------------------------------------------------- PostgreSQL only


def test_a_key_missing_from_the_mirror_is_fetched_once(pg: Backend) -> None:
    here, there = pg.keys(), pg.keys()
    key, _ = here.create(name="x")
    there._keys.pop(key.id, None)  # the notification not arrived yet
    assert there.get(key.id) is None
    fetched = there.fetch(key.id)
    assert fetched is not None and there.get(key.id) == fetched


def test_the_ledger_aggregates_every_host(pg: Backend) -> None:
    a, b = pg.ledger("host-a"), pg.ledger("host-b")
    _record(a, "ra")
    _record(b, "rb")
    assert a.flush() and b.flush()
    hosts = {item["host"]: item["requests"] for item in a.summary(group_by=["host"])}
    assert hosts == {"host-a": 1, "host-b": 1}
    assert {r["host"] for r in b.rows()} == {"host-a", "host-b"}


def test_an_unreachable_database_at_start_is_refused_with_the_redacted_url(postgres_server: Any) -> None:
    from toolrelay.app.database import DatabaseUnreachable, open_database
    from toolrelay.app.settings import DatabaseSettings

    url = f"postgresql://me:s3cret@127.0.0.1:{postgres_server.port + 7}/x"
    with pytest.raises(DatabaseUnreachable) as caught:
        open_database(DatabaseSettings(url=url, connect_timeout_seconds=1.0))
    assert "s3cret" not in str(caught.value) and "me:***@127.0.0.1" in str(caught.value) and "refusing to start" in str(caught.value)
