"""The two spellings of agent ids: one reader, one canonical id, one allow-list answer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolrelay.app.auth.access import ModelAccess
from toolrelay.app.model_ids import canonical_model_id, split_agent_model


@pytest.mark.parametrize(
    ("model", "split", "canonical"),
    [
        ("agent/gpt-4o", (True, "gpt-4o"), "agent/gpt-4o"),
        ("agent:gpt-4o", (True, "gpt-4o"), "agent/gpt-4o"),
        ("agent:org/model", (True, "org/model"), "agent/org/model"),
        ("agent/llama3:8b", (True, "llama3:8b"), "agent/llama3:8b"),
        ("agent:", (True, ""), "agent/"),
        ("gpt-4o", (False, "gpt-4o"), "gpt-4o"),
        ("llama3:8b", (False, "llama3:8b"), "llama3:8b"),
        ("agents:x", (False, "agents:x"), "agents:x"),
        ("Agent:x", (False, "Agent:x"), "Agent:x"),  # ids are case-sensitive, as upstreams' are
        ("agent", (False, "agent"), "agent"),
        ("", (False, ""), ""),
    ],
)
def test_split_and_canonical(model: str, split: tuple[bool, str], canonical: str) -> None:
    assert split_agent_model(model) == split
    assert canonical_model_id(model) == canonical


@given(st.text())
def test_both_spellings_name_the_same_model(base: str) -> None:
    slash, colon = "agent/" + base, "agent:" + base
    assert split_agent_model(slash) == split_agent_model(colon) == (True, base)
    assert canonical_model_id(colon) == canonical_model_id(slash) == slash
    assert canonical_model_id(canonical_model_id(colon)) == slash


@pytest.mark.parametrize(
    ("patterns", "allowed", "refused"),
    [
        (["agent/*"], ["agent/x", "agent:x", "agent:org/x"], ["x", "agentx"]),
        (["agent:*"], ["agent/x", "agent:x"], ["x"]),
        (["agent/x"], ["agent/x", "agent:x"], ["agent/y", "agent:y", "x"]),
        (["agent:x"], ["agent/x", "agent:x"], ["agent:y", "x"]),
        (["x"], ["x"], ["agent/x", "agent:x"]),
        (["*"], ["x", "agent:x"], []),
    ],
)
def test_allow_lists_read_both_spellings_as_one(patterns: list[str], allowed: list[str], refused: list[str]) -> None:
    access = ModelAccess(patterns)
    for _ in range(2):  # the second round answers from the cache
        assert [m for m in allowed if not access.allows(m)] == []
        assert [m for m in refused if access.allows(m)] == []
