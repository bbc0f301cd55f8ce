"""Fixtures for the ``kind = "gemini"`` tests: a fake Gemini server and a toolrelay in front of it.

- ``gemini`` (per test): the session :class:`fakes.gemini.FakeGemini`, reset.
- ``gemini_relay`` (session): toolrelay with one upstream ``gem`` (``kind = "gemini"``,
  the fake's base URL, key :data:`fakes.gemini.GEMINI_KEY` from the config) serving
  ``gemini-2.5-flash`` and ``text-embedding-004``; the agent on with ``current_time``.
- ``client``: the OpenAI SDK on that relay.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from fakes.clients import sdk
from fakes.gemini import GEMINI_KEY, FakeGemini
from fakes.relays import start_relay
from fakes.server import RunningServer

MODEL = "gemini-2.5-flash"
EMBEDDING_MODEL = "text-embedding-004"


def gemini_tree(fake: FakeGemini, data_dir: Path, **upstream: Any) -> dict[str, Any]:
    """A relay whose only upstream is the fake Gemini server."""
    return {
        "server": {"data_dir": str(data_dir), "access_log": True},
        "upstreams": {
            "gem": {
                "kind": "gemini",
                "base_url": fake.base_url,
                "api_key": GEMINI_KEY,
                "models": [MODEL, EMBEDDING_MODEL],
                "timeout": 30.0,
                "connect_timeout": 5.0,
                **upstream,
            }
        },
        "agent": {"builtin_tools": ["current_time"]},
    }


@pytest.fixture(scope="session")
def gemini_server() -> Iterator[FakeGemini]:
    fake = FakeGemini(models=[MODEL]).start()
    yield fake
    fake.stop()


@pytest.fixture
def gemini(gemini_server: FakeGemini) -> Iterator[FakeGemini]:
    gemini_server.reset()
    yield gemini_server
    # Every test's requests carried the key in the header only.
    assert gemini_server.key_in_url == 0
    assert all(r.headers.get("x-goog-api-key") == GEMINI_KEY for r in gemini_server.requests)
    gemini_server.reset()


@pytest.fixture(scope="session")
def gemini_relay(gemini_server: FakeGemini, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("gemini-relay")
    with start_relay(root, gemini_tree(gemini_server, root / "data")) as server:
        yield server


@pytest.fixture
def client(gemini_relay: RunningServer) -> Iterator[openai.OpenAI]:
    with sdk(gemini_relay) as c:
        yield c
