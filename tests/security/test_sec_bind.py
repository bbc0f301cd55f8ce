"""Issue 10 item 9: ``host = ""`` binds every interface but counted as loopback (auth stayed off).

An empty or wildcard host is public now: the CLI refuses to serve it without
credentials, the gate forces authentication on, the guard still refuses
foreign Host names, and the banner says what is exposed. Names (``localhost``
too) are resolved and must resolve to loopback addresses only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.server import closed_port, relay_config, write_toml
from fakes.upstream import FakeUpstream
from toolrelay.app.bind import is_loopback
from toolrelay.app.cli import banner

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("host", ["", " ", "0.0.0.0", "::", "[::]", "192.0.2.1", "no-such-host.invalid"])
def test_wildcard_and_foreign_hosts_are_public(host: str) -> None:
    assert is_loopback(host) is False


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host) is True


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::"])
def test_cli_refuses_to_serve_every_interface_without_keys(tmp_path: Path, fake_upstream: FakeUpstream, host: str) -> None:
    port, holder = closed_port()
    holder.close()
    tree = relay_config(fake_upstream.base_url, tmp_path / "data", server={"host": host, "port": port})
    config = write_toml(tmp_path / "toolrelay.toml", tree)
    # A subprocess: before the fix this started serving on every interface (and the timeout fails the test).
    done = subprocess.run(
        [sys.executable, "-m", "toolrelay.app", "serve", "--config", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        cwd=REPO,
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "refusing to listen on" in done.stderr and "without API keys" in done.stderr, done.stderr


def test_empty_host_forces_authentication_on(relay_factory: Any) -> None:
    relay = relay_factory(server={"host": ""})
    assert relay.services.gate.enabled is True
    response = httpx.get(relay.url("/v1/models"), timeout=30.0)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_public_unauthenticated_server_still_refuses_rebound_hosts(relay_factory: Any) -> None:
    relay = relay_factory(server={"host": "", "allow_unauthenticated_public": True})
    assert relay.services.gate.enabled is False
    # Its own addresses work (a client on the LAN uses an IP address)...
    assert httpx.get(relay.url("/v1/models"), headers={"host": f"192.0.2.10:{relay.port}"}, timeout=30.0).status_code == 200
    # ...a rebound name does not.
    refused = httpx.get(relay.url("/v1/models"), headers={"host": "attacker.example"}, timeout=30.0)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "host_not_allowed"


def test_banner_is_honest_about_a_wildcard_bind(relay_factory: Any) -> None:
    relay = relay_factory(server={"host": "", "allow_unauthenticated_public": True})
    text = banner(relay.settings, relay.services, "", 8000)
    assert "every interface" in text
    assert "loopback only" not in text
    assert "anyone who can reach this port" in text
    local = relay_factory()
    assert "loopback only" in banner(local.settings, local.services, "127.0.0.1", 8000)
