from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Make the project importable when pytest is run without installing it.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from toolrelay.memory import MemoryStore, SyncMemoryStore, scope_for  # noqa: E402


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "memory.db"


@pytest.fixture
def sync_store(db_path: Path):
    store = SyncMemoryStore(db_path)
    yield store
    store.close()


@pytest.fixture
def store(db_path: Path):
    store = MemoryStore(db_path)
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
