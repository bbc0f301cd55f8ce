"""Shared by the MCP client tests and their fixtures: the test server's script, and how to run it.

Not in conftest.py: tests/mcp_server has a conftest.py too, and ``from conftest import``
picks whichever directory comes first on sys.path when both folders are collected.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

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
