"""Fixtures for the API-key, limits, budget and ledger tests (issue #6).

- ``auth_relay`` (module): a toolrelay in front of the session fake upstream
  with an admin key (so auth is on from the start), prices for the fake
  models and a per-request cost cap; every test creates its own keys, so
  tests share the server without sharing limits.
- ``admin``: an :class:`Admin` helper on that relay (create/revoke keys over
  ``/admin/keys``, read ``/admin/usage``).
- ``redis_url`` (module): a real ``redis-server`` on a free loopback port;
  skipped with a reason when the binary is not installed (CI installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from fakes.server import RunningServer, load_toml_settings, relay_config, run_toolrelay
from fakes.upstream import FakeUpstream

ADMIN_KEY = "test-admin-key-0123456789abcdef"
MODELS = ["fake-model", "fake-tools", "org/fake-slash"]
# fake-model: cheap and realistic; fake-tools: one dollar per token, so one request blows a small budget.
PRICING = {
    "models": {
        "fake-model": {"input": 1.0, "output": 2.0},
        "fake-tools": {"input": 1_000_000.0, "output": 1_000_000.0},
    }
}
COST_CAP_USD = 1000.0


def auth_tree(fake_upstream: FakeUpstream, data_dir: Path, **sections: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "upstream_models": list(MODELS),
        "aliases": {"gpt-4": "fake-model"},
        # These tests share one relay and send many wrong keys on purpose from
        # one address; the brute-force guard has its own tests (tests/security).
        "auth": {"admin_key": ADMIN_KEY, "ledger_flush_seconds": 0.05, "max_failed_auth": 10_000},
        "pricing": PRICING,
        "limits": {"max_request_cost_usd": COST_CAP_USD},
    }
    options.update(sections)
    return relay_config(fake_upstream.base_url, data_dir, **options)


class Admin:
    """The admin API of one relay, through httpx with the admin key."""

    def __init__(self, relay: RunningServer) -> None:
        self.relay = relay
        self.http = httpx.Client(base_url=relay.root_url, timeout=30.0, headers={"authorization": f"Bearer {ADMIN_KEY}"})

    def create_key(self, name: str = "test", **spec: Any) -> tuple[str, str]:
        """(key id, full key)."""
        response = self.http.post("/admin/keys", json={"name": name, **spec})
        assert response.status_code == 200, response.text
        body = response.json()
        return body["id"], body["value"]

    def revoke(self, key_id: str) -> dict[str, Any]:
        response = self.http.delete(f"/admin/keys/{key_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def usage_rows(self, key_id: str, *, count: int | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The key's ledger rows; with ``count``, wait until that many exist (a stream books at its end)."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.http.get("/admin/usage", params={"group_by": "request", "key_id": key_id})
            assert response.status_code == 200, response.text
            rows = response.json()["data"]
            if count is None or len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def close(self) -> None:
        self.http.close()


def sdk(relay: RunningServer, key: str, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=relay.base_url, api_key=key, max_retries=options.pop("max_retries", 0), timeout=options.pop("timeout", 30.0), **options)


@pytest.fixture(scope="module")
def auth_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("auth")
    server = run_toolrelay(load_toml_settings(root / "toolrelay.toml", auth_tree(fake_upstream, root / "data")))
    yield server
    server.stop()


@pytest.fixture
def admin(auth_relay: RunningServer) -> Iterator[Admin]:
    helper = Admin(auth_relay)
    yield helper
    helper.close()


@pytest.fixture
def make_relay(fake_upstream: FakeUpstream, tmp_path: Path) -> Iterator[Any]:
    """``make_relay(data_dir=None, **sections) -> RunningServer`` for tests that need their own configuration."""
    started: list[RunningServer] = []

    def make(data_dir: Path | None = None, **sections: Any) -> RunningServer:
        n = len(started)
        tree = auth_tree(fake_upstream, data_dir or tmp_path / f"data{n}", **sections)
        server = run_toolrelay(load_toml_settings(tmp_path / f"toolrelay{n}.toml", tree))
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("TOOLRELAY_REQUIRE_REDIS"):
            pytest.fail("redis-server is not installed, and CI requires the Redis tests to run")
        pytest.skip("redis-server is not installed (apt-get install -y redis-server); CI installs it")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
