"""The older HTTP+SSE transport (``transport = "sse"``): a real SSE MCP server's tools in agent mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp_support import start_mcp_http
from test_mcp_agent import ask, results, script, steps

from fakes.clients import sdk
from fakes.relays import agent_tree, start_relay
from fakes.upstream import FakeUpstream


@pytest.fixture(scope="module")
def sse_url() -> Iterator[str]:
    process, port = start_mcp_http("sse")
    yield f"http://127.0.0.1:{port}/sse"
    process.terminate()
    process.wait(10)


def test_tools_of_an_sse_server_run_in_agent_mode(fake_upstream: FakeUpstream, sse_url: str, tmp_path: Path) -> None:
    tree: dict[str, Any] = agent_tree(fake_upstream, tmp_path / "data")
    tree["mcp"] = {"servers": {"legacy": {"url": sse_url, "transport": "sse", "connect_timeout_seconds": 20.0}}}
    fake_upstream.reset()
    with start_relay(tmp_path, tree) as relay, sdk(relay) as client:
        script(fake_upstream, {"sum": [{"id": "c1", "name": "legacy__add", "arguments": {"a": 40, "b": 2}}]})
        message = ask(client, "sum").choices[0].message
    got = results(steps(message))
    assert got["legacy__add"]["status"] == "ok" and got["legacy__add"]["summary"] == "42"
    assert message.content == "done: 42"
