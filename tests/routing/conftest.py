"""Routing suite: toolrelay in front of three fake upstreams, one model served by two of them.

``pool-model`` has two deployments (``a`` answers as ``m-a``, ``b`` as
``m-b``), strategy ``priority`` so ``a`` is always tried first while it is
usable; its fallback ``backup-model`` and its context fallback ``big-model``
live on the third upstream ``c``. Each test gets fresh relays (breakers and
rests are state) and reset upstreams.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.relays import RelayPool
from fakes.server import RunningServer, relay_config
from fakes.upstream import FakeUpstream

POOL = "pool-model"
WINDOW = 2000


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, FakeUpstream]]:
    ups = {name: FakeUpstream(models=[]).start() for name in ("a", "b", "c")}
    yield ups
    for up in ups.values():
        up.stop()


@pytest.fixture
def ups(upstreams: dict[str, FakeUpstream]) -> Iterator[dict[str, FakeUpstream]]:
    for up in upstreams.values():
        up.reset()
    yield upstreams
    for up in upstreams.values():
        up.reset()


def routing_tree(
    ups: dict[str, FakeUpstream], data_dir: Path, *, routing: dict[str, Any] | None = None, a_url: str | None = None, **sections: Any
) -> dict[str, Any]:
    """``a_url`` points deployment ``a`` elsewhere (a port that refuses connections)."""

    def upstream(up: FakeUpstream, models: list[str]) -> dict[str, Any]:
        return {"kind": "openai", "base_url": up.base_url, "api_key": "sk-upstream-secret", "models": models, "timeout": 10.0, "connect_timeout": 2.0}

    tree = relay_config(
        ups["c"].base_url,
        data_dir,
        upstream_models=["backup-model", "big-model"],
        extra_upstreams={"a": {**upstream(ups["a"], []), **({"base_url": a_url} if a_url else {})}, "b": upstream(ups["b"], [])},
        models={
            POOL: {
                "deployments": [{"upstream": "a", "model": "m-a"}, {"upstream": "b", "model": "m-b"}],
                "strategy": "priority",
                "context_window": WINDOW,
                "fallbacks": ["backup-model"],
                "context_fallbacks": ["big-model"],
            }
        },
        routing={"breaker_failures": 1000, "max_retry_after_seconds": 0.0, **(routing or {})},
        **sections,
    )
    return tree


@pytest.fixture
def start(ups: dict[str, FakeUpstream], tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """``start(routing={...}, redis={...}, a_url=..., ...)`` -> a relay serving ``pool-model``."""
    with RelayPool(tmp_path) as pool:

        def make(**sections: Any) -> RunningServer:
            return pool.start(routing_tree(ups, pool.data_dir(), **sections))

        yield make


@pytest.fixture
def relay(start: Callable[..., RunningServer]) -> RunningServer:
    return start()
