"""Concurrency: at most ``max_concurrent`` runs at once; the rest wait, then fail clearly."""

from __future__ import annotations

import asyncio
import time

import pytest
from msgspec.structs import replace

from fakes.waiting import async_wait_until
from toolrelay.tools.sandbox.selector import pool_processes

from .helpers import BACKENDS, TEST_SETTINGS, discard, make_sandbox

SLOW = "import time\ntime.sleep(%s)\nprint('done')"


@pytest.fixture(params=list(BACKENDS))
def single_slot(request):
    # A uid range apart from the other tests' sandboxes.
    sandbox = make_sandbox(request.param, replace(TEST_SETTINGS, max_concurrent=1, sandbox_uid_base=61100, queue_timeout_seconds=0.3))
    yield sandbox
    discard(sandbox)


async def test_excess_run_fails_clearly_after_queue_timeout(single_slot):
    first = asyncio.ensure_future(single_slot.run(SLOW % 1.5))
    await async_wait_until(lambda: single_slot.running() == 1, what="the first run to take the only slot")
    started = time.monotonic()
    second = await asyncio.wait_for(single_slot.run("print('second')"), 10)
    waited = time.monotonic() - started
    assert second.error is not None and second.error.startswith("sandbox busy")
    assert "1 slots" in second.error and "0.3 s" in second.error
    assert second.exit_code is None and second.stdout == ""
    # Gave up at the 0.3 s queue timeout, not when the 1.5 s run freed its slot.
    assert 0.25 <= waited < 1.4
    assert (await asyncio.wait_for(first, 10)).stdout == "done\n"


async def test_excess_run_waits_for_a_free_slot(single_slot):
    patient = make_sandbox(single_slot.backend_name, replace(single_slot.settings, queue_timeout_seconds=5.0, sandbox_uid_base=61200))
    try:
        first = asyncio.ensure_future(patient.run(SLOW % 0.8))
        await async_wait_until(lambda: patient.running() == 1, what="the first run to take the only slot")
        # A per-call wait can only shorten the configured one.
        hurried = await asyncio.wait_for(patient.run("print('x')", queue_timeout_seconds=0.2), 10)
        assert hurried.error and hurried.error.startswith("sandbox busy")
        started = time.monotonic()
        second = await asyncio.wait_for(patient.run("print('second')"), 10)
        assert second.stdout == "second\n" and second.error is None
        assert time.monotonic() - started >= 0.3  # it queued behind the first run
        assert (await asyncio.wait_for(first, 10)).stdout == "done\n"
    finally:
        discard(patient)


@pytest.mark.parametrize("name", list(BACKENDS))
async def test_never_more_than_max_concurrent(name):
    sandbox = make_sandbox(name, replace(TEST_SETTINGS, max_concurrent=2, sandbox_uid_base=61300))
    try:
        peak = 0

        async def watch():
            nonlocal peak
            while True:
                peak = max(peak, sandbox.running())
                await asyncio.sleep(0.01)

        watcher = asyncio.ensure_future(watch())
        started = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(*(sandbox.run(SLOW % 0.5) for _ in range(5))), 15)
        elapsed = time.monotonic() - started
        watcher.cancel()
        assert [r.stdout for r in results] == ["done\n"] * 5
        assert peak == 2
        assert elapsed >= 1.5  # 5 runs of 0.5 s, two at a time: three rounds
        assert pool_processes(sandbox.settings) == []
    finally:
        discard(sandbox)
