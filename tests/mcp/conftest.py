"""Fixtures for the MCP client tests: real MCP servers (tests/mcp/mcp_test_server.py) and a relay using them.

- ``http_mcp_url``: the test server over streamable HTTP, in its own process (module).
- ``mcp_relay``: a toolrelay whose agent has the stdio server ``files`` (a child
  it supervises, TEST_SECRET mapped from our MCP_TEST_SECRET) and the HTTP server
  ``remote``, in front of the session fake upstream (module).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.relays import agent_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream
from fakes.waiting import wait_until

SERVER_SCRIPT = Path(__file__).with_name("mcp_test_server.py")
SECRET = "s3cret-value"
TOOL_TIMEOUT = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_mcp_http(transport: str = "http") -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {**os.environ, "TEST_SERVER_NAME": "remote"}
    env.pop("TEST_SECRET", None)
    process = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), transport, str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _accepts(port), timeout=20, what="the MCP test server to listen")
    return process, port


@pytest.fixture(scope="module")
def http_mcp_url() -> Iterator[str]:
    process, port = start_mcp_http()
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(10)


def mcp_section(http_url: str, **servers: dict[str, Any]) -> dict[str, Any]:
    return {
        "restart_initial_seconds": 0.2,
        "restart_max_seconds": 1.0,
        "ping_interval_seconds": 2.0,
        "servers": {
            "files": {
                "command": [sys.executable, str(SERVER_SCRIPT), "stdio"],
                "env": {"TEST_SECRET": "MCP_TEST_SECRET", "TEST_SERVER_NAME": "MCP_TEST_NAME"},
                "connect_timeout_seconds": 20.0,
            },
            "remote": {"url": http_url, "headers": {"X-Test": "yes"}},
            **servers,
        },
    }


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
