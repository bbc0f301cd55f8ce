"""``toolrelay mcp`` applies the key's allow-lists: its models (no agent model: refused, as ``/mcp`` answers 403
``mcp_not_allowed``) and its MCP servers (re-exported tools of the others are neither listed nor run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from fakes.server import write_toml

SERVER_SCRIPT = Path(__file__).parent.parent / "mcp" / "mcp_test_server.py"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    stdio = {"command": [sys.executable, str(SERVER_SCRIPT), "stdio"], "connect_timeout_seconds": 20.0}
    tree = {
        "server": {"data_dir": str(tmp_path / "data")},
        "upstreams": {"fake": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "models": ["fake-model"]}},
        "aliases": {"smart": "fake-model"},
        # No python tool: these tests need no sandbox.
        "agent": {"builtin_tools": ["current_time"]},
        "mcp": {"servers": {"files": stdio, "internal": stdio}},
        "mcp_server": {"reexport_mcp_tools": True},
        "auth": {"ledger_flush_seconds": 0.05},
    }
    return write_toml(tmp_path / "toolrelay.toml", tree)


def _create_key(config: Path, *options: str) -> str:
    env = {**os.environ, "TOOLRELAY_CONFIG": str(config)}
    done = subprocess.run(
        [sys.executable, "-m", "toolrelay.app", "keys", "create", "--json", "--name", "desktop", *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)["value"]


def _params(config: Path, key: str) -> StdioServerParameters:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "TOOLRELAY_MCP_KEY": key}
    return StdioServerParameters(command=sys.executable, args=["-m", "toolrelay.app", "mcp", "--config", str(config)], env=env)


@pytest.mark.parametrize(
    ("models", "allowed"), [("fake-model", False), ("gpt-4o,fake-*", False), ("agent/fake-model", True), ("agent:smart", True), ("*", True)]
)
def test_a_key_allowed_no_agent_model_is_refused(config: Path, models: str, allowed: bool) -> None:
    key = _create_key(config, "--models", models)
    params = _params(config, key)
    done = subprocess.run([params.command, *params.args], env=params.env, input="", capture_output=True, text=True, timeout=60)
    if allowed:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 2, done.stderr
        assert "admits no agent model" in done.stderr and done.stdout == ""


async def test_reexported_tools_are_those_of_the_keys_servers(config: Path) -> None:
    key = _create_key(config, "--mcp-servers", "files")
    async with stdio_client(_params(config, key)) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        names: set[str] = set()
        for _ in range(100):  # the aggregated servers connect after the stdio server is up
            names = {tool.name for tool in (await session.list_tools()).tools}
            if "files__add" in names:
                break
            await anyio.sleep(0.2)
        forbidden = await session.call_tool("internal__add", {"a": 1, "b": 2})
        allowed = await session.call_tool("files__add", {"a": 1, "b": 2})
    assert "files__add" in names and "current_time" in names and not any(n.startswith("internal__") for n in names), names
    assert forbidden.is_error is True
    assert isinstance(forbidden.content[0], types.TextContent) and "no tool named 'internal__add'" in forbidden.content[0].text
    assert allowed.is_error is False and isinstance(allowed.content[0], types.TextContent) and allowed.content[0].text == "3"
