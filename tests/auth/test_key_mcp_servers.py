"""A key's MCP server allow-list (``mcp_servers``) in keys.db, the CLI, and the migration of an older keys.db.

How the allow-list is enforced (tool lists, calls, ``/mcp``) is tested with
real MCP servers in tests/mcp/test_mcp_key_access.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from fakes.relays import start_relay
from fakes.server import relay_config
from fakes.upstream import FakeUpstream
from toolrelay.app.auth.keyformat import hash_key, last4, new_key
from toolrelay.app.auth.keystore import MIGRATIONS, SCHEMA
from toolrelay.app.cli import main as cli_main


def _cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> object:
    assert cli_main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_sets_shows_and_clears_the_mcp_servers_of_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    created = _cli_json(capsys, "keys", "create", "--name", "limited", "--mcp-servers", "files, remote", *data)
    assert isinstance(created, dict)
    key_id = created["id"]
    assert created["mcp_servers"] == ["files", "remote"]
    plain = _cli_json(capsys, "keys", "create", "--name", "plain", *data)
    assert isinstance(plain, dict) and plain["mcp_servers"] is None
    # '' is no server, '*' every server again; models stay as they were unless given.
    for flag, expected in (("", []), ("remote", ["remote"]), ("*", None)):
        updated = _cli_json(capsys, "keys", "update", key_id, "--mcp-servers", flag, *data)
        assert isinstance(updated, dict) and updated["mcp_servers"] == expected and updated["models"] == ["*"], (flag, updated)
        shown = _cli_json(capsys, "keys", "show", key_id, *data)
        assert isinstance(shown, dict) and shown["mcp_servers"] == expected
    updated = _cli_json(capsys, "keys", "update", key_id, "--models", "agent/*", "--mcp-servers", "files", *data)
    assert isinstance(updated, dict) and updated["models"] == ["agent/*"] and updated["mcp_servers"] == ["files"]
    listed = _cli_json(capsys, "keys", "list", *data)
    assert isinstance(listed, dict)
    assert {k["name"]: k["mcp_servers"] for k in listed["data"]} == {"limited": ["files"], "plain": None}
    # The table has the column; an update with nothing to change, or of no key, fails.
    assert cli_main(["keys", "list", *data]) == 0
    table = capsys.readouterr().out
    assert "MCP SERVERS" in table.splitlines()[0] and "files" in table
    assert cli_main(["keys", "update", key_id, *data]) != 0
    assert "nothing to change" in capsys.readouterr().err
    assert cli_main(["keys", "update", "0123456789ab", "--mcp-servers", "", *data]) != 0


def _old_keys_db(path: Path) -> tuple[str, str]:
    """A keys.db as the release before ``mcp_servers`` wrote it (schema version 1), holding one key."""
    path.parent.mkdir(mode=0o700, parents=True)
    key_id, full = new_key()
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        db.execute("PRAGMA user_version = 1")
        db.execute(
            "INSERT INTO api_keys (id, name, key_hash, tail, models, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (key_id, "old", hash_key(full), last4(full), '["fake-model"]', 1.0),
        )
    path.chmod(0o600)
    return key_id, full


def test_an_older_keys_db_is_migrated_and_its_keys_keep_every_server(tmp_path: Path, fake: FakeUpstream, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    key_id, full = _old_keys_db(data / "keys.db")
    with start_relay(tmp_path, relay_config(fake.base_url, data)) as relay:
        answer = httpx.get(relay.url("/v1/models"), headers={"authorization": f"Bearer {full}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert [m["id"] for m in answer.json()["data"]] == ["fake-model"]  # its model allow-list survived
    with sqlite3.connect(data / "keys.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 2  # the current version, whatever came after mcp_servers
        assert db.execute("SELECT mcp_servers FROM api_keys WHERE id = ?", (key_id,)).fetchone() == (None,)
    shown = _cli_json(capsys, "keys", "show", key_id, "--data-dir", str(data))
    assert isinstance(shown, dict) and shown["mcp_servers"] is None and shown["models"] == ["fake-model"]
    updated = _cli_json(capsys, "keys", "update", key_id, "--mcp-servers", "files", "--data-dir", str(data))
    assert isinstance(updated, dict) and updated["mcp_servers"] == ["files"]
