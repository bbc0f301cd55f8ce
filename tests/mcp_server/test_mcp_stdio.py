"""``toolrelay mcp``: the MCP server over stdio, driven by the official SDK's ``stdio_client``."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import mcp_types as types
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from fakes.relays import _next_uid_base  # pyright: ignore[reportPrivateUsage] - a private uid pool, as the e2e relays get
from fakes.server import write_toml

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def _toolrelay(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "toolrelay.app", *args], env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def _params(config: Path, key: str | None) -> StdioServerParameters:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    if key:
        env["TOOLRELAY_MCP_KEY"] = key
    return StdioServerParameters(command=sys.executable, args=["-m", "toolrelay.app", "mcp", "--config", str(config)], env=env)


def _text(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


@pytest.fixture
def stdio_config(tmp_path: Path) -> Path:
    tree = {
        "server": {"data_dir": str(tmp_path / "data")},
        "upstreams": {"fake": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "models": ["fake-model"]}},
        "sandbox": {"sandbox_uid_base": _next_uid_base(), "wall_seconds": 10.0, "max_concurrent": 2},
        "auth": {"ledger_flush_seconds": 0.05},
    }
    return write_toml(tmp_path / "toolrelay.toml", tree)


async def test_stdio_lists_tools_and_runs_python_for_the_key(stdio_config: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TOOLRELAY_CONFIG": str(stdio_config)}
    created = json.loads(_toolrelay("keys", "create", "--json", "--name", "desktop", env=env))
    key_id, key = created["id"], created["value"]
    async with stdio_client(_params(stdio_config, key)) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        names = {tool.name for tool in (await session.list_tools()).tools}
        result = await session.call_tool("python", {"code": "print(6 * 7)"})
        saved = await session.call_tool("memory_save", {"text": "The desktop host prefers tabs"})
    assert {"python", "current_time", "memory_save", "memory_search"} <= names
    assert result.is_error is False and _text(result).split() == ["stdout:", "42"], _text(result)
    assert saved.is_error is False, _text(saved)
    # Booked for the key (the process flushed its ledger on exit).
    with sqlite3.connect(tmp_path / "data" / "usage.db") as db:
        rows = db.execute("SELECT key_id, mode, model, status FROM usage ORDER BY id").fetchall()
    assert rows == [(key_id, "mcp", "tool:python", 200), (key_id, "mcp", "tool:memory_save", 200)]
    with sqlite3.connect(tmp_path / "data" / "memory.db") as db:
        scopes = {scope for (scope,) in db.execute("SELECT scope FROM memories")}
    assert scopes == {f"k:{key_id}"}


def test_stdio_refuses_a_missing_or_wrong_key_once_keys_exist(stdio_config: Path) -> None:
    env = {**os.environ, "TOOLRELAY_CONFIG": str(stdio_config)}
    _toolrelay("keys", "create", "--json", "--name", "someone", env=env)
    for key in (None, "tr-abcdefgh-wrongwrongwrongwrongwrong"):
        params = _params(stdio_config, key)
        done = subprocess.run([params.command, *params.args], env=params.env, input="", capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "TOOLRELAY_MCP_KEY" in done.stderr and done.stdout == ""
