"""Percentiles estimated from a latency histogram's buckets (what ``/admin/usage/metrics`` reports
when the usage ledger is off): cases worked by hand, then properties over any histogram."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolrelay.app.metrics import histogram_quantile

BOUNDS = (0.1, 0.5, 1.0)


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        ([0, 0, 0, 0], 0.5, None),  # nothing observed
        ([4, 0, 0, 0], 0.5, 0.05),  # halfway into the first bucket, from 0
        ([4, 0, 0, 0], 1.0, 0.1),
        ([0, 10, 0, 0], 0.5, 0.3),  # halfway from 0.1 to 0.5
        ([5, 5, 0, 0], 0.5, 0.1),  # the median is the first bucket's top
        ([5, 5, 0, 0], 0.9, 0.1 + 0.4 * 4 / 5),
        ([0, 0, 2, 2], 0.5, 1.0),  # rank 2 ends the third bucket
        ([0, 0, 0, 3], 0.99, 1.0),  # in the unbounded bucket: the highest bound
        ([1, 0, 0, 0], 0.0, 0.0),
    ],
)
def test_cases(counts: list[int], q: float, expected: float | None) -> None:
    result = histogram_quantile(counts, q, BOUNDS)
    assert result == (None if expected is None else pytest.approx(expected))


histograms = st.lists(st.integers(0, 1000), min_size=len(BOUNDS) + 1, max_size=len(BOUNDS) + 1).filter(any)
quantiles = st.floats(0.0, 1.0)


@given(histograms, quantiles)
def test_within_the_buckets_range(counts: list[int], q: float) -> None:
    value = histogram_quantile(counts, q, BOUNDS)
    assert value is not None and 0.0 <= value <= BOUNDS[-1]


@given(histograms, quantiles, quantiles)
def test_never_decreases_with_q(counts: list[int], a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert histogram_quantile(counts, low, BOUNDS) <= histogram_quantile(counts, high, BOUNDS)  # type: ignore[operator]


@given(histograms, quantiles)
def test_falls_in_the_bucket_holding_the_rank(counts: list[int], q: float) -> None:
    value = histogram_quantile(counts, q, BOUNDS)
    assert value is not None
    # At least q of the observations are at or below the bucket top above the value.
    top = next((bound for bound in BOUNDS if value <= bound), BOUNDS[-1])
    below = sum(count for count, bound in zip(counts, BOUNDS, strict=False) if bound <= top)
    assert below >= q * sum(counts) or value == BOUNDS[-1]
