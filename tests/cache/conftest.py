"""Fixtures for the response cache tests (``[cache]``, app/cache/).

- ``cache_relay`` (module): a relay on :func:`fakes.relays.auth_tree` (keys,
  prices, the ledger) with the memory cache on. The cache outlives tests, so
  every test asks its own question (:func:`question`) and creates its own keys.
- ``admin``: a :class:`fakes.admin.Admin` on it.
- ``make_relay(**sections)``: a fresh relay on ``auth_tree`` for other settings.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.admin import Admin
from fakes.relays import RelayPool, auth_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream

MEMORY_CACHE = {"enabled": True, "backend": "memory", "ttl_seconds": 600}


def question() -> list[dict[str, str]]:
    """A prompt no other test sends, so no entry of another test answers it."""
    return [{"role": "user", "content": f"What is the answer to question {uuid.uuid4().hex}?"}]


@pytest.fixture(scope="module")
def cache_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("cache")
    with start_relay(root, auth_tree(fake_upstream, root / "data", cache=MEMORY_CACHE)) as server:
        yield server


@pytest.fixture
def admin(cache_relay: RunningServer) -> Iterator[Admin]:
    with Admin(cache_relay) as helper:
        yield helper


@pytest.fixture
def make_relay(fake_upstream: FakeUpstream, tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    with RelayPool(tmp_path) as pool:

        def make(**sections: Any) -> RunningServer:
            return pool.start(auth_tree(fake_upstream, pool.data_dir(), **sections))

        yield make
