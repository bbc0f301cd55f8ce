"""A relay whose ``claude-sonnet-4-5`` is served by a ``kind = "anthropic"`` upstream: the fake Anthropic API.

- ``anthropic_api`` (session): the started :class:`fakes.anthropic.FakeAnthropic`.
- ``claude``: the same, reset for this test.
- ``claude_relay`` (module): toolrelay with the upstream ``claude`` (the fake,
  key :data:`fakes.anthropic.API_KEY`, ``default_max_tokens`` 4096) serving
  :data:`MODEL`, agent mode on with the built-in ``current_time``.
- ``cclient``: an ``openai.OpenAI`` on that relay.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from fakes.anthropic import API_KEY, FakeAnthropic
from fakes.clients import sdk
from fakes.relays import start_relay
from fakes.server import RunningServer, relay_config
from fakes.upstream import FakeUpstream

MODEL = "claude-sonnet-4-5"


@pytest.fixture(scope="session")
def anthropic_api() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic(models=[MODEL, "claude-haiku-4-5"]).start()
    yield fake
    fake.stop()


@pytest.fixture
def claude(anthropic_api: FakeAnthropic) -> Iterator[FakeAnthropic]:
    anthropic_api.reset()
    yield anthropic_api
    anthropic_api.reset()


@pytest.fixture(scope="module")
def claude_relay(anthropic_api: FakeAnthropic, fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir: Path = tmp_path_factory.mktemp("claude-relay")
    tree = relay_config(
        fake_upstream.base_url,
        workdir / "data",
        extra_upstreams={
            "claude": {"kind": "anthropic", "base_url": anthropic_api.base_url, "api_key": API_KEY, "models": [MODEL], "timeout": 30.0, "connect_timeout": 5.0}
        },
        agent={"builtin_tools": ["current_time"]},
    )
    relay = start_relay(workdir, tree)
    yield relay
    relay.stop()


@pytest.fixture
def cclient(claude_relay: RunningServer) -> Iterator[openai.OpenAI]:
    with sdk(claude_relay, timeout=30.0) as client:
        yield client
