"""``agent:<model>``, the spelling of agent ids without ``/``.

The OpenAI Agents SDK's default model provider reads ``vendor/model`` as "route
to vendor" and refuses ``agent/fake-model`` before sending anything; LiteLLM
does the same. ``agent:<model>`` is the same model as ``agent/<model>`` for
routing, access control, limits, the ledger and metrics; answers echo the
spelling the client sent.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import agents
import httpx
import openai
import pytest
from agent_helpers import USER, assert_stream_contract, content_of, stream_raw, streamed_steps
from test_agent_sdk_streams import node_available, node_stream

from fakes.admin import Admin
from fakes.clients import rest, sdk
from fakes.relays import auth_tree, start_relay
from fakes.server import RunningServer
from fakes.upstream import FakeUpstream, Reply

SPELLINGS = ("agent/fake-model", "agent:fake-model")
ECHO_CALL = {"id": "call_echo_1", "name": "echo", "arguments": {"text": "hi"}}
FINAL = "The echo said hi."

# Values that differ between any two runs (ids, clocks), blanked before comparing.
_VOLATILE_KEYS = frozenset({"id", "created", "model", "duration_ms", "elapsed_ms", "started_at", "ended_at", "system_fingerprint"})


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<volatile>" if k in _VOLATILE_KEYS else _stable(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _script(fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[ECHO_CALL]), Reply(content=FINAL))


def _upstream_bodies(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [r.body for r in fake.chat_requests]


# ---------------------------------------------------------------- chat completions


def test_non_streamed_agent_colon_runs_exactly_like_agent_slash(ahttp: httpx.Client, fake: FakeUpstream, test_tools: Any) -> None:
    answers: dict[str, dict[str, Any]] = {}
    upstream: dict[str, list[dict[str, Any]]] = {}
    for model in SPELLINGS:
        fake.reset()
        _script(fake)
        response = ahttp.post("/v1/chat/completions", json={"model": model, "messages": USER})
        assert response.status_code == 200, response.text
        answers[model] = response.json()
        upstream[model] = _upstream_bodies(fake)
    slash, colon = (answers[m] for m in SPELLINGS)
    assert slash["model"] == "agent/fake-model" and colon["model"] == "agent:fake-model"  # echoes the client
    assert colon["choices"][0]["message"]["content"] == FINAL
    assert _stable(colon) == _stable(slash)
    # The loop ran the built-in tool and called the upstream model by its base name, twice, the same way.
    assert len(upstream["agent:fake-model"]) == 2
    assert {b["model"] for b in upstream["agent:fake-model"]} == {"fake-model"}
    assert _stable(upstream["agent:fake-model"]) == _stable(upstream["agent/fake-model"])


def test_streamed_agent_colon_runs_exactly_like_agent_slash(ahttp: httpx.Client, fake: FakeUpstream, test_tools: Any) -> None:
    chunks: dict[str, list[dict[str, Any]]] = {}
    for model in SPELLINGS:
        fake.reset()
        _script(fake)
        response, raw = stream_raw(ahttp, {"model": model, "messages": USER, "stream_options": {"include_usage": True}})
        assert response.status_code == 200, raw[:500]
        chunks[model] = assert_stream_contract(raw, model=model, include_usage=True, finish_reason="stop")
    slash, colon = (chunks[m] for m in SPELLINGS)
    assert content_of(colon) == FINAL
    assert [s["type"] for s in streamed_steps(colon)] == [s["type"] for s in streamed_steps(slash)]
    assert _stable(colon) == _stable(slash)


def test_sdk_client_with_agent_colon(oai: openai.OpenAI, fake: FakeUpstream, test_tools: Any) -> None:
    _script(fake)
    answer = oai.chat.completions.create(model="agent:fake-model", messages=USER)  # type: ignore[arg-type]
    assert answer.model == "agent:fake-model" and answer.choices[0].message.content == FINAL
    _script(fake)
    with oai.chat.completions.stream(model="agent:fake-model", messages=USER) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    assert final.model == "agent:fake-model" and final.choices[0].message.content == FINAL


def test_node_sdk_with_agent_colon(agent_relay: RunningServer, fake: FakeUpstream, test_tools: Any) -> None:
    node = node_available()
    _script(fake)
    result = node_stream(node, agent_relay, {"model": "agent:fake-model", "messages": USER})
    assert result["message"]["content"] == FINAL and result["finish_reason"] == "stop"
    assert {b["model"] for b in _upstream_bodies(fake)} == {"fake-model"}


@pytest.mark.parametrize("model", ["agent:", "agent:no-such-model", "agent:agent/fake-model", "agent:agent:fake-model"])
def test_agent_colon_of_an_unknown_model_is_404(ahttp: httpx.Client, fake: FakeUpstream, model: str) -> None:
    for stream in (False, True):
        response = ahttp.post("/v1/chat/completions", json={"model": model, "messages": USER, "stream": stream})
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "model_not_found"
    assert fake.chat_requests == []


# ---------------------------------------------------------------- /v1/models


def test_models_list_agent_ids_once_and_retrieve_takes_both_spellings(ahttp: httpx.Client, oai: openai.OpenAI) -> None:
    ids = [m["id"] for m in ahttp.get("/v1/models").json()["data"]]
    assert "agent/fake-model" in ids and not any(i.startswith("agent:") for i in ids)
    for model_id in SPELLINGS:
        for path in (f"/v1/models/{model_id}", f"/v1/models/{model_id.replace(':', '%3A').replace('/', '%2F')}"):
            response = ahttp.get(path)
            assert response.status_code == 200, (path, response.text)
            assert response.json() == {"id": model_id, "object": "model", "created": response.json()["created"], "owned_by": "toolrelay-agent"}
        assert oai.models.retrieve(model_id).id == model_id
    assert ahttp.get("/v1/models/agent:nope").status_code == 404


# ---------------------------------------------------------------- keys, ledger, metrics


@pytest.fixture(scope="module")
def keyed_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root: Path = tmp_path_factory.mktemp("spelling-auth")
    with start_relay(root, auth_tree(fake_upstream, root / "data", agent={"builtin_tools": ["current_time"]})) as server:
        yield server


@pytest.fixture
def admin(keyed_relay: RunningServer) -> Iterator[Admin]:
    with Admin(keyed_relay) as helper:
        yield helper


@pytest.mark.parametrize("pattern", ["agent/*", "agent:*", "agent/fake-model", "agent:fake-model"])
def test_an_allow_list_admits_both_spellings_and_the_ledger_books_one(keyed_relay: RunningServer, admin: Admin, fake: FakeUpstream, pattern: str) -> None:
    key_id, key = admin.create_key("spelling", models=[pattern])
    with sdk(keyed_relay, key) as client:
        for model in SPELLINGS:
            fake.enqueue(Reply(content="agent answer"))
            answer = client.chat.completions.create(model=model, messages=USER)  # type: ignore[arg-type]
            assert answer.model == model and answer.choices[0].message.content == "agent answer"
        ids = {m.id for m in client.models.list()}
        assert "agent/fake-model" in ids and all(i.startswith("agent/") for i in ids), ids
        assert client.models.retrieve("agent:fake-model").id == "agent:fake-model"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="fake-model", messages=USER)  # type: ignore[arg-type]
    rows = admin.usage_rows(key_id, count=3)
    assert sorted((r["model"], r["status"]) for r in rows) == [("agent/fake-model", 200), ("agent/fake-model", 200), ("fake-model", 404)]


def test_a_key_for_plain_models_gets_404_for_both_agent_spellings(keyed_relay: RunningServer, admin: Admin, fake: FakeUpstream) -> None:
    _, key = admin.create_key("plain-only", models=["fake-model"])
    with rest(keyed_relay, key) as http:
        for model in SPELLINGS:
            for stream in (False, True):
                response = http.post("/v1/chat/completions", json={"model": model, "messages": USER, "stream": stream})
                assert response.status_code == 404, response.text
                assert response.json()["error"]["code"] == "model_not_found"
            assert http.get(f"/v1/models/{model}").status_code == 404
        assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["fake-model"]
    assert fake.chat_requests == []


def test_metrics_count_both_spellings_as_one_model(relay_factory: Any, fake: FakeUpstream) -> None:
    relay = relay_factory(agent={"builtin_tools": ["current_time"]})
    with rest(relay) as http:
        for model in SPELLINGS:
            fake.enqueue(Reply(content="x", usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}))
            assert http.post("/v1/chat/completions", json={"model": model, "messages": USER}).status_code == 200
        text = http.get("/metrics").text
    assert re.search(r'toolrelay_requests_total\{path="[^"]+",mode="agent",model="agent/fake-model",status="200"\} 2\b', text), text
    assert "agent:fake-model" not in text


# ---------------------------------------------------------------- the OpenAI Agents SDK


@pytest.fixture
def agents_sdk_on(agent_relay: RunningServer) -> Iterator[openai.AsyncOpenAI]:
    """The Agents SDK's process-wide defaults pointed at the relay, restored afterwards."""
    from agents.models import _openai_shared as shared  # the SDK keeps these defaults as module globals

    saved = (shared.get_default_openai_client(), shared.get_use_responses_by_default())
    client = openai.AsyncOpenAI(base_url=agent_relay.base_url, api_key="sk-test", max_retries=0)
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_default_openai_api("chat_completions")  # /v1/responses is another part of issue 12
    agents.set_tracing_disabled(True)  # no trace upload to api.openai.com from a test
    try:
        yield client
    finally:
        shared.set_default_openai_client(saved[0])  # type: ignore[arg-type]  # None was the SDK's own start value
        shared.set_use_responses_by_default(saved[1])


def _weather_agent(model: str, calls: list[str]) -> Any:
    @agents.function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        calls.append(city)
        return f"sunny in {city}"

    return agents.Agent(name="weather", instructions="Answer briefly.", model=model, tools=[get_weather])


def test_agents_sdk_default_provider_runs_agent_colon(agents_sdk_on: openai.AsyncOpenAI, fake: FakeUpstream, test_tools: Any) -> None:
    calls: list[str] = []
    fake.enqueue(Reply(tool_calls=[{"id": "call_w", "name": "get_weather", "arguments": {"city": "Paris"}}]), Reply(content="Sunny in Paris."))
    result = asyncio.run(agents.Runner.run(_weather_agent("agent:fake-model", calls), "Weather in Paris?"))
    assert result.final_output == "Sunny in Paris."
    assert calls == ["Paris"]  # the client's function tool ran in the SDK, between two relay turns
    first, second = _upstream_bodies(fake)
    assert first["model"] == second["model"] == "fake-model"
    assert "get_weather" in [t["function"]["name"] for t in first["tools"]]
    assert any(m.get("role") == "tool" and m.get("content") == "sunny in Paris" for m in second["messages"])


def test_agents_sdk_default_provider_refuses_agent_slash(agents_sdk_on: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    """Why ``agent:`` exists: the SDK's MultiProvider splits ``agent/fake-model`` on ``/`` and knows no provider ``agent``."""
    with pytest.raises(agents.UserError, match="Unknown prefix: agent"):
        asyncio.run(agents.Runner.run(_weather_agent("agent/fake-model", []), "Weather in Paris?"))
    assert fake.chat_requests == []  # refused in the client, before any request
