"""The HTTP side of agent runs: wire contract, keep-alives, errors, model listing, client disconnects."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import openai
import pytest
from agent_helpers import (
    USER,
    assert_stream_contract,
    content_of,
    offered_tool_names,
    stream_raw,
    streamed_steps,
)
from agent_test_tools import TestTools

from fakes.server import RunningServer
from fakes.sse import data_events, parse_sse
from fakes.upstream import FakeUpstream, Reply

FINAL = "All done now."


def assert_error_response(response: httpx.Response, status: int, *, code: Any = ..., param: Any = ..., type: Any = ...) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.headers.get("x-request-id")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"]
    if code is not ...:
        assert err["code"] == code, err
    if param is not ...:
        assert err["param"] == param, err
    if type is not ...:
        assert err["type"] == type, err
    return err


# ---------------------------------------------------------------- keep-alive


def test_keepalive_comments_during_a_long_tool(agent_relay_factory: Callable[..., tuple[RunningServer, TestTools]], fake: FakeUpstream) -> None:
    server, tools = agent_relay_factory(agent={"keepalive_seconds": 0.5})
    script = lambda: fake.enqueue(Reply(tool_calls=[{"name": "slow", "arguments": {"seconds": 1.6}}]), Reply(content=FINAL))  # noqa: E731
    script()
    with httpx.Client(base_url=server.root_url, timeout=60) as http:
        response, raw = stream_raw(http, {"model": "agent/fake-model", "messages": USER})
    assert response.status_code == 200
    comments = [c for e in parse_sse(raw) for c in e.comments]
    assert comments.count("keep-alive") >= 1, raw[:600]
    assert set(comments) == {"keep-alive"}
    assert b"\n: keep-alive\n\n" in raw or raw.startswith(b": keep-alive\n\n")
    assert b"event:" not in raw
    chunks = assert_stream_contract(raw, model="agent/fake-model", include_usage=False, finish_reason="stop")
    assert content_of(chunks) == FINAL
    # The OpenAI SDK reads such a stream without trouble.
    script()
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=60) as client:
        stream = client.chat.completions.create(model="agent/fake-model", messages=USER, stream=True)
        parsed = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) == FINAL
    assert parsed[-1].choices[0].finish_reason == "stop"
    assert len(tools.slow.of("end")) == 2


# ---------------------------------------------------------------- errors


def test_upstream_error_after_a_keepalive_is_an_error_event(agent_relay_factory: Callable[..., tuple[RunningServer, TestTools]], fake: FakeUpstream) -> None:
    server, _ = agent_relay_factory(agent={"keepalive_seconds": 0.5})
    fake.enqueue(Reply(status=429, delay=1.3))  # slower than one keep-alive interval
    with httpx.Client(base_url=server.root_url, timeout=60) as http:
        response, raw = stream_raw(http, {"model": "agent/fake-model", "messages": USER})
    if response.status_code == 200:
        events = data_events(raw)
        assert events and not any(e.is_done for e in events)
        assert events[-1].json["error"]["type"] == "rate_limit_error", raw
    else:
        assert_error_response(httpx.Response(response.status_code, headers=response.headers, content=raw), 429)


def test_upstream_429_on_first_call(oai: openai.OpenAI, ahttp: httpx.Client, fake: FakeUpstream) -> None:
    headers = {"retry-after": "7", "retry-after-ms": "7000", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "7s"}
    fake.enqueue(Reply(status=429, headers=headers))
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model="agent/fake-model", messages=USER)
    err = info.value
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "7"
    assert err.response.headers["retry-after-ms"] == "7000"
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.code == "rate_limit_exceeded"
    # Streaming: still a real HTTP 429, not a 200 stream with an error inside.
    fake.enqueue(Reply(status=429, headers=headers))
    response, raw = stream_raw(ahttp, {"model": "agent/fake-model", "messages": USER})
    assert_error_response(httpx.Response(response.status_code, headers=response.headers, content=raw), 429, type="rate_limit_error")
    assert response.headers["retry-after"] == "7"


def test_upstream_429_without_retry_headers_still_gets_both(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(status=429))
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model="agent/fake-model", messages=USER)
    headers = info.value.response.headers
    assert float(headers["retry-after"]) >= 0
    assert float(headers["retry-after-ms"]) >= 0  # design section 2: 429 carries retry-after and retry-after-ms


@pytest.mark.parametrize("failure", ["status", "reset"])
def test_upstream_failure_after_steps_streamed(oai: openai.OpenAI, ahttp: httpx.Client, fake: FakeUpstream, failure: str) -> None:
    def script() -> None:
        broken = Reply(status=503) if failure == "status" else Reply(content="this answer breaks off half way through", break_after=4)
        fake.enqueue(Reply(tool_calls=[{"name": "current_time", "arguments": {}}]), broken)

    script()
    response, raw = stream_raw(ahttp, {"model": "agent/fake-model", "messages": USER})
    assert response.status_code == 200
    events = data_events(raw)
    assert not any(e.is_done for e in events), "no [DONE] after an error"
    payloads = [e.json for e in events]
    errors = [p for p in payloads if "error" in p]
    assert len(errors) == 1 and payloads[-1] is errors[0], payloads[-2:]
    err = errors[0]["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    steps = streamed_steps(payloads[:-1])
    assert [s["type"] for s in steps] == ["tool_call", "tool_result"]
    assert all(p["choices"][0]["finish_reason"] is None for p in payloads[:-1])
    # The SDK surfaces it as an APIError.
    script()
    with pytest.raises(openai.APIError):
        for _ in oai.chat.completions.create(model="agent/fake-model", messages=USER, stream=True):
            pass


def test_upstream_failure_after_steps_non_streaming(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=[{"name": "current_time", "arguments": {}}]), Reply(status=503))
    with pytest.raises(openai.APIStatusError) as info:
        oai.chat.completions.create(model="agent/fake-model", messages=USER)
    assert info.value.status_code == 503


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_agent_model(ahttp: httpx.Client, oai: openai.OpenAI, fake: FakeUpstream, stream: bool) -> None:
    response = ahttp.post("/v1/chat/completions", json={"model": "agent/nope", "messages": USER, "stream": stream})
    assert_error_response(response, 404, code="model_not_found", param="model")
    assert "agent/nope" in response.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="agent/nope", messages=USER, stream=stream)
    assert fake.chat_requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_n_greater_than_one_is_refused(ahttp: httpx.Client, fake: FakeUpstream, stream: bool) -> None:
    response = ahttp.post("/v1/chat/completions", json={"model": "agent/fake-model", "messages": USER, "n": 2, "stream": stream})
    assert_error_response(response, 400, param="n", type="invalid_request_error")
    assert fake.chat_requests == []


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"max_steps": "many"}, "agent_options"),
        ({"bogus": 1}, "agent_options"),
        ("fast", "agent_options"),
        ({"max_wall_seconds": [1]}, "agent_options"),
        ({"builtin_tools": ["no_such_tool"]}, "agent_options.builtin_tools"),
        ({"tool_choice": "no_such_tool"}, "agent_options.tool_choice"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_invalid_agent_options(ahttp: httpx.Client, oai: openai.OpenAI, fake: FakeUpstream, options: Any, param: str, stream: bool) -> None:
    response = ahttp.post("/v1/chat/completions", json={"model": "agent/fake-model", "messages": USER, "agent_options": options, "stream": stream})
    assert_error_response(response, 400, param=param, type="invalid_request_error")
    assert fake.chat_requests == []
    if not stream:
        with pytest.raises(openai.BadRequestError) as info:
            oai.chat.completions.create(model="agent/fake-model", messages=USER, extra_body={"agent_options": options})
        assert info.value.param == param  # type: ignore[attr-defined]


def test_agent_options_builtin_tools_restricts_the_offer(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content=FINAL))
    oai.chat.completions.create(model="agent/fake-model", messages=USER, extra_body={"agent_options": {"builtin_tools": ["echo"]}})
    assert offered_tool_names(fake.last_body) == ["echo"]
    fake.enqueue(Reply(content=FINAL))
    oai.chat.completions.create(model="agent/fake-model", messages=USER, extra_body={"agent_options": {"builtin_tools": []}})
    assert "tools" not in fake.last_body


# ---------------------------------------------------------------- models


def test_models_list_has_agent_ids(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    plain = [i for i in ids if not i.startswith("agent/")]
    assert {"fake-model", "fake-tools", "org/fake-slash"} <= set(plain)
    for model_id in plain:
        assert f"agent/{model_id}" in ids, (model_id, ids)
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("model_id", ["agent/fake-model", "agent/org/fake-slash"])
def test_retrieve_agent_model(http: httpx.Client, client: openai.OpenAI, model_id: str) -> None:
    for path in (f"/v1/models/{model_id}", f"/v1/models/{quote(model_id, safe='')}"):
        response = http.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["id"] == model_id and response.json()["object"] == "model"
    assert client.models.retrieve(model_id).id == model_id
    missing = http.get("/v1/models/agent%2Fnope")
    assert_error_response(missing, 404, code="model_not_found")


# ---------------------------------------------------------------- client disconnect


def test_streaming_client_disconnect_cancels_the_run(ahttp: httpx.Client, fake: FakeUpstream, test_tools: TestTools) -> None:
    fake.enqueue(Reply(tool_calls=[{"name": "slow", "arguments": {"seconds": 1.5}}]), Reply(content="nobody reads this"))
    with ahttp.stream("POST", "/v1/chat/completions", json={"model": "agent/fake-model", "messages": USER, "stream": True}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if '"agent_steps_delta"' in line:
                break  # the tool has started (or is about to): hang up
    (start,) = test_tools.slow.wait_for("start", timeout=5)
    test_tools.slow.wait_for("cancelled", timeout=5)
    time.sleep(max(0.0, start.at + 1.5 + 0.5 - time.monotonic()))  # past the moment the tool would have finished
    assert not test_tools.slow.of("end")
    assert len(fake.chat_requests) == 1, "the run went on after the client left"


def test_non_streaming_client_disconnect_cancels_the_run(agent_relay: RunningServer, fake: FakeUpstream, test_tools: TestTools) -> None:
    fake.enqueue(Reply(tool_calls=[{"name": "slow", "arguments": {"seconds": 1.5}}]), Reply(content="nobody reads this"))
    with httpx.Client(base_url=agent_relay.root_url, timeout=httpx.Timeout(60, read=1.0)) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json={"model": "agent/fake-model", "messages": USER})
    (start,) = test_tools.slow.wait_for("start", timeout=5)
    test_tools.slow.wait_for("cancelled", timeout=5)
    time.sleep(max(0.0, start.at + 1.5 + 0.5 - time.monotonic()))
    assert not test_tools.slow.of("end")
    assert len(fake.chat_requests) == 1


def test_upstream_reasoning_is_passed_on_as_reasoning(oai: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content=FINAL, reasoning_content="thinking about the clock"))
    completion = oai.chat.completions.create(model="agent/fake-model", messages=USER)
    message = completion.choices[0].message
    assert message.content == FINAL
    assert "thinking about the clock" in (message.model_extra or {}).get("reasoning_content", "")
