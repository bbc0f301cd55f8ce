"""Fixtures for the sandbox tests.

- ``sandbox``: parametrized over every backend (``bwrap``, ``landlock``);
  a backend this host cannot run is skipped with its reason. One instance per
  backend for the session, with small limits (:data:`TEST_SETTINGS`) so the
  escape cases stay fast.
- ``run``: ``await run(sandbox, code, **limits)``: one run, bounded in time,
  followed by the containment check every test gets for free: no live
  process of the test uid pool and none carrying a marker survives the run.
- ``canary_dir``: a world-readable directory outside the sandbox holding
  ``canary.txt`` (the token), so only the sandbox's file-system view, not
  file permissions, can keep code from reading it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from msgspec.structs import replace

from toolrelay.tools.sandbox import SandboxResult
from toolrelay.tools.sandbox.process import ProcessSandbox
from toolrelay.tools.sandbox.selector import kill_pool_processes, pool_processes

from .helpers import BACKENDS, RUN_TIMEOUT, TEST_SETTINGS, discard, make_sandbox, marker_processes

_instances: dict[str, ProcessSandbox] = {}


@pytest.fixture(scope="session", autouse=True)
def _exclusive_uid_pools() -> Iterator[None]:
    # Two sessions on one host (a developer's run beside CI's) would share
    # the test uid pools: each would see the other's processes as survivors
    # and sweep them. Take turns instead.
    with open(os.path.join(tempfile.gettempdir(), "toolrelay-sandbox-tests.lock"), "a") as lock:
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        # Leftovers of an interrupted earlier session would fail the checks.
        for base in (61000, 61100, 61200, 61300, 61400, 61402):
            kill_pool_processes(replace(TEST_SETTINGS, sandbox_uid_base=base))
        yield
        for sandbox in _instances.values():
            discard(sandbox)


@pytest.fixture(params=list(BACKENDS))
def sandbox(request: pytest.FixtureRequest) -> ProcessSandbox:
    name = request.param
    if name not in _instances:
        _instances[name] = make_sandbox(name)
    return _instances[name]


@dataclass
class Runner:
    markers: list[str]

    async def __call__(self, sandbox: ProcessSandbox, code: str, **limits: float) -> SandboxResult:
        result = await asyncio.wait_for(sandbox.run(code, **limits), RUN_TIMEOUT)
        # Containment holds the moment run() returns, not eventually.
        assert pool_processes(sandbox.settings) == [], "a sandbox process outlived its run"
        for marker in self.markers:
            assert marker_processes(marker) == [], f"a process marked {marker!r} outlived its run"
        return result


@pytest.fixture
def run() -> Runner:
    return Runner(markers=[])


RunFn = Callable[..., Awaitable[SandboxResult]]


@pytest.fixture
def canary_dir() -> Iterator[tuple[Path, str]]:
    token = "canary-" + secrets.token_hex(12)
    path = Path(tempfile.mkdtemp(prefix="toolrelay-test-canary-"))
    path.chmod(0o755)
    (path / "canary.txt").write_text(token)
    (path / "canary.txt").chmod(0o644)
    yield path, token
    shutil.rmtree(path, ignore_errors=True)
