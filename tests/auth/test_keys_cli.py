"""``toolrelay keys ...`` and the key store: keys shown once, stored as hashes, seen by a running server at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream
from toolrelay.app.auth.keyformat import KEY_CHARS, mask, parse_key_id
from toolrelay.app.cli import main as cli_main

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real ``toolrelay`` command in another process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLRELAY_")}
    return subprocess.run([sys.executable, "-m", "toolrelay.app", *args], capture_output=True, text=True, timeout=60, cwd=REPO, env=env)


def test_key_format_and_masking() -> None:
    from toolrelay.app.auth.keyformat import new_key

    key_id, key = new_key()
    assert len(key) == KEY_CHARS and key.startswith(f"tr-{key_id}-") and parse_key_id(key) == key_id
    assert parse_key_id(key + "x") is None and parse_key_id(key.replace("tr-", "sk-")) is None
    assert parse_key_id(key[:15] + "!" + key[16:]) is None
    assert mask(key) == key[:5] + "***" + key[-2:]
    assert mask("short") == "***"
    assert "\n" not in mask("tr-abc\n\n\n\n\n\n\n\nx\n")


def test_cli_create_list_show_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    code = cli_main(
        [
            "keys",
            "create",
            "--name",
            "ci bot",
            "--data-dir",
            data,
            "--models",
            "fake-model,agent/*",
            "--models",
            "org/*",
            "--rpm",
            "60",
            "--tpm",
            "10000",
            "--max-parallel",
            "2",
            "--budget-usd",
            "12.5",
            "--budget-period",
            "weekly",
            "--expires",
            "30d",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    key = next(word for word in out.split() if word.startswith("tr-"))
    key_id = parse_key_id(key)
    assert key_id and "shown only this once" in out
    # Only the hash is stored: the secret is nowhere in the database files.
    blobs = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("keys.db*"))
    secret = key.split("-", 2)[2]
    assert secret.encode() not in blobs and key.encode() not in blobs

    assert cli_main(["keys", "list", "--data-dir", data]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "ci bot" in listing and "60 rpm" in listing and "$0.00 of $12.50 weekly" in listing
    assert secret not in listing

    assert cli_main(["keys", "show", f"tr-{key_id}", "--data-dir", data, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["models"] == ["fake-model", "agent/*", "org/*"] and shown["max_parallel"] == 2 and shown["tpm"] == 10000
    assert shown["redacted_value"].endswith(key[-4:]) and "value" not in shown and shown["spent_usd"] == 0

    assert cli_main(["keys", "revoke", key_id, "--data-dir", data]) == 0
    assert "Revoked" in capsys.readouterr().out
    assert cli_main(["keys", "list", "--data-dir", data, "--active"]) == 0
    assert key_id not in capsys.readouterr().out
    assert cli_main(["keys", "show", "0123456789ab", "--data-dir", data]) == 2
    assert cli_main(["keys", "create", "--name", "x", "--data-dir", data, "--expires", "someday"]) == 2
    assert cli_main(["keys", "create", "--name", "x", "--data-dir", data, "--rpm", "-5"]) == 2


def test_cli_in_another_process_against_a_running_server(auth_relay: RunningServer, fake: FakeUpstream) -> None:
    data = auth_relay.settings.server.data_dir
    created = run_cli("keys", "create", "--name", "subprocess", "--data-dir", data, "--models", "fake-model", "--json")
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    key = body["value"]
    url = auth_relay.url("/v1/chat/completions")
    headers = {"authorization": f"Bearer {key}"}
    assert httpx.post(url, json=CHAT, headers=headers).status_code == 200
    revoked = run_cli("keys", "revoke", body["id"], "--data-dir", data)
    assert revoked.returncode == 0, revoked.stderr
    response = httpx.post(url, json=CHAT, headers=headers)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    listing = run_cli("keys", "list", "--data-dir", data)
    assert body["id"] in listing.stdout and "revoked" in listing.stdout and key not in listing.stdout
