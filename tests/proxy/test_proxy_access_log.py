"""The access log: one line per request with what an operator needs, and never keys or message content."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import openai
import pytest

from fakes.upstream import FakeUpstream, Reply

LINE = re.compile(r"^(?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) (?P<latency>\d+(?:\.\d+)?)ms(?P<rest>.*)$")
CANARY_CONTENT = "CANARY-CONTENT-7f3a9c"
CANARY_KEY = "sk-CANARY-KEY-91b2e4"
CANARY_ARGS = "CANARY-ARGS-55d1"


def access_line(logs: Any, request_id: str) -> re.Match[str]:
    record = logs.wait_for(lambda r: r.name == "toolrelay.access" and f"id={request_id}" in r.rendered)
    assert record.levelno == logging.INFO
    lines = [r for r in logs.for_logger("toolrelay.access") if f"id={request_id}" in r.rendered]
    assert len(lines) == 1, [r.rendered for r in lines]
    match = LINE.match(record.rendered)
    assert match, record.rendered
    return match


def fields(match: re.Match[str]) -> dict[str, str]:
    return dict(part.split("=", 1) for part in match["rest"].split() if "=" in part)


def test_access_line_for_a_completion(http: httpx.Client, fake: FakeUpstream, logs: Any) -> None:
    fake.enqueue(Reply(content="logged answer", usage={"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}))
    response = http.post("/v1/chat/completions", json={"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    match = access_line(logs, response.headers["x-request-id"])
    assert (match["method"], match["path"], match["status"]) == ("POST", "/v1/chat/completions", "200")
    assert float(match["latency"]) >= 0
    f = fields(match)
    assert f["model"] == "gpt-4"
    assert f["mode"] == "proxy"
    assert f["tokens"] == "12+3"


def test_access_line_for_a_stream_is_written_when_it_ends(http: httpx.Client, fake: FakeUpstream, logs: Any) -> None:
    fake.enqueue(Reply(content="streamed answer here", usage={"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}))
    response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert response.status_code == 200
    match = access_line(logs, response.headers["x-request-id"])
    assert match["status"] == "200"
    f = fields(match)
    assert f["model"] == "fake-model"
    assert f["tokens"] == "7+4"  # usage was metered even though the client did not ask for it


def test_access_line_for_errors(http: httpx.Client, fake: FakeUpstream, logs: Any) -> None:
    not_found = http.post("/v1/chat/completions", json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
    bad = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": []})
    unknown = http.get("/nope")
    m = access_line(logs, not_found.headers["x-request-id"])
    # An unknown model id is the client's text, not a model this server routed: not logged (issue 10 item 11).
    assert m["status"] == "404" and fields(m)["error"] == "model_not_found" and "model" not in fields(m)
    m = access_line(logs, bad.headers["x-request-id"])
    assert m["status"] == "400" and "error" in fields(m)
    m = access_line(logs, unknown.headers["x-request-id"])
    assert (m["method"], m["path"], m["status"]) == ("GET", "/nope", "404")


def test_access_line_for_a_broken_stream(http: httpx.Client, fake: FakeUpstream, logs: Any) -> None:
    fake.enqueue(Reply(content="a b c d e f g h", break_after=3))
    response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    m = access_line(logs, response.headers["x-request-id"])
    assert m["status"] == "200"
    assert fields(m)["error"] == "stream_error"


def test_no_keys_or_content_in_any_log(relay: Any, http: httpx.Client, fake: FakeUpstream, logs: Any) -> None:
    headers = {"authorization": f"Bearer {CANARY_KEY}"}
    messages = [{"role": "system", "content": f"system {CANARY_CONTENT}"}, {"role": "user", "content": f"user {CANARY_CONTENT}"}]
    request_ids = []
    # Success, streamed and not, with tool calls carrying canary arguments.
    fake.enqueue(Reply(content=f"answer {CANARY_CONTENT}"))
    fake.enqueue(Reply(tool_calls=[{"name": "lookup", "arguments": {"q": CANARY_ARGS}}]))
    fake.enqueue(Reply(content=f"answer {CANARY_CONTENT}", send_usage=False))
    for extra in ({}, {"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}):
        r = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages, **extra}, headers=headers)
        assert r.status_code == 200
        request_ids.append(r.headers["x-request-id"])
    # Failures of every kind, each with the canaries in the request.
    fake.enqueue(Reply(status=500, error={"error": {"message": "upstream exploded", "type": "server_error", "param": None, "code": None}}))
    fake.enqueue(Reply(content="x y z w", break_after=2))
    fake.enqueue(Reply(raw_body=b"not json"))
    failing = [
        {"model": "fake-model", "messages": messages},
        {"model": "fake-model", "messages": messages, "stream": True},
        {"model": "fake-model", "messages": messages},
        {"model": "no-such-model", "messages": messages},
        {"model": "dead-model", "messages": messages},
        {"model": "fake-model", "messages": messages, "temperature": 9},
        {"model": "fake-model", "messages": [{"role": "robot", "content": CANARY_CONTENT}]},
        {"model": "fake-model", "messages": messages, "seed": 2**70},
    ]
    for body in failing:
        r = http.post("/v1/chat/completions", json=body, headers=headers)
        if "seed" not in body:  # a >64-bit seed fails today (see test_proxy_params); either way, no leak
            assert r.status_code != 200 or body.get("stream"), r.text
        request_ids.append(r.headers["x-request-id"])
    r = http.post("/v1/chat/completions", content=b'{"messages": "' + CANARY_CONTENT.encode() + b'", ', headers={**headers, "content-type": "application/json"})
    request_ids.append(r.headers["x-request-id"])
    request_ids.append(http.get("/v1/models", headers=headers).headers["x-request-id"])
    # The SDK as a client too (its own client-side debug logging is excluded below).
    with openai.OpenAI(base_url=relay.base_url, api_key=CANARY_KEY, max_retries=0) as sdk:
        fake.enqueue(Reply(content=CANARY_CONTENT))
        sdk.chat.completions.create(model="fake-model", messages=messages)
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(model="no-such-model", messages=messages, stream=True)

    for request_id in request_ids:
        access_line(logs, request_id)  # every request was logged, once
    texts = logs.texts(exclude=("openai",))
    assert len(texts) >= len(request_ids)
    for text in texts:
        for secret in (CANARY_KEY, CANARY_CONTENT, CANARY_ARGS, "sk-upstream-secret"):
            assert secret not in text, f"{secret!r} leaked into a log record: {text[:500]}"
