"""Issue 10 item 3: token counting blocked the event loop on untrusted input.

Before: one 10-million-character word was encoded with tiktoken on the event
loop (for the gate's TPM/cost estimate, again for the context check and again
for the usage estimate) and stalled every other request for 13 s, also for a
key already over its limit. Now counting runs in worker threads, text beyond
``token_count_exact_chars`` is bounded by its UTF-8 length, the prompt is
counted once per request, and a key over its request limit is refused
before anything is encoded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.admin import Admin
from fakes.relays import auth_tree
from fakes.server import RunningServer, load_toml_settings, run_toolrelay
from fakes.upstream import FakeUpstream
from security.test_sec_schemas import HealthProbe

MiB = 1024 * 1024
WORD = "a" * 10_000_000


def _start(fake_upstream: FakeUpstream, tmp_path: Path, **server: Any) -> RunningServer:
    # fake-model is priced (auth_tree's PRICING) and auth_tree sets a per-request cost cap.
    tree = auth_tree(fake_upstream, tmp_path / "data", server={"max_body_bytes": 32 * MiB, **server})
    return run_toolrelay(load_toml_settings(tmp_path / "toolrelay.toml", tree))


@pytest.fixture
def token_relay(fake_upstream: FakeUpstream, tmp_path: Path) -> Any:
    server = _start(fake_upstream, tmp_path)
    yield server
    server.stop()


def _key(relay: RunningServer, **spec: Any) -> str:
    admin = Admin(relay)
    try:
        return admin.create_key("tokens", **spec)[1]
    finally:
        admin.close()


def test_ten_million_character_word_does_not_stall_the_server(token_relay: RunningServer, fake: FakeUpstream) -> None:
    key = _key(token_relay, tpm=100_000_000)
    body = {"model": "fake-model", "messages": [{"role": "user", "content": WORD}], "max_tokens": 5}
    with (
        httpx.Client(base_url=token_relay.root_url, timeout=120.0, headers={"authorization": f"Bearer {key}"}) as http,
        HealthProbe(token_relay.root_url) as probe,
    ):
        started = time.monotonic()
        response = http.post("/v1/chat/completions", json=body)
        elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text[:500]
    # Before: 13 s with /health stalled as long. Wide bounds: the VM is noisy.
    assert elapsed < 10, elapsed
    assert probe.latencies and max(probe.latencies) < 2, probe.latencies
    tokens = token_relay.services.tokens
    # Bounded work: at most token_count_exact_chars were encoded for this prompt, once
    # (admission; the fake upstream reports usage, so no end-of-request estimate).
    assert tokens.encoded_chars <= tokens.exact_chars, tokens.encoded_chars


def test_word_within_exact_limit_is_counted_off_the_loop(fake_upstream: FakeUpstream, tmp_path: Path, fake: FakeUpstream) -> None:
    """With the bound lifted, encoding the whole word takes seconds, in a worker thread."""
    server = _start(fake_upstream, tmp_path, token_count_exact_chars=20_000_000)
    try:
        key = _key(server, tpm=100_000_000)
        body = {"model": "fake-model", "messages": [{"role": "user", "content": WORD}], "max_tokens": 5}
        with httpx.Client(base_url=server.root_url, timeout=120.0, headers={"authorization": f"Bearer {key}"}) as http, HealthProbe(server.root_url) as probe:
            response = http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text[:500]
        assert max(probe.latencies) < 2, probe.latencies
        encoded = server.services.tokens.encoded_chars
        assert len(WORD) <= encoded < len(WORD) + 100, encoded  # counted once (plus "user"), not per check
    finally:
        server.stop()


def test_key_over_its_rpm_is_refused_without_counting(token_relay: RunningServer, fake: FakeUpstream) -> None:
    key = _key(token_relay, rpm=1, tpm=100_000_000)
    tokens = token_relay.services.tokens
    with httpx.Client(base_url=token_relay.root_url, timeout=120.0, headers={"authorization": f"Bearer {key}"}) as http:
        first = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
        assert first.status_code == 200, first.text
        before = tokens.encoded_chars
        started = time.monotonic()
        response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": [{"role": "user", "content": WORD}]})
        elapsed = time.monotonic() - started
    assert response.status_code == 429, response.text[:500]
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert tokens.encoded_chars == before  # nothing was encoded for the refused request
    assert elapsed < 5, elapsed
    assert len(fake.chat_requests) == 1


def test_key_over_its_rpm_is_refused_without_counting_with_redis(fake_upstream: FakeUpstream, tmp_path: Path, redis_url: str, fake: FakeUpstream) -> None:
    """The same with limits shared through Redis (the backend's read-only peek script)."""
    tree = auth_tree(fake_upstream, tmp_path / "data", server={"max_body_bytes": 32 * MiB}, redis={"url": redis_url, "prefix": "sec-tokens"})
    server = run_toolrelay(load_toml_settings(tmp_path / "toolrelay.toml", tree))
    try:
        key = _key(server, rpm=1, tpm=100_000_000)
        tokens = server.services.tokens
        with httpx.Client(base_url=server.root_url, timeout=120.0, headers={"authorization": f"Bearer {key}"}) as http:
            assert http.post("/v1/chat/completions", json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
            before = tokens.encoded_chars
            response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": [{"role": "user", "content": WORD}]})
        assert response.status_code == 429, response.text[:500]
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert tokens.encoded_chars == before
    finally:
        server.stop()
