"""Issue 10 item 19: fetch_page reached any port of a public address, this host's own included.

Over HTTP through agent mode: the scripted model asks fetch_page for a page on
this host's own (non-loopback) interface address, and for a port outside the
allowed list. Real servers listen at both targets; they must receive nothing,
and the run carries on with the refusal as the tool's result.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

_WEB_TESTS = str(Path(__file__).resolve().parent.parent / "web")
if _WEB_TESTS not in sys.path:
    sys.path.append(_WEB_TESTS)  # web_test_servers (LocalServer), shared with tests/web

from web_test_servers import LocalServer
from web_test_servers import Reply as PageReply


def host_address() -> str | None:
    """A non-loopback IPv4 address of this host (the source the kernel picks for an outbound packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP connect sends nothing
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


@pytest.fixture
def own_site() -> Iterator[LocalServer]:
    address = host_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    with LocalServer(host=address) as server:
        server.route("/admin", PageReply(200, "HOST-INTERNAL", "text/plain"))
        yield server


def agent_fetch(relay: RunningServer, fake: FakeUpstream, url: str) -> dict[str, Any]:
    """One agent run whose model calls fetch_page(url) then answers; returns the tool_result record."""
    fake.enqueue(Reply(tool_calls=[{"name": "fetch_page", "arguments": {"url": url}}]), Reply(content="done"))
    response = httpx.post(
        relay.url("/v1/chat/completions"),
        json={"model": "agent/fake-model", "messages": [{"role": "user", "content": "read it"}]},
        headers={"Authorization": "Bearer sk-test"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    assert message["content"] == "done"
    (result,) = [s for s in message["agent_steps"] if s["type"] == "tool_result" and s["tool"] == "fetch_page"]
    return result


def test_fetch_of_this_hosts_own_address_is_refused_over_http(relay_factory: Callable[..., RunningServer], fake: FakeUpstream, own_site: LocalServer) -> None:
    # The operator opened the host's network (an intranet) and every port:
    # without the own-address rule this fetch reached the host's own service.
    relay = relay_factory(
        agent={"builtin_tools": ["fetch_page"]},
        fetch_page={"allow_networks": [f"{own_site.host}/32"], "allowed_ports": [], "timeout": 5.0},
    )
    result = agent_fetch(relay, fake, f"{own_site.url}/admin")
    assert result["status"] == "error", result
    assert f"{own_site.host} is an address of this host" in result["summary"], result
    assert own_site.hits == []
    # The model was told why, in the tool message of its next call.
    tool_texts = [m["content"] for m in fake.chat_requests[-1].body["messages"] if m.get("role") == "tool"]
    assert any("address of this host" in t for t in tool_texts), tool_texts


def test_fetch_of_a_port_outside_the_allowed_list_is_refused_over_http(relay_factory: Callable[..., RunningServer], fake: FakeUpstream) -> None:
    with LocalServer() as site:
        site.route("/", PageReply(200, "REACHED", "text/plain"))
        # Loopback is opened on purpose; the port list (the default) still applies.
        relay = relay_factory(agent={"builtin_tools": ["fetch_page"]}, fetch_page={"allow_networks": ["127.0.0.1/32"], "timeout": 5.0})
        result = agent_fetch(relay, fake, f"{site.url}/")
        assert result["status"] == "error", result
        assert f"port {site.port} is not one of the allowed ports (80, 443, 8080, 8443)" in result["summary"], result
        assert site.hits == []
