"""Refusals on /v1/responses: OpenAI-shaped, with the documented status and ``param``."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from proxy.helpers import assert_openai_error

from fakes.upstream import FakeUpstream


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "fake-model"}, 400, "input"),
        ({"model": 7, "input": "hi"}, 400, "model"),
        ({"model": "fake-model", "input": 5}, 400, "input"),
        ({"model": "fake-model", "input": [{"role": "robot", "content": "x"}]}, 400, "input[0].role"),
        ({"model": "fake-model", "input": [{"type": "web_search_call"}]}, 400, "input[0].type"),
        ({"model": "fake-model", "input": "x", "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
        ({"model": "fake-model", "input": "x", "temperature": "hot"}, 400, "temperature"),
        ({"model": "fake-model", "input": "x", "max_output_tokens": 0}, 400, "max_output_tokens"),
        ({"model": "fake-model", "input": "x", "text": {"format": {"type": "xml"}}}, 400, "text.format.type"),
        ({"model": "fake-model", "input": "x", "tool_choice": "sometimes"}, 400, "tool_choice"),
        ({"model": "fake-model", "input": "x", "background": True, "store": False}, 400, "background"),
        ({"model": "no-such-model", "input": "x"}, 404, "model"),
        ({"model": "fake-model", "input": "x", "previous_response_id": "resp_missing"}, 404, "previous_response_id"),
    ],
)
def test_refusals(http: httpx.Client, fake: FakeUpstream, body: dict[str, Any], status: int, param: str) -> None:
    assert_openai_error(http.post("/v1/responses", json=body), status, param=param)
    assert fake.requests == []


def test_unknown_fields_are_ignored(http: httpx.Client, fake: FakeUpstream) -> None:
    response = http.post(
        "/v1/responses", json={"model": "fake-model", "input": "x", "include": ["reasoning.encrypted_content"], "truncation": "auto", "future": 1}
    )
    assert response.status_code == 200, response.text


def test_sdk_errors(client: openai.OpenAI, fake: FakeUpstream) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nothing_here")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="fake-model", input="x", tools=[{"type": "web_search"}])


def test_missing_model_without_a_default() -> None:
    from toolrelay.app.errors import OpenAIError
    from toolrelay.app.responses import parse_request

    with pytest.raises(OpenAIError) as caught:
        parse_request({"input": "hi"})
    assert (caught.value.status, caught.value.param) == (400, "model")
    # The server's default model stands in, as on chat.
    assert parse_request({"input": "hi"}, "fake-model").model == "fake-model"
