"""Fixtures for the agent-mode tests.

- ``agent_relay`` (session): a toolrelay in front of the session fake upstream
  with ``agent/...`` models, built-in ``current_time`` plus the test tools of
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
from fakes.server import RunningServer, load_toml_settings, relay_config, run_toolrelay
from fakes.upstream import FakeUpstream

CLIENT_KEY = "sk-test"
AGENT_MODELS = ["fake-model", "fake-tools", "fake-constrained"]
MAX_TOOL_OUTPUT_CHARS = 2000


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "embedded_model: runs the real embedded model (SmolLM2 via xllamacpp); on by default")


def agent_tree(fake: FakeUpstream, data_dir: Path, *, agent: dict[str, Any] | None = None, **keywords: Any) -> dict[str, Any]:
    tree = relay_config(fake.base_url, data_dir, **keywords)
    tree["upstreams"]["fake"]["models"] = list(AGENT_MODELS)
    tree["agent"] = {"builtin_tools": ["current_time"], "max_tool_output_chars": MAX_TOOL_OUTPUT_CHARS, **(agent or {})}
    tree["models"] = {"fake-constrained": {"tool_calling": "constrained"}}
    return tree


@pytest.fixture(scope="session")
def session_test_tools() -> TestTools:
    return TestTools()


@pytest.fixture(scope="session")
def agent_relay(fake_upstream: FakeUpstream, session_test_tools: TestTools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("agent-relay")
    server = run_toolrelay(load_toml_settings(root / "toolrelay.toml", agent_tree(fake_upstream, root / "data")))
    try:
        session_test_tools.register(server)
        yield server
    finally:
        server.stop()


@pytest.fixture
def test_tools(session_test_tools: TestTools, agent_relay: RunningServer) -> Iterator[TestTools]:
    session_test_tools.reset()
    yield session_test_tools
    session_test_tools.reset()


@pytest.fixture
def oai(agent_relay: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=agent_relay.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=60.0) as c:
        yield c


@pytest.fixture
def ahttp(agent_relay: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=agent_relay.root_url, timeout=60.0, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as c:
        yield c


@pytest.fixture
def agent_relay_factory(fake_upstream: FakeUpstream, relay_factory: Callable[..., RunningServer], tmp_path: Path) -> Callable[..., tuple[RunningServer, TestTools]]:
    count = 0

    def make(*, agent: dict[str, Any] | None = None, **keywords: Any) -> tuple[RunningServer, TestTools]:
        nonlocal count
        count += 1
        server = relay_factory(tree=agent_tree(fake_upstream, tmp_path / f"agent-data{count}", agent=agent, **keywords))
        tools = TestTools()
        tools.register(server)
        return server, tools

    return make
