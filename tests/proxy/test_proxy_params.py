"""Every Chat Completions parameter reaches the upstream unchanged (only `model`, and `stream_options` when streaming, change)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from fakes.upstream import FakeUpstream

from .helpers import USER

SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "city_answer",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
            "required": ["city", "population"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look something up.",
            "strict": True,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"], "additionalProperties": False},
        },
    }
]


def all_params() -> dict[str, Any]:
    return {
        "n": 2,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["END", "\n\n"],
        "max_tokens": 256,
        "max_completion_tokens": 300,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "logit_bias": {"50256": -100, "1234": 7.5},
        "logprobs": True,
        "top_logprobs": 3,
        "seed": 1234567,
        "user": "end-user-17",
        "response_format": SCHEMA_FORMAT,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "parallel_tool_calls": False,
        "metadata": {"team": "qa", "ticket": "T-1"},
        "store": False,
        "service_tier": "auto",
        "reasoning_effort": "low",
    }


EXTRA_BODY = {"top_k": 40, "repetition_penalty": 1.1, "custom_field": {"nested": [1, 2.5, None, True, "x"]}, "min_p": 0.05}


def test_every_parameter_forwarded_non_streaming(client: openai.OpenAI, fake: FakeUpstream) -> None:
    params = all_params()
    client.chat.completions.create(model="gpt-4", messages=USER, extra_body=EXTRA_BODY, **params)
    received = fake.last_body
    expected = {"model": "fake-model", "messages": USER, **params, **EXTRA_BODY}
    assert received == expected
    # Exact JSON types too: 0.7 stays a float, 256 an int, False a bool.
    raw = json.loads(fake.last_request.raw)
    assert type(raw["temperature"]) is float and type(raw["max_tokens"]) is int and raw["parallel_tool_calls"] is False


def test_every_parameter_forwarded_streaming(client: openai.OpenAI, fake: FakeUpstream) -> None:
    params = all_params()
    stream = client.chat.completions.create(
        model="fake-model", messages=USER, stream=True, stream_options={"include_usage": True}, extra_body=EXTRA_BODY, **params
    )
    list(stream)
    expected = {"model": "fake-model", "messages": USER, "stream": True, "stream_options": {"include_usage": True}, **params, **EXTRA_BODY}
    assert fake.last_body == expected


def test_stream_options_other_keys_kept_when_usage_added(http: httpx.Client, fake: FakeUpstream) -> None:
    body = {"model": "fake-model", "messages": USER, "stream": True, "stream_options": {"include_obfuscation": False}}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert fake.last_body["stream_options"] == {"include_obfuscation": False, "include_usage": True}


def test_rich_messages_forwarded_unchanged(client: openai.OpenAI, fake: FakeUpstream) -> None:
    messages: list[Any] = [
        {"role": "developer", "content": "Be terse."},
        {"role": "system", "content": [{"type": "text", "text": "System part"}]},
        {
            "role": "user",
            "name": "alice",
            "content": [
                {"type": "text", "text": "What is in this image? ünïcødé ✓ \u2028"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "result text"},
        {"role": "assistant", "content": [{"type": "text", "text": "Earlier answer"}]},
        {"role": "user", "content": ""},
    ]
    client.chat.completions.create(model="fake-model", messages=messages, tools=TOOLS)
    assert fake.last_body["messages"] == messages


@pytest.mark.parametrize(
    "extra",
    [
        {"stop": "STOP"},
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "text"}},
        {"tool_choice": "required", "tools": TOOLS},
        {"tool_choice": "none", "tools": TOOLS},
        {"temperature": 0, "top_p": 1, "presence_penalty": -2, "frequency_penalty": 2},
        {"temperature": 2},
        {"n": 128},
        {"seed": -5},
        {"seed": 2**63 - 1},
        {"modalities": ["text"], "prediction": {"type": "content", "content": "draft"}},
        {"web_search_options": {}, "verbosity": "low"},
    ],
    ids=lambda e: ",".join(e),
)
def test_single_parameter_values_forwarded(http: httpx.Client, fake: FakeUpstream, extra: dict[str, Any]) -> None:
    body = {"model": "fake-model", "messages": USER, **extra}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert fake.last_body == body


BIG_INT_BUG = (
    "BUG: app/routes/chat.py parse_json_body: orjson.loads does not raise on integers >= 2**64, it silently returns a "
    "float, so the stdlib fallback meant for them never runs (seed 2**70 -> 400 'expected an integer, but got number'; an "
    "unknown field's big integer is forwarded as a float). Behind it, app/providers/openai.py OpenAIProvider.complete "
    "encodes the upstream body with orjson.dumps, which raises TypeError for such integers (-> 500)."
)


def test_huge_seed_forwarded_unchanged(http: httpx.Client, fake: FakeUpstream) -> None:
    raw = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "seed": 1180591620717411303424}'
    response = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert fake.last_body["seed"] == 2**70
    assert b"1180591620717411303424" in fake.last_request.raw


def test_huge_seed_forwarded_unchanged_streaming(http: httpx.Client, fake: FakeUpstream) -> None:
    raw = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": true, "seed": 1180591620717411303424}'
    response = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert fake.last_body["seed"] == 2**70


def test_huge_integer_in_unknown_field_forwarded_exactly(http: httpx.Client, fake: FakeUpstream) -> None:
    raw = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "x_trace": {"span": 18446744073709551616}}'
    response = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert fake.last_body["x_trace"] == {"span": 2**64}
    assert type(fake.last_body["x_trace"]["span"]) is int


def test_largest_64_bit_seed_forwarded_exactly(http: httpx.Client, fake: FakeUpstream) -> None:
    raw = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "seed": 18446744073709551615}'
    response = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert fake.last_body["seed"] == 2**64 - 1


def test_huge_seed_failure_is_openai_shaped(http: httpx.Client, fake: FakeUpstream) -> None:
    """Whatever happens to a >64-bit seed today, the client gets an OpenAI-shaped JSON answer, never a traceback."""
    raw = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "seed": 1180591620717411303424}'
    response = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert ("error" in body and set(body["error"]) == {"message", "type", "param", "code"}) or body.get("object") == "chat.completion"
    assert "Traceback" not in response.text


def test_client_headers_are_not_forwarded(http: httpx.Client, fake: FakeUpstream) -> None:
    response = http.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": USER},
        headers={"authorization": "Bearer sk-client-only", "x-custom-header": "nope", "openai-organization": "org-client"},
    )
    assert response.status_code == 200
    headers = fake.last_request.headers
    assert headers["authorization"] == "Bearer sk-upstream-secret"
    assert "x-custom-header" not in headers and "openai-organization" not in headers
