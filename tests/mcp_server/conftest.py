"""Fixtures for the MCP server suite: a real toolrelay with every built-in tool, auth on.

- ``mcp_relay`` (module): toolrelay on :func:`fakes.relays.e2e_tree` (python in a
  real sandbox with its own uid pool, memory on) with ``[auth] admin_key``;
  ``admin`` creates keys and reads the ledger over ``/admin/*``.
- ``mcp_session(key)``: an async context manager giving an initialized
  official ``mcp.ClientSession`` on the relay's ``/mcp`` with that key.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_session_support import SessionFactory

from fakes.admin import ADMIN_KEY, Admin
from fakes.relays import e2e_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream


@pytest.fixture(scope="module")
def mcp_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    workdir: Path = tmp_path_factory.mktemp("mcp-server")
    tree = e2e_tree(
        fake_upstream,
        workdir / "data",
        "http://127.0.0.1:9/",  # web tools are listed, not called, here
        auth={"admin_key": ADMIN_KEY, "ledger_flush_seconds": 0.05, "max_failed_auth": 10_000},
    )
    relay = start_relay(workdir, tree)
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture(scope="module")
def admin(mcp_relay: RunningServer) -> Iterator[Admin]:
    with Admin(mcp_relay) as admin:
        yield admin


@pytest.fixture
def mcp_session(mcp_relay: RunningServer) -> SessionFactory:
    @asynccontextmanager
    async def connect(key: str | None) -> AsyncIterator[ClientSession]:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60.0) as http,
            streamable_http_client(mcp_relay.url("/mcp"), http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session

    return connect
