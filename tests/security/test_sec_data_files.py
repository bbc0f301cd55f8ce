"""Issue 10 item 16: the data directory (key hashes, usage, memories, paused runs) is private.

Files were 0644 in a 0755 directory: any local user could read every
scope's memories and the ledger. A real server on a fresh data directory
now serves keys, the ledger, memories and an agent continuation; then no
file or directory under the data directory may be readable by group or
others.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import httpx

from fakes.server import load_toml_settings, relay_config, run_toolrelay
from fakes.upstream import FakeUpstream, Reply

ADMIN_KEY = "sec-files-admin-key-0123456789"
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def _loose(data_dir: Path) -> list[str]:
    """Every path under ``data_dir`` (itself included) that group or others can access."""
    found = []
    for path in [data_dir, *sorted(data_dir.rglob("*"))]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(data_dir.parent)} {mode:o}")
    return found


def _serve_everything(fake: FakeUpstream, tmp_path: Path, data_dir: Path) -> tuple[list[str], list[str]]:
    """Start a relay on ``data_dir``, use keys, ledger, memories and continuations.

    Returns the files there while it runs (the -wal and -shm files exist only
    then) and those of them open to others (at that moment).
    """
    tree = relay_config(
        fake.base_url,
        data_dir,
        auth={"admin_key": ADMIN_KEY, "ledger_flush_seconds": 0.05},
        agent={"builtin_tools": ["current_time"]},
    )
    server = run_toolrelay(load_toml_settings(tmp_path / "toolrelay.toml", tree))
    try:
        with httpx.Client(base_url=server.root_url, timeout=30.0) as http:
            created = http.post("/admin/keys", json={"name": "files"}, headers={"authorization": f"Bearer {ADMIN_KEY}"})
            assert created.status_code == 200, created.text
            auth = {"authorization": f"Bearer {created.json()['value']}"}
            fake.enqueue(Reply(content="hi"))
            assert (
                http.post("/v1/chat/completions", json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}, headers=auth).status_code
                == 200
            )
            saved = http.post("/v1/memories", json={"text": "The launch code is in the blue folder."}, headers=auth)
            assert saved.status_code == 200, saved.text
            # A client tool call pauses the agent run: its history goes to agent.db.
            fake.enqueue(Reply(tool_calls=[{"id": "call_w", "name": "get_weather", "arguments": {"city": "Oslo"}}]))
            paused = http.post(
                "/v1/chat/completions",
                json={"model": "agent/fake-model", "messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER_TOOL]},
                headers=auth,
            )
            assert paused.status_code == 200, paused.text
            assert paused.json()["choices"][0]["finish_reason"] == "tool_calls"
            usage = http.get("/admin/usage", params={"group_by": "request"}, headers={"authorization": f"Bearer {ADMIN_KEY}"})
            assert len(usage.json()["data"]) >= 2
            names = sorted(p.name for p in data_dir.rglob("*") if p.is_file())
            loose = _loose(data_dir)
    finally:
        server.stop()
    return names, loose


def test_fresh_data_dir_and_every_file_in_it_are_private(fake: FakeUpstream, tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual default: files 0644, directories 0755
    try:
        data_dir = tmp_path / "fresh" / "data"
        names, loose_while_running = _serve_everything(fake, tmp_path, data_dir)
    finally:
        os.umask(old_umask)
    for expected in ("keys.db", "usage.db", "memory.db", "agent.db", "memory.db-wal", "memory.db-shm", "usage.db-wal"):
        assert expected in names, names
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert loose_while_running == []
    assert _loose(data_dir) == []


def test_an_existing_loose_data_dir_is_tightened(fake: FakeUpstream, tmp_path: Path, logs: Any) -> None:
    # As an older version left it: 0755 directory, 0644 database with a 0644 WAL.
    data_dir = tmp_path / "old" / "data"
    data_dir.mkdir(parents=True, mode=0o755)
    os.chmod(data_dir, 0o755)
    conn = sqlite3.connect(data_dir / "memory.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE leftover (x)")
    for name in ("memory.db", "memory.db-wal", "memory.db-shm"):
        if (data_dir / name).exists():
            os.chmod(data_dir / name, 0o644)
    conn.close()
    os.chmod(data_dir / "memory.db", 0o644)
    _names, loose_while_running = _serve_everything(fake, tmp_path, data_dir)
    assert loose_while_running == []
    assert _loose(data_dir) == []
    assert any("accessible to other users" in text for text in logs.texts())
