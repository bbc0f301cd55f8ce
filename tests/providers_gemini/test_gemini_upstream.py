"""A Gemini upstream's own endpoints: model discovery, /ready, and the key never in a URL."""

from __future__ import annotations

from pathlib import Path

import httpx

from fakes.clients import sdk
from fakes.gemini import FakeGemini
from fakes.relays import RelayPool

from .conftest import gemini_tree


def test_discovered_models_are_served_and_ready_probes_gemini(gemini: FakeGemini, tmp_path: Path) -> None:
    gemini.models = ["gemini-2.5-flash", "gemini-2.5-pro"]
    with RelayPool(tmp_path) as pool:
        relay = pool.start(gemini_tree(gemini, pool.data_dir(), models=[], discover_models=True))
        with sdk(relay) as client:
            served = {m.id for m in client.models.list()}
            assert {"gemini-2.5-flash", "gemini-2.5-pro"} <= served
            assert client.chat.completions.create(model="gemini-2.5-pro", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content
        ready = httpx.get(relay.url("/ready"), timeout=10).json()
        assert ready["status"] == "ready"
        assert [u["name"] for u in ready["upstreams"]] == ["gem"]
    assert gemini.last.model == "gemini-2.5-pro"


def test_a_wrong_key_makes_ready_say_so(gemini: FakeGemini, tmp_path: Path) -> None:
    with RelayPool(tmp_path) as pool:
        relay = pool.start(gemini_tree(gemini, pool.data_dir(), api_key="gm-wrong"))
        response = httpx.get(relay.url("/ready"), timeout=10)
        assert response.status_code == 503
        assert response.json()["upstreams"][0]["ok"] is False
