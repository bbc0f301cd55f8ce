"""GET /metrics: Prometheus counters for requests, latency, tokens and tool calls."""

from __future__ import annotations

import re
from typing import Any

import httpx
import openai

from fakes.upstream import FakeUpstream, Reply

from .helpers import USER


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample, or None when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_requests_tokens_and_tool_calls(relay_factory: Any, fake: FakeUpstream) -> None:
    relay = relay_factory()
    with httpx.Client(base_url=relay.root_url, timeout=30) as http, openai.OpenAI(base_url=relay.base_url, api_key="sk", max_retries=0) as client:
        before = http.get("/metrics")
        assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
        fake.enqueue(Reply(content="one two three", usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}))
        client.chat.completions.create(model="fake-model", messages=USER)
        assert http.post("/v1/chat/completions", json={"model": "no-such-model-xyz", "messages": USER}).status_code == 404
        fake.enqueue(
            Reply(tool_calls=[{"name": "current_time", "arguments": {}}], usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
            Reply(content="done", usage={"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}),
        )
        client.chat.completions.create(model="agent/fake-model", messages=USER)
        # The other model-serving endpoints count too, each under its own path and mode.
        fake.enqueue(Reply(content="four five", usage={"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}))
        client.responses.create(model="fake-model", input="hi")
        client.embeddings.create(model="fake-model", input="hi")
        text = http.get("/metrics").text
    assert sample(text, "toolrelay_requests_total", mode="proxy", model="fake-model", status="200") == 1
    assert sample(text, "toolrelay_requests_total", mode="agent", model="agent/fake-model", status="200") == 1
    assert sample(text, "toolrelay_requests_total", path="/v1/responses", mode="responses", model="fake-model", status="200") == 1
    assert sample(text, "toolrelay_requests_total", path="/v1/embeddings", mode="embeddings", model="fake-model", status="200") == 1
    # An unknown model id never becomes a label of its own.
    assert "no-such-model-xyz" not in text
    assert sample(text, "toolrelay_requests_total", model="other", status="404") == 1
    prompt_tokens = sample(text, "toolrelay_tokens_total", model="fake-model", kind="prompt")
    assert prompt_tokens is not None and prompt_tokens >= 7 + 4
    assert sample(text, "toolrelay_tokens_total", model="agent/fake-model", kind="prompt") == 14
    assert sample(text, "toolrelay_tokens_total", model="agent/fake-model", kind="completion") == 3
    assert sample(text, "toolrelay_tool_calls_total", tool="current_time", status="ok") == 1
    assert sample(text, "toolrelay_request_duration_seconds_count", mode="proxy") == 1
    assert sample(text, "toolrelay_request_duration_seconds_bucket", mode="proxy", le="+Inf") == 1


def test_metrics_need_the_admin_key_when_auth_is_on(relay_factory: Any) -> None:
    admin = "admin-key-for-metrics-0123456789"
    relay = relay_factory(auth={"admin_key": admin})
    with httpx.Client(base_url=relay.root_url, timeout=30) as http:
        denied = http.get("/metrics")
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        assert http.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        allowed = http.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
        assert allowed.status_code == 200 and "toolrelay_start_time_seconds" in allowed.text
