"""The serving process's collector settings (app/heap.py): start-up objects frozen, young threshold widened, a disabled collector left alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from toolrelay.app.heap import YOUNG_THRESHOLD, settle_after_startup


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def test_startup_objects_are_frozen_and_the_young_threshold_widened(restore_gc: None) -> None:
    gc.set_threshold(700, 10, 10)
    kept = [{"start-up": i} for i in range(1000)]
    await settle_after_startup()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    # Cycles made after start-up are still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1


async def test_a_disabled_threshold_stays_disabled(restore_gc: None) -> None:
    gc.set_threshold(0, 10, 10)
    await settle_after_startup()
    assert gc.get_threshold()[0] == 0
