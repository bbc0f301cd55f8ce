"""Fixtures for the agent-mode tests.

- ``agent_relay`` (session): a toolrelay in front of the session fake upstream
  on :func:`fakes.relays.agent_tree`: ``agent/...`` models, built-in ``current_time`` plus the test tools of
  :mod:`agent_test_tools` (echo, slow, hang, boom, bad_output, huge) and
  ``max_tool_output_chars = 2000``. ``fake-constrained`` is served with
  ``[models."fake-constrained"] tool_calling = "constrained"``.
- ``test_tools``: the tool instances registered on ``agent_relay``, reset per test.
- ``oai`` / ``ahttp``: an OpenAI SDK client / an httpx client on ``agent_relay``.
- ``agent_relay_factory(agent={...}, **relay_config_keywords)``: a fresh relay
  (own settings, own test tool instances) -> ``(server, tools)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from agent_test_tools import TestTools

from fakes.clients import rest, sdk
from fakes.relays import agent_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "embedded_model: runs the real embedded model (SmolLM2 via xllamacpp); on by default")


@pytest.fixture(scope="session")
def session_test_tools() -> TestTools:
    return TestTools()


@pytest.fixture(scope="session")
def agent_relay(fake_upstream: FakeUpstream, session_test_tools: TestTools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("agent-relay")
    with start_relay(root, agent_tree(fake_upstream, root / "data")) as server:
        session_test_tools.register(server)
        yield server


@pytest.fixture
def test_tools(session_test_tools: TestTools, agent_relay: RunningServer) -> Iterator[TestTools]:
    session_test_tools.reset()
    yield session_test_tools
    session_test_tools.reset()


@pytest.fixture
def oai(agent_relay: RunningServer) -> Iterator[openai.OpenAI]:
    with sdk(agent_relay) as c:
        yield c


@pytest.fixture
def ahttp(agent_relay: RunningServer) -> Iterator[httpx.Client]:
    with rest(agent_relay, timeout=60.0) as c:
        yield c


@pytest.fixture
def agent_relay_factory(
    fake_upstream: FakeUpstream, relay_factory: Callable[..., RunningServer], tmp_path: Path
) -> Callable[..., tuple[RunningServer, TestTools]]:
    count = 0

    def make(*, agent: dict[str, Any] | None = None, **keywords: Any) -> tuple[RunningServer, TestTools]:
        nonlocal count
        count += 1
        server = relay_factory(tree=agent_tree(fake_upstream, tmp_path / f"agent-data{count}", agent=agent, **keywords))
        tools = TestTools()
        tools.register(server)
        return server, tools

    return make
