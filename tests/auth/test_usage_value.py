"""The usage value a handler attaches for release: counts an upstream got wrong become 0, never an error."""

from __future__ import annotations

from typing import Any

import pytest

from toolrelay.app.usage import RequestUsage

CASES: list[tuple[Any, RequestUsage | None]] = [
    (
        {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        RequestUsage(12, 5),
    ),
    (
        {
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 8},
        },
        RequestUsage(12, 5, 8),
    ),
    (
        {"prompt_tokens": 4, "prompt_tokens_details": {"cached_tokens": 9}},
        RequestUsage(4, 0, 4),
    ),  # cached <= prompt
    (
        {"prompt_tokens": "12", "completion_tokens": 5.0},
        RequestUsage(0, 0),
    ),  # not integers
    (
        {"prompt_tokens": True, "completion_tokens": -3},
        RequestUsage(0, 0),
    ),  # a bool, a negative
    ({"prompt_tokens": 3, "prompt_tokens_details": "many"}, RequestUsage(3, 0)),
    ({}, RequestUsage()),
    (5, None),  # not an object: nothing to book
    (None, None),
    ([1, 2], None),
]


@pytest.mark.parametrize(("report", "expected"), CASES)
def test_from_report(report: Any, expected: RequestUsage | None) -> None:
    assert RequestUsage.from_report(report) == expected


def test_estimated_flag_and_total() -> None:
    usage = RequestUsage.from_report({"prompt_tokens": 7, "completion_tokens": 2}, estimated=True)
    assert usage is not None and usage.estimated and usage.total_tokens == 9
