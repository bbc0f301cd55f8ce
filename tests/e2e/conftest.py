"""Fixtures for the end-to-end suite: real toolrelay servers, real built-in tools.

Everything runs on 127.0.0.1. The model is the session :class:`FakeUpstream`
(``fake`` fixture from ``tests/conftest.py``), scripted per test with a
``responder`` that reads the request it receives (the tool messages the agent
sent back) and decides the next step, the way a real model would.

Module/session scoped:

- ``web_server`` (session): a :class:`LocalServer` on 127.0.0.1 serving the
  pages the agent fetches and a SearXNG-shaped ``/search?format=json``.
- ``e2e_relay``: toolrelay with every built-in tool on: ``python`` (sandbox
  with its own uid pool), ``web_search`` (``backend = "searxng"`` at
  ``web_site``), ``fetch_page`` (``allow_networks = ["127.0.0.1/32"]``) and the
  memory tools (SQLite store in the relay's data dir). Auth off.
- ``auth_e2e_relay``: the same with ``[auth] admin_key`` set, plus an
  :class:`E2EAdmin` (``admin``) that creates API keys over ``/admin/keys``.

Per test:

- ``web_site``: a :class:`e2e_helpers.SearxSite` on ``web_server``:
  ``site.results`` is what every search answers, ``site.page(path, html)``
  serves a page, ``site.fail`` stages an engine outage; reset after the test.
- ``oai`` / ``ahttp``: OpenAI SDK / httpx clients on ``e2e_relay``.
- ``e2e_relay_factory(**sections)``: a fresh relay with overridden sections
  (``sandbox={"wall_seconds": 2}``), stopped at the end of the test.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

# tests/ is on sys.path (tests/conftest.py is not in a package), and its
# tests/memory directory would shadow the ``memory`` package as an empty
# namespace package: put the project root first, as tests/memory does.
_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)

from fakes.server import RunningServer, load_toml_settings, relay_config, run_toolrelay  # noqa: E402
from fakes.upstream import FakeUpstream  # noqa: E402

_WEB_TESTS = str(Path(__file__).resolve().parent.parent / "web")
if _WEB_TESTS not in sys.path:
    sys.path.append(_WEB_TESTS)  # web_test_servers (LocalServer), shared with tests/web

from e2e_helpers import ADMIN_KEY, E2EAdmin, SearxSite, rest, sdk  # noqa: E402
from web_test_servers import LocalServer  # noqa: E402

MODELS = ["fake-model", "fake-tools"]

# Each relay gets a sandbox uid pool of its own: a relay's start-up SIGKILLs
# every live process of its pool, so sharing one with another server (the
# session relay of tests/conftest.py uses the default 60000, the sandbox suite
# 61000-61300, a colleague's concurrent run of this suite...) would kill
# foreign runs. The pid spreads concurrent sessions over 62000-63999 (room
# for 20 relays, two uids each, per session).
_UID_BASE = 62000 + (os.getpid() % 50) * 40
_uid_bases = itertools.count(_UID_BASE, 2)
_uid_lock = threading.Lock()


def next_uid_base() -> int:
    with _uid_lock:
        return next(_uid_bases)


# ---------------------------------------------------------------------- local web


@pytest.fixture(scope="session")
def web_server() -> Iterator[LocalServer]:
    with LocalServer() as server:
        yield server


@pytest.fixture
def web_site(web_server: LocalServer) -> Iterator[SearxSite]:
    site = SearxSite(web_server)
    yield site
    site.reset()


# ---------------------------------------------------------------------- relays


def e2e_tree(fake: FakeUpstream, data_dir: Path, web_url: str, **sections: Any) -> dict[str, Any]:
    """Settings tree of an e2e relay; keyword sections replace the defaults wholesale, except
    ``sandbox`` (merged, so the uid pool stays private)."""
    tree_sections: dict[str, Any] = {
        "agent": {"max_wall_seconds": 60, "tool_timeout_seconds": 30, "keepalive_seconds": 5},
        "web_search": {"backend": "searxng", "searxng_url": web_url, "timeout": 5.0, "cache_ttl_seconds": 0},
        # The local web server listens on an ephemeral port: every port allowed here.
        "fetch_page": {"allow_networks": ["127.0.0.1/32"], "allowed_ports": [], "timeout": 5.0},
        "memory": {"enabled": True},
    }
    sandbox = {"sandbox_uid_base": next_uid_base(), "wall_seconds": 10.0, "max_concurrent": 2, **(sections.pop("sandbox", None) or {})}
    tree_sections.update(sections)
    tree_sections["sandbox"] = sandbox
    return relay_config(fake.base_url, data_dir, upstream_models=list(MODELS), **tree_sections)


@pytest.fixture(scope="module")
def e2e_relay(fake_upstream: FakeUpstream, web_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("e2e")
    server = run_toolrelay(load_toml_settings(root / "toolrelay.toml", e2e_tree(fake_upstream, root / "data", web_server.url)))
    yield server
    server.stop()


@pytest.fixture
def e2e_relay_factory(fake_upstream: FakeUpstream, web_server: LocalServer, tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def make(**sections: Any) -> RunningServer:
        n = len(started)
        tree = e2e_tree(fake_upstream, tmp_path / f"data{n}", web_server.url, **sections)
        server = run_toolrelay(load_toml_settings(tmp_path / f"toolrelay{n}.toml", tree))
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def auth_e2e_relay(fake_upstream: FakeUpstream, web_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("e2e-auth")
    tree = e2e_tree(fake_upstream, root / "data", web_server.url, auth={"admin_key": ADMIN_KEY, "ledger_flush_seconds": 0.05})
    server = run_toolrelay(load_toml_settings(root / "toolrelay.toml", tree))
    yield server
    server.stop()


@pytest.fixture
def admin(auth_e2e_relay: RunningServer) -> Iterator[E2EAdmin]:
    helper = E2EAdmin(auth_e2e_relay)
    yield helper
    helper.close()


@pytest.fixture
def oai(e2e_relay: RunningServer) -> Iterator[openai.OpenAI]:
    with sdk(e2e_relay) as client:
        yield client


@pytest.fixture
def ahttp(e2e_relay: RunningServer) -> Iterator[httpx.Client]:
    with rest(e2e_relay) as client:
        yield client
