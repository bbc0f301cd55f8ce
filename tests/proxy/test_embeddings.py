"""``POST /v1/embeddings`` over HTTP with the official SDK: passed through, validated, metered."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from fakes.admin import Admin
from fakes.clients import sdk
from fakes.relays import PRICING, RelayPool, auth_tree
from fakes.server import RunningServer
from fakes.upstream import EMBEDDING_DIMS, FakeUpstream, Reply
from proxy.helpers import assert_openai_error


def _upstream_vectors(fake: FakeUpstream) -> list[list[float]]:
    """The vectors the fake sent for its last embeddings request, decoded if base64."""
    request = fake.requests_to("embeddings")[-1]
    assert request.wait_done()
    body = request.body
    dims = body.get("dimensions") or EMBEDDING_DIMS
    answer = FakeUpstream._embeddings(fake, body, Reply())  # the fake is deterministic in its input
    vectors = []
    for item in answer["data"]:
        value = item["embedding"]
        vectors.append(list(struct.unpack(f"<{dims}f", base64.b64decode(value))) if isinstance(value, str) else value)
    return vectors


def test_float_list_input_passes_through(client: openai.OpenAI, fake: FakeUpstream) -> None:
    result = client.embeddings.create(model="fake-model", input=["two words", "three more words"], encoding_format="float", user="u-1")
    assert result.object == "list"
    assert result.model == "fake-model"
    assert [d.index for d in result.data] == [0, 1]
    assert [d.embedding for d in result.data] == _upstream_vectors(fake)
    assert result.usage.prompt_tokens == 5 and result.usage.total_tokens == 5
    sent = fake.requests_to("embeddings")[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.body == {"model": "fake-model", "input": ["two words", "three more words"], "encoding_format": "float", "user": "u-1"}


def test_base64_is_returned_as_the_upstream_sent_it(client: openai.OpenAI, fake: FakeUpstream, http: httpx.Client) -> None:
    # The SDK asks for base64 by default and decodes it.
    result = client.embeddings.create(model="fake-model", input="hello there", dimensions=4)
    assert fake.requests_to("embeddings")[-1].body["encoding_format"] == "base64"
    assert fake.requests_to("embeddings")[-1].body["dimensions"] == 4
    assert result.data[0].embedding == pytest.approx(_upstream_vectors(fake)[0])
    raw = http.post("/v1/embeddings", json={"model": "fake-model", "input": "hello there", "dimensions": 4, "encoding_format": "base64"})
    assert raw.status_code == 200
    assert isinstance(raw.json()["data"][0]["embedding"], str)


async def test_async_client_token_arrays_and_alias(aclient: openai.AsyncOpenAI, fake: FakeUpstream) -> None:
    result = await aclient.embeddings.create(model="gpt-4", input=[[1, 2, 3], [4, 5]], encoding_format="float")
    assert result.model == "gpt-4"  # the id asked for, not the upstream's
    assert fake.requests_to("embeddings")[-1].body["model"] == "fake-model"
    assert fake.requests_to("embeddings")[-1].body["input"] == [[1, 2, 3], [4, 5]]
    assert result.usage.prompt_tokens == 5


def test_unprefixed_path(http: httpx.Client, fake: FakeUpstream) -> None:
    response = http.post("/embeddings", json={"model": "fake-model", "input": "hi"})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "fake-model"


def test_missing_usage_is_estimated(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(send_usage=False))
    result = client.embeddings.create(model="fake-model", input="one two three four", encoding_format="float")
    assert result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "fake-model"}, "input", "missing_required_parameter"),
        ({"input": "x"}, "model", "missing_required_parameter"),
        ({"model": "fake-model", "input": ""}, "input", "invalid_value"),
        ({"model": "fake-model", "input": []}, "input", "empty_array"),
        ({"model": "fake-model", "input": ["a", ""]}, "input[1]", "invalid_value"),
        ({"model": "fake-model", "input": ["a", 1]}, "input[1]", "invalid_type"),
        ({"model": "fake-model", "input": [[1], []]}, "input[1]", "invalid_type"),
        ({"model": "fake-model", "input": {"text": "x"}}, "input", "invalid_type"),
        ({"model": "fake-model", "input": ["x"] * 2049}, "input", "array_above_max_length"),
        ({"model": "fake-model", "input": "x", "encoding_format": "int8"}, "encoding_format", "invalid_value"),
        ({"model": "fake-model", "input": "x", "dimensions": 0}, "dimensions", "integer_below_min_value"),
        ({"model": 3, "input": "x"}, "model", "invalid_type"),
    ],
)
def test_invalid_requests_are_refused_like_openai(http: httpx.Client, fake: FakeUpstream, body: dict[str, Any], param: str, code: str) -> None:
    assert_openai_error(http.post("/v1/embeddings", json=body), 400, param=param, code=code, type="invalid_request_error")
    assert fake.requests_to("embeddings") == []


def test_2048_inputs_are_accepted(http: httpx.Client, fake: FakeUpstream) -> None:
    response = http.post("/v1/embeddings", json={"model": "fake-model", "input": ["x"] * 2048, "encoding_format": "float"})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2048


def test_strict_json_applies(http: httpx.Client) -> None:
    response = http.post("/v1/embeddings", content=b'{"model": "fake-model", "input": NaN}', headers={"content-type": "application/json"})
    assert_openai_error(response, 400, code="invalid_json")


def test_unknown_and_agent_models(client: openai.OpenAI, fake: FakeUpstream) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        client.embeddings.create(model="no-such-model", input="x")
    assert unknown.value.code == "model_not_found"
    for model in ("agent/fake-model", "agent:fake-model"):
        with pytest.raises(openai.NotFoundError) as agent:
            client.embeddings.create(model=model, input="x")
        assert agent.value.code == "model_not_supported"
        assert "/v1/embeddings" in agent.value.message and "`fake-model`" in agent.value.message
    assert fake.requests_to("embeddings") == []


def test_upstream_without_the_endpoint(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.missing_endpoints = {"embeddings"}
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="fake-model", input="x")
    assert caught.value.code == "unsupported_endpoint"
    assert caught.value.param == "model"
    assert "/v1/embeddings" in caught.value.message and "fake-model" in caught.value.message


def test_upstream_errors_are_mapped(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(status=429, headers={"retry-after": "7"}))
    with pytest.raises(openai.RateLimitError) as limited:
        client.embeddings.create(model="fake-model", input="x")
    assert limited.value.response.headers["retry-after"] == "7"
    fake.enqueue(Reply(status=404))  # the upstream does not know the model: stays a 404
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="fake-model", input="x")
    fake.enqueue(Reply(raw_body=b"not json"))
    with pytest.raises(openai.APIStatusError) as malformed:
        client.embeddings.create(model="fake-model", input="x")
    assert malformed.value.status_code == 502


# -- keys, limits and the ledger -------------------------------------------------


@pytest.fixture(scope="module")
def auth_relay(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with RelayPool(tmp_path_factory.mktemp("embeddings")) as pool:
        yield pool.start(auth_tree(fake_upstream, pool.data_dir()))


def test_keys_allow_lists_rpm_and_ledger(auth_relay: RunningServer, fake: FakeUpstream) -> None:
    with Admin(auth_relay) as admin:
        key_id, key = admin.create_key(models=["fake-model"], rpm=1)
        with sdk(auth_relay, key) as client:
            with pytest.raises(openai.AuthenticationError), sdk(auth_relay, "tr-nope-wrong") as stranger:
                stranger.embeddings.create(model="fake-model", input="x")
            with pytest.raises(openai.NotFoundError):
                client.embeddings.create(model="fake-tools", input="x")  # not on the key's list
            raw = client.embeddings.with_raw_response.create(model="fake-model", input="one two three", encoding_format="float")
            assert raw.headers["x-ratelimit-limit-requests"] == "1"
            with pytest.raises(openai.RateLimitError):
                client.embeddings.create(model="fake-model", input="x")
        rows = admin.usage_rows(key_id, count=3)
    assert len(fake.requests_to("embeddings")) == 1
    by_status = {row["status"]: row for row in rows}
    ok = by_status[200]
    assert ok["mode"] == "embeddings" and ok["model"] == "fake-model"
    assert ok["prompt_tokens"] == 3 and ok["completion_tokens"] == 0
    # Input price only: 3 tokens at PRICING's input price per million.
    assert ok["cost_usd"] == pytest.approx(3 * PRICING["models"]["fake-model"]["input"] / 1e6)
    assert {404, 429} <= set(by_status)
