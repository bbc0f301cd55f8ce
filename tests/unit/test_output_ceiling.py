"""The output-token ceiling on a request body (app/output_ceiling.py): table-driven cases and properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolrelay.app.output_ceiling import apply_output_ceiling, ceiling_field, output_limit


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        ({}, "max_completion_tokens", {"max_completion_tokens": 100}),
        ({}, "max_tokens", {"max_tokens": 100}),
        ({"max_tokens": 500}, "max_completion_tokens", {"max_tokens": 100}),
        ({"max_tokens": 20}, "max_completion_tokens", {"max_tokens": 20}),
        ({"max_completion_tokens": 101}, "max_tokens", {"max_completion_tokens": 100}),
        ({"max_completion_tokens": 300, "max_tokens": 50}, "max_tokens", {"max_completion_tokens": 100, "max_tokens": 50}),
        ({"max_tokens": None}, "max_completion_tokens", {"max_tokens": None, "max_completion_tokens": 100}),
        ({"max_tokens": 0}, "max_completion_tokens", {"max_tokens": 0}),  # embeddings' view: generates nothing
        ({"max_tokens": True}, "max_completion_tokens", {"max_tokens": True}),  # not a count: validation's to refuse
    ],
)
def test_apply_output_ceiling(body: dict[str, Any], field: str, expected: dict[str, Any]) -> None:
    apply_output_ceiling(body, 100, field)
    assert body == expected


def test_the_field_follows_the_upstream_kind() -> None:
    assert [ceiling_field(kind) for kind in ("openai", "anthropic", "gemini", "local")] == ["max_completion_tokens"] * 3 + ["max_tokens"]


@given(
    ceiling=st.integers(1, 10**6),
    asked=st.dictionaries(st.sampled_from(["max_tokens", "max_completion_tokens"]), st.integers(1, 10**7)),
    field=st.sampled_from(["max_tokens", "max_completion_tokens"]),
)
def test_the_limit_after_the_ceiling_is_never_above_it_nor_above_the_request(ceiling: int, asked: dict[str, int], field: str) -> None:
    body: dict[str, Any] = dict(asked)
    apply_output_ceiling(body, ceiling, field)
    limit = output_limit(body)
    assert limit is not None and limit <= ceiling
    wanted = output_limit(asked)
    if wanted is not None:
        assert limit == min(wanted, ceiling)
    assert all(body[name] == min(value, ceiling) for name, value in asked.items())
