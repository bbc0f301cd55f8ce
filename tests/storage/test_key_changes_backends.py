"""Key updates (limits, budget, expiry, output ceiling) and rotation in both key stores, SQLite and PostgreSQL.

The PostgreSQL side adds what only a shared database has: another host's
mirror follows an update or a rotation within a second (LISTEN/NOTIFY), and a
database of the previous schema version gains the new columns in place.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from storage.test_keys_ledger_backends import BACKENDS, Backend

from fakes.waiting import wait_until
from toolrelay.app.auth import keyspec
from toolrelay.app.auth.keyformat import matches
from toolrelay.app.auth.keystore import SCHEMA, KeyStore


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


def test_update_sets_and_clears_limits_budget_expiry_and_ceiling(backend: Backend) -> None:
    store = backend.keys()
    key, _ = store.create(name="x", rpm=10, max_output_tokens=500)
    assert key.max_output_tokens == 500
    now = time.time()
    change = keyspec.KeyUpdate(tpm=1000, max_parallel=2, budget_usd=3.5, budget_period="weekly", expires="2h", max_output_tokens=64)
    changed = keyspec.update(store, key.id, change, now=now)
    assert changed is not None
    assert (changed.rpm, changed.tpm, changed.max_parallel, changed.budget_usd, changed.budget_period, changed.max_output_tokens) == (
        10,
        1000,
        2,
        3.5,
        "weekly",
        64,
    )
    assert changed.expires_at == pytest.approx(now + 7200, abs=1)
    cleared = keyspec.update(store, key.id, keyspec.KeyUpdate(rpm=None, tpm=0, budget_usd=None, expires_at=None, max_output_tokens=None))
    assert cleared is not None
    assert (cleared.rpm, cleared.tpm, cleared.budget_usd, cleared.expires_at, cleared.max_output_tokens, cleared.max_parallel) == (
        None,
        None,
        None,
        None,
        None,
        2,
    )
    assert store.load(key.id) == cleared
    with pytest.raises(keyspec.KeySpecError) as bad:
        keyspec.update(store, key.id, keyspec.KeyUpdate(expires_at=now - 1))
    assert bad.value.param == "expires"
    assert store.update("nosuchkey", settings={"rpm": 1}) is None


def test_rotation_keeps_the_key_and_accepts_the_old_secret_for_the_grace_only(backend: Backend) -> None:
    store = backend.keys()
    key, old = store.create(name="x", models=["m"], rpm=7, budget_usd=1.0)
    now = time.time()
    rotated = keyspec.rotate(store, key.id, 60.0, now=now)
    assert rotated is not None
    new_key, new = rotated
    assert new_key.id == key.id and new != old and new.startswith(f"tr-{key.id}-")
    assert (new_key.models, new_key.rpm, new_key.budget_usd, new_key.created_at) == (key.models, key.rpm, key.budget_usd, key.created_at)
    assert matches(new, new_key.key_hash) and not matches(old, new_key.key_hash)
    assert new_key.accepts_previous(old, now + 59) and not new_key.accepts_previous(old, now + 61)
    assert not new_key.accepts_previous(new, now)
    assert new_key.public()["previous_key_valid_until"] == int(now + 60)
    # Rotating again without a grace: neither earlier secret is accepted.
    again = keyspec.rotate(store, key.id, 0)
    assert again is not None
    newest_key, newest = again
    assert newest_key.previous_key_hash is None and newest_key.previous_valid_until is None
    assert not newest_key.accepts_previous(old, now) and not newest_key.accepts_previous(new, now)
    assert matches(newest, newest_key.key_hash)


def test_rotation_refuses_revoked_and_missing_keys_and_bad_graces(backend: Backend) -> None:
    store = backend.keys()
    key, old = store.create(name="x")
    with pytest.raises(keyspec.KeySpecError):
        keyspec.rotate(store, key.id, -1)
    with pytest.raises(keyspec.KeySpecError):
        keyspec.rotate(store, key.id, float("nan"))
    store.revoke(key.id)
    assert keyspec.rotate(store, key.id, 10) is None
    still = store.load(key.id)
    assert still is not None and matches(old, still.key_hash)  # a revoked key's row is left as it was
    assert keyspec.rotate(store, "nosuchkey00", 10) is None


def test_another_host_sees_an_update_and_a_rotation_within_a_second(pg: Backend) -> None:
    here, there = pg.keys(), pg.keys()
    key, old = here.create(name="shared")
    wait_until(lambda: there.get(key.id) is not None, timeout=1.0)
    here.update(key.id, settings={"rpm": 3, "max_output_tokens": 99})
    wait_until(lambda: (k := there.get(key.id)) is not None and k.rpm == 3 and k.max_output_tokens == 99, timeout=1.0)
    rotated = here.rotate(key.id, grace_seconds=30)
    assert rotated is not None
    _, new = rotated
    wait_until(lambda: (k := there.get(key.id)) is not None and matches(new, k.key_hash), timeout=1.0)
    seen = there.get(key.id)
    assert seen is not None and seen.accepts_previous(old, time.time())


def test_a_keys_db_of_the_previous_version_gains_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA + "ALTER TABLE api_keys ADD COLUMN mcp_servers TEXT; PRAGMA user_version = 2;")
    conn.execute("INSERT INTO api_keys (id, name, key_hash, tail, created_at) VALUES ('0123456789ab', 'old', x'00', 'abcd', 1.0)")
    conn.commit()
    conn.close()
    store = KeyStore(path)
    try:
        key = store.get("0123456789ab")
        assert key is not None and key.max_output_tokens is None and key.previous_key_hash is None
        assert store.rotate(key.id, grace_seconds=5) is not None
    finally:
        store.close()


def test_a_postgres_keys_schema_of_the_previous_version_gains_the_columns(pg: Backend) -> None:
    from toolrelay.app.auth.pg_keystore import MIGRATIONS
    from toolrelay.app.postgres import migrate

    pool = pg.pool()
    with pool.connection() as conn:
        migrate(conn, MIGRATIONS[:1], name="keys")
        conn.execute("INSERT INTO api_keys (id, name, key_hash, tail, created_at) VALUES ('0123456789ab', 'old', '\\x00', 'abcd', 1.0)")
    store = pg.keys()
    key = store.get("0123456789ab")
    assert key is not None and key.max_output_tokens is None
    updated = store.update(key.id, settings={"max_output_tokens": 10})
    assert updated is not None and updated.max_output_tokens == 10
