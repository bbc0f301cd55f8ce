"""The cache's pure parts: what is cacheable, the key, the client's directives, the memory backend's bounds, an entry's round trip."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolrelay.app.accumulate import CompletionAccumulator
from toolrelay.app.cache import MemoryBackend, cacheable, directives, request_key
from toolrelay.app.cache.entry import entry_bytes, replay_events
from toolrelay.app.encoder import BodyCollector
from toolrelay.app.errors import OpenAIError
from toolrelay.app.events import ChoiceDelta, Failure, ResponseMeta, UsageReport

BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def key(payload: dict[str, Any], scope: str = "k1", upstream: str = "fake", model: str = "fake-model") -> str | None:
    return request_key(payload, scope=scope, upstream=upstream, model=model)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"temperature": 0}, True),
        ({"temperature": 0.0}, True),
        ({"seed": 1}, True),
        ({"temperature": 1.2, "seed": 0}, True),
        ({}, False),
        ({"temperature": 0.2}, False),
        ({"temperature": False}, False),
        ({"seed": "1"}, False),
        ({"seed": True}, False),
        ({"temperature": None}, False),
    ],
)
def test_cacheable(payload: dict[str, Any], expected: bool) -> None:
    assert cacheable(payload) is expected


@pytest.mark.parametrize(
    ("header", "read", "write"),
    [
        (None, True, True),
        ("", True, True),
        ("max-age=60", True, True),
        ("no-cache", False, True),
        ("No-Cache, max-age=0", False, True),
        ("no-store", False, False),
        ("no-cache, no-store", False, False),
    ],
)
def test_directives(header: str | None, read: bool, write: bool) -> None:
    wanted = directives(header)
    assert (wanted.read, wanted.write) == (read, write)


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({"stream": True}, True),
        ({"stream_options": {"include_usage": True}}, True),
        ({"user": "u-1"}, True),
        ({"metadata": {"a": "b"}}, True),
        ({"model": "an-alias"}, True),  # the resolved model is keyed, not the client's spelling
        ({"temperature": 0.0}, True),
        ({"max_tokens": 5}, False),
        ({"seed": 3}, False),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, False),
        ({"messages": [{"role": "user", "content": "hi!"}]}, False),
        ({"some_new_parameter": 1}, False),
    ],
)
def test_what_the_key_covers(change: dict[str, Any], same: bool) -> None:
    assert (key({**BASE, **change}) == key(BASE)) is same


def test_a_body_that_cannot_be_keyed_is_not_cached() -> None:
    # The strict parser lets integers beyond 64 bits through; orjson cannot write them.
    assert key({**BASE, "seed": 2**70}) is None


def test_the_key_depends_on_scope_upstream_and_model() -> None:
    assert len({key(BASE), key(BASE, scope="k2"), key(BASE, scope=""), key(BASE, upstream="other"), key(BASE, model="other")}) == 5


@given(st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.none(), max_size=8), st.randoms())
def test_the_key_ignores_key_order(extra: dict[str, Any], rng: random.Random) -> None:
    payload = {**BASE, "nested": dict(extra), **{f"x{k}": v for k, v in extra.items()}}
    items = list(payload.items())
    rng.shuffle(items)
    shuffled = dict(items)
    inner = list(extra.items())
    rng.shuffle(inner)
    shuffled["nested"] = dict(inner)
    assert key(shuffled) == key(payload)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_memory_backend_evicts_the_least_recently_used_past_max_entries() -> None:
    backend = MemoryBackend(ttl_seconds=60, max_entries=2, max_bytes=1000)
    backend.put("a", b"1")
    backend.put("b", b"2")
    assert _run(backend.get("a")) == b"1"  # a is now the most recent
    backend.put("c", b"3")
    assert (_run(backend.get("a")), _run(backend.get("b")), _run(backend.get("c"))) == (b"1", None, b"3")


def test_memory_backend_keeps_under_max_bytes() -> None:
    backend = MemoryBackend(ttl_seconds=60, max_entries=100, max_bytes=10)
    backend.put("a", b"12345")
    backend.put("b", b"12345")
    backend.put("c", b"123")
    assert backend.bytes <= 10 and _run(backend.get("a")) is None and len(backend) == 2
    backend.put("huge", b"x" * 11)  # larger than the whole cache: not stored, nothing evicted
    assert _run(backend.get("huge")) is None and len(backend) == 2
    backend.put("b", b"1")  # replaced: its old size is given back
    assert backend.bytes == 4


def test_memory_backend_expires_entries() -> None:
    now = [0.0]
    backend = MemoryBackend(ttl_seconds=5, max_entries=10, max_bytes=100, clock=lambda: now[0])
    backend.put("a", b"1")
    now[0] = 4.9
    assert _run(backend.get("a")) == b"1"
    now[0] = 5.0
    assert _run(backend.get("a")) is None and backend.bytes == 0


def _accumulated(*events: Any) -> CompletionAccumulator:
    completion = CompletionAccumulator()
    for event in events:
        completion.add(event)
    return completion


def test_an_entry_replays_to_the_same_body() -> None:
    events = [
        ResponseMeta({"system_fingerprint": "fp"}),
        ChoiceDelta(0, {"role": "assistant", "content": "Hel"}),
        ChoiceDelta(0, {"content": "lo"}, finish_reason="stop"),
        ChoiceDelta(1, {"content": "Hi"}, finish_reason="length"),
        UsageReport({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
    ]
    original = BodyCollector()
    for event in events:
        original.add(event)
    entry = entry_bytes(_accumulated(*events), tool_calls=False)
    assert entry is not None
    replayed = BodyCollector()
    for event in replay_events(entry):
        replayed.add(event)
    assert replayed.body(model="m", completion_id="c", created=1) == original.body(model="m", completion_id="c", created=1)


@pytest.mark.parametrize(
    ("events", "tool_calls", "stored"),
    [
        ([ChoiceDelta(0, {"content": "x"}, finish_reason="stop")], False, True),
        ([ChoiceDelta(0, {"content": "x"})], False, False),  # never finished
        ([ChoiceDelta(0, {"content": "x"}), Failure(OpenAIError(502, "cut"))], False, False),
        ([], False, False),
        ([ChoiceDelta(0, {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}, finish_reason="tool_calls")], False, False),
        ([ChoiceDelta(0, {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}, finish_reason="tool_calls")], True, True),
    ],
)
def test_what_is_stored(events: list[Any], tool_calls: bool, stored: bool) -> None:
    assert (entry_bytes(_accumulated(*events), tool_calls=tool_calls) is not None) is stored
