"""A server that never comes up: /ready says degraded, the other server's tools and the built-ins keep working."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp_support import mcp_section
from test_mcp_agent import ask, results, script, steps

from fakes.clients import rest, sdk
from fakes.relays import agent_tree, start_relay
from fakes.upstream import FakeUpstream


def test_a_down_server_degrades_ready_and_leaves_the_rest_working(
    fake_upstream: FakeUpstream, http_mcp_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_TEST_SECRET", "x")
    monkeypatch.setenv("MCP_TEST_NAME", "files")
    tree = agent_tree(fake_upstream, tmp_path / "data")
    mcp: dict[str, Any] = mcp_section(http_mcp_url, broken={"command": [sys.executable, "-c", "import sys; sys.exit(1)"], "connect_timeout_seconds": 5.0})
    del mcp["servers"]["files"]
    # A missing variable is reported by name; its (absent) value never shows.
    mcp["servers"]["needs_env"] = {"command": [sys.executable, "-c", "pass"], "env": {"X": "MCP_TEST_NOT_SET"}}
    os.environ.pop("MCP_TEST_NOT_SET", None)
    tree["mcp"] = mcp
    fake_upstream.reset()
    with start_relay(tmp_path, tree) as relay:
        with rest(relay, key=None) as http:
            response = http.get("/ready")
        body = response.json()
        assert response.status_code == 200 and body["status"] == "degraded"
        states = {s["name"]: s["status"] for s in body["mcp"]}
        assert states["remote"] == "ready" and states["broken"] != "ready" and states["needs_env"] != "ready"
        details = {s["name"]: s for s in relay.services.ready_extras()["mcp"]["servers"]}
        assert "MCP_TEST_NOT_SET" in details["needs_env"]["detail"]
        script(
            fake_upstream, {"go": [{"id": "c1", "name": "remote__add", "arguments": {"a": 2, "b": 2}}, {"id": "c2", "name": "current_time", "arguments": {}}]}
        )
        with sdk(relay, timeout=60.0) as client:
            message = ask(client, "go").choices[0].message
        assert {k: v["status"] for k, v in results(steps(message)).items()} == {"remote__add": "ok", "current_time": "ok"}
        offered = {t["function"]["name"] for t in fake_upstream.chat_requests[0].body["tools"]}
        assert not any(name.startswith(("broken__", "needs_env__")) for name in offered)
    fake_upstream.reset()
