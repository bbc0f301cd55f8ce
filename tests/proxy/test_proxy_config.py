"""Routing and limits that depend on configuration, each on its own relay (``relay_factory``)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from fakes.upstream import FakeUpstream

from .helpers import USER, assert_openai_error


def test_context_window_refuses_before_calling_the_upstream(relay_factory: Any, fake: FakeUpstream) -> None:
    relay = relay_factory(models={"fake-model": {"context_window": 60}})
    with httpx.Client(base_url=relay.root_url, timeout=30) as http:
        long = [{"role": "user", "content": "word " * 200}]
        err = assert_openai_error(
            http.post("/v1/chat/completions", json={"model": "fake-model", "messages": long}), 400, code="context_length_exceeded", param="messages"
        )
        assert "60" in err["message"]
        err = assert_openai_error(
            http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER, "max_tokens": 100}), 400, code="context_length_exceeded"
        )
        assert fake.chat_requests == []
        ok = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER, "max_tokens": 10})
        assert ok.status_code == 200
        # Other models on the same upstream are not limited.
        assert http.post("/v1/chat/completions", json={"model": "fake-tools", "messages": long}).status_code == 200


def test_model_prefix_and_discovery(relay_factory: Any, fake: FakeUpstream) -> None:
    fake.models = ["fake-model", "discovered-model"]
    relay = relay_factory(
        upstream_models=["fake-model"],
        extra_upstreams={"router": {"kind": "openai", "base_url": fake.base_url, "model_prefix": "rt/", "discover_models": True}},
        aliases={"smart": "rt/some-upstream-model"},
    )
    with openai.OpenAI(base_url=relay.base_url, api_key="sk-test", max_retries=0, timeout=30) as client:
        ids = {m.id for m in client.models.list()}
        assert {"fake-model", "discovered-model", "smart"} <= ids
        completion = client.chat.completions.create(model="rt/llama-3-70b", messages=USER)
        assert completion.model == "rt/llama-3-70b"
        assert fake.last_body["model"] == "llama-3-70b"
        completion = client.chat.completions.create(model="smart", messages=USER)
        assert completion.model == "smart"
        assert fake.last_body["model"] == "some-upstream-model"
        client.chat.completions.create(model="discovered-model", messages=USER)
        assert fake.last_body["model"] == "discovered-model"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="rt/", messages=USER)


def test_small_limits(relay_factory: Any, fake: FakeUpstream) -> None:
    relay = relay_factory(server={"max_messages": 3, "max_tools": 1, "max_body_bytes": 2048})
    with httpx.Client(base_url=relay.root_url, timeout=30) as http:
        assert_openai_error(http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER * 4}), 400, param="messages")
        tools = [{"type": "function", "function": {"name": n}} for n in ("a", "b")]
        assert_openai_error(http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER, "tools": tools}), 400, param="tools")
        assert_openai_error(http.post("/v1/chat/completions", json={"model": "fake-model", "messages": [{"role": "user", "content": "x" * 3000}]}), 413)
        assert http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER * 3}).status_code == 200
    assert len(fake.chat_requests) == 1


def test_upstream_key_from_environment_variable_name(relay_factory: Any, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLRELAY_TEST_UPSTREAM_KEY", "sk-from-env")
    relay = relay_factory(
        extra_upstreams={
            "envkey": {
                "kind": "openai",
                "base_url": fake.base_url,
                "api_key_env": "TOOLRELAY_TEST_UPSTREAM_KEY",
                "models": ["env-model"],
                "headers": {"x-org": "acme"},
            }
        }
    )
    with httpx.Client(base_url=relay.root_url, timeout=30) as http:
        assert http.post("/v1/chat/completions", json={"model": "env-model", "messages": USER}).status_code == 200
    headers = fake.last_request.headers
    assert headers["authorization"] == "Bearer sk-from-env"
    assert headers["x-org"] == "acme"
