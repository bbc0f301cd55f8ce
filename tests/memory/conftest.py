from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Make the project importable when pytest is run without installing it.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from toolrelay.memory import MemoryStore, SyncMemoryStore, scope_for  # noqa: E402
from toolrelay.memory.backend import MemoryBackend  # noqa: E402

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "memory.db"


@pytest.fixture
def pg_pool(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A pool on a fresh PostgreSQL database (the ``postgres_url`` fixture), closed after the test."""
    from toolrelay.app.postgres import open_pool

    pool = open_pool(request.getfixturevalue("postgres_url"), max_size=4)
    yield pool
    pool.close()


def open_backend(kind: str, request: pytest.FixtureRequest, db_path: Path, **kwargs: Any) -> MemoryBackend:
    """The blocking store of ``kind``: SQLite in ``db_path``, or PostgreSQL on the test's own database."""
    if kind == "sqlite":
        return SyncMemoryStore(db_path, **kwargs)
    from toolrelay.memory.pg_store import PgMemoryStore

    return PgMemoryStore(request.getfixturevalue("pg_pool"), **kwargs)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Which store the test runs against: the same test functions cover SQLite and PostgreSQL."""
    return request.param


@pytest.fixture
def sync_store(backend: str, request: pytest.FixtureRequest, db_path: Path) -> Iterator[MemoryBackend]:
    store = open_backend(backend, request, db_path)
    yield store
    store.close()


@pytest.fixture
def store(sync_store: MemoryBackend) -> Iterator[MemoryStore]:
    store = MemoryStore.from_sync(sync_store)
    yield store
    store.close()


@pytest.fixture
def scopes() -> dict[str, str]:
    """Two keys, and two users of the first key."""
    return {
        "key_a": scope_for("key_a", None),
        "key_b": scope_for("key_b", None),
        "alice": scope_for("key_a", "alice"),
        "bob": scope_for("key_a", "bob"),
    }
