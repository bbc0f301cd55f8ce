"""Tracing suite: a relay with [tracing] enabled, exporting to a local OTLP/HTTP receiver, in front of the fake upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.otlp import OtlpReceiver
from fakes.relays import agent_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    rx = OtlpReceiver().start()
    yield rx
    rx.stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream(models=[]).start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def relay(receiver: OtlpReceiver, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    mp = pytest.MonkeyPatch()
    # Export each batch within 50 ms instead of the SDK's 5 s (read when the processor is built).
    mp.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    workdir: Path = tmp_path_factory.mktemp("tracing")
    tree = agent_tree(upstream, workdir / "data", tracing={"enabled": True, "otlp_endpoint": receiver.endpoint, "service_name": "toolrelay-test"})
    relay = start_relay(workdir, tree)
    mp.undo()
    yield relay
    relay.stop()


@pytest.fixture
def up(upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    upstream.reset()
    yield upstream
    upstream.reset()
