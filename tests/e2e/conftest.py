"""Fixtures for the end-to-end suite: real toolrelay servers, real built-in tools.

Everything runs on 127.0.0.1. The model is the session :class:`FakeUpstream`
(``fake`` fixture from ``tests/conftest.py``), scripted per test with a
``responder`` that reads the request it receives (the tool messages the agent
sent back) and decides the next step, the way a real model would.

Module/session scoped:

- ``web_server`` (session): a :class:`LocalServer` on 127.0.0.1 serving the
  pages the agent fetches and a SearXNG-shaped ``/search?format=json``.
- ``e2e_relay``: toolrelay on :func:`fakes.relays.e2e_tree`, every built-in tool on: ``python`` (sandbox
  with its own uid pool), ``web_search`` (``backend = "searxng"`` at
  ``web_site``), ``fetch_page`` (``allow_networks = ["127.0.0.1/32"]``) and the
  memory tools (SQLite store in the relay's data dir). Auth off.
- ``auth_e2e_relay``: the same with ``[auth] admin_key`` set, plus an
  :class:`fakes.admin.Admin` (``admin``) that creates API keys over ``/admin/keys``.

Per test:

- ``web_site``: a :class:`e2e_helpers.SearxSite` on ``web_server``:
  ``site.results`` is what every search answers, ``site.page(path, html)``
  serves a page, ``site.fail`` stages an engine outage; reset after the test.
- ``oai`` / ``ahttp``: OpenAI SDK / httpx clients on ``e2e_relay``.
- ``e2e_relay_factory(**sections)``: a fresh relay with overridden sections
  (``sandbox={"wall_seconds": 2}``), stopped at the end of the test.
"""

from __future__ import annotations

import sys
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

from fakes.admin import ADMIN_KEY, Admin
from fakes.clients import rest, sdk
from fakes.relays import RelayPool, e2e_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream

_WEB_TESTS = str(Path(__file__).resolve().parent.parent / "web")
if _WEB_TESTS not in sys.path:
    sys.path.append(_WEB_TESTS)  # web_test_servers (LocalServer), shared with tests/web

from e2e_helpers import SearxSite
from web_test_servers import LocalServer

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


@pytest.fixture(scope="module")
def e2e_relay(fake_upstream: FakeUpstream, web_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("e2e")
    with start_relay(root, e2e_tree(fake_upstream, root / "data", web_server.url)) as server:
        yield server


@pytest.fixture
def e2e_relay_factory(fake_upstream: FakeUpstream, web_server: LocalServer, tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    with RelayPool(tmp_path) as pool:

        def make(**sections: Any) -> RunningServer:
            return pool.start(e2e_tree(fake_upstream, pool.data_dir(), web_server.url, **sections))

        yield make


@pytest.fixture(scope="module")
def auth_e2e_relay(fake_upstream: FakeUpstream, web_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("e2e-auth")
    tree = e2e_tree(fake_upstream, root / "data", web_server.url, auth={"admin_key": ADMIN_KEY, "ledger_flush_seconds": 0.05})
    with start_relay(root, tree) as server:
        yield server


@pytest.fixture
def admin(auth_e2e_relay: RunningServer) -> Iterator[Admin]:
    with Admin(auth_e2e_relay) as helper:
        yield helper


@pytest.fixture
def oai(e2e_relay: RunningServer) -> Iterator[openai.OpenAI]:
    with sdk(e2e_relay) as client:
        yield client


@pytest.fixture
def ahttp(e2e_relay: RunningServer) -> Iterator[httpx.Client]:
    with rest(e2e_relay) as client:
        yield client
