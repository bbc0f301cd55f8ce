"""Fixtures for the API-key, limits, budget and ledger tests (issue #6).

- ``auth_relay`` (module): a toolrelay in front of the session fake upstream
  on :func:`fakes.relays.auth_tree`: an admin key (so auth is on from the
  start), prices for the fake models and a per-request cost cap; every test
  creates its own keys, so tests share the server without sharing limits.
- ``admin``: a :class:`fakes.admin.Admin` on that relay (create/revoke keys
  over ``/admin/keys``, read ``/admin/usage``).
- ``make_relay(data_dir=None, **sections)``: a fresh relay on ``auth_tree``
  with sections replaced, stopped at the end of the test.
- ``redis_url`` (module, from tests/conftest.py): a real ``redis-server``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.admin import Admin
from fakes.relays import RelayPool, auth_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream


@pytest.fixture(scope="module")
def auth_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("auth")
    with start_relay(root, auth_tree(fake_upstream, root / "data")) as server:
        yield server


@pytest.fixture
def admin(auth_relay: RunningServer) -> Iterator[Admin]:
    with Admin(auth_relay) as helper:
        yield helper


@pytest.fixture
def make_relay(fake_upstream: FakeUpstream, tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """``make_relay(data_dir=None, **sections) -> RunningServer`` for tests that need their own configuration."""
    with RelayPool(tmp_path) as pool:

        def make(data_dir: Path | None = None, **sections: Any) -> RunningServer:
            return pool.start(auth_tree(fake_upstream, data_dir or pool.data_dir(), **sections))

        yield make
