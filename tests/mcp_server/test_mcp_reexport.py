"""Tools of aggregated MCP servers are served at ``/mcp`` only when the operator allows re-export."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from fakes.relays import agent_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream
from fakes.waiting import wait_until

SERVER_SCRIPT = Path(__file__).parent.parent / "mcp" / "mcp_test_server.py"


@pytest.fixture(params=[False, True], ids=["private", "reexported"])
def relay(request: pytest.FixtureRequest, fake_upstream: FakeUpstream, tmp_path: Path) -> Iterator[RunningServer]:
    tree = agent_tree(fake_upstream, tmp_path / "data")
    tree["mcp"] = {"servers": {"files": {"command": [sys.executable, str(SERVER_SCRIPT), "stdio"], "connect_timeout_seconds": 20.0}}}
    tree["mcp_server"] = {"reexport_mcp_tools": request.param}
    with start_relay(tmp_path, tree) as server:
        agent = server.services.agent
        assert agent is not None
        wait_until(lambda: any(name.endswith("add") for name in agent.registry.names()), timeout=20, what="the MCP server's tools")
        yield server


async def _tools(relay: RunningServer) -> list[str]:
    async with (
        httpx2.AsyncClient(timeout=30) as http,
        streamable_http_client(relay.url("/mcp"), http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        names = [tool.name for tool in (await session.list_tools()).tools]
        if relay.settings.mcp_server.reexport_mcp_tools:
            added = next(name for name in names if name.endswith("add"))
            result = await session.call_tool(added, {"a": 2, "b": 40})
            assert isinstance(result.content[0], types.TextContent) and "42" in result.content[0].text
        return names


async def test_aggregated_tools_are_served_only_when_reexported(relay: RunningServer) -> None:
    names = await _tools(relay)
    if relay.settings.mcp_server.reexport_mcp_tools:
        assert "current_time" in names and any(name.endswith("add") for name in names), names
    else:
        assert names == ["current_time"], names
