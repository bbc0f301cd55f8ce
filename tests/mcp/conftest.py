"""Fixtures for the MCP client tests: real MCP servers (tests/mcp/mcp_test_server.py) and a relay using them.

- ``http_mcp_url``: the test server over streamable HTTP, in its own process (module).
- ``mcp_relay``: a toolrelay whose agent has the stdio server ``files`` (a child
  it supervises, TEST_SECRET mapped from our MCP_TEST_SECRET) and the HTTP server
  ``remote``, in front of the session fake upstream (module).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from mcp_support import SECRET, TOOL_TIMEOUT, mcp_section, start_mcp_http

from fakes.relays import agent_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream


@pytest.fixture(scope="module")
def http_mcp_url() -> Iterator[str]:
    process, port = start_mcp_http()
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def mcp_relay(fake_upstream: FakeUpstream, http_mcp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("mcp-relay")
    saved = {k: os.environ.get(k) for k in ("MCP_TEST_SECRET", "MCP_TEST_NAME")}
    os.environ["MCP_TEST_SECRET"] = SECRET
    os.environ["MCP_TEST_NAME"] = "files"
    tree = agent_tree(fake_upstream, root / "data", agent={"tool_timeout_seconds": TOOL_TIMEOUT, "max_parallel_tools": 4})
    tree["mcp"] = mcp_section(http_mcp_url)
    try:
        with start_relay(root, tree) as server:
            yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
