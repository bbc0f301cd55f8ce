"""Models, health, readiness, docs, and the error shape of the routes around chat."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from fakes.upstream import FakeUpstream

from .helpers import USER, assert_openai_error

PLAIN_IDS = {"fake-model", "fake-tools", "org/fake-slash", "slow-model", "dead-model"}


def agent_enabled(relay: Any) -> bool:
    return relay.services.agent is not None


def test_list_models_shape(http: httpx.Client, relay: Any) -> None:
    response = http.get("/v1/models")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert len(ids) == len(set(ids)), "duplicate model ids"
    assert PLAIN_IDS | {"gpt-4"} <= set(ids)
    for model in body["data"]:
        assert set(model) >= {"id", "object", "created", "owned_by"}
        assert model["object"] == "model"
        assert isinstance(model["created"], int)
        assert isinstance(model["owned_by"], str) and model["owned_by"]
    owners = {m["id"]: m["owned_by"] for m in body["data"]}
    assert owners["fake-model"] == "fake" and owners["slow-model"] == "slow" and owners["gpt-4"] == "fake"
    if agent_enabled(relay):
        # Every routable id is listed, the agent ids included.
        assert {"agent/fake-model", "agent/gpt-4"} <= set(ids)
    else:
        assert not any(i.startswith("agent/") for i in ids)


def test_list_models_sdk(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert PLAIN_IDS | {"gpt-4"} <= ids


def test_retrieve_model(client: openai.OpenAI, http: httpx.Client) -> None:
    model = client.models.retrieve("fake-model")
    assert (model.id, model.object, model.owned_by) == ("fake-model", "model", "fake")
    alias = client.models.retrieve("gpt-4")
    assert alias.id == "gpt-4"
    response = http.get("/models/fake-tools")
    assert response.status_code == 200 and response.json()["id"] == "fake-tools"


@pytest.mark.parametrize("path", ["/v1/models/org/fake-slash", "/v1/models/org%2Ffake-slash", "/v1/models/org%2ffake-slash"])
def test_retrieve_model_id_with_slash(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 200, response.text
    assert response.json() == {**response.json(), "id": "org/fake-slash", "object": "model"}


def test_retrieve_model_id_with_slash_sdk(client: openai.OpenAI) -> None:
    assert client.models.retrieve("org/fake-slash").id == "org/fake-slash"


@pytest.mark.parametrize("path", ["/v1/models/agent/fake-model", "/v1/models/agent%2Ffake-model"])
def test_retrieve_agent_model(http: httpx.Client, relay: Any, path: str) -> None:
    response = http.get(path)
    if not agent_enabled(relay):
        # Without the agent wired in, agent ids are not routable, so not listed.
        assert_openai_error(response, 404, code="model_not_found")
        assert response.json()["error"]["message"].count("agent/fake-model") == 1
        return
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "agent/fake-model"


def test_retrieve_unknown_model(client: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"
    assert_openai_error(http.get("/v1/models/no-such-model"), 404, code="model_not_found", param="model")
    assert_openai_error(http.get("/v1/models/org/no-such"), 404, code="model_not_found")


def test_health(http: httpx.Client) -> None:
    response = http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"].startswith("req_")


def test_ready_reports_each_upstream(http: httpx.Client, fake: FakeUpstream) -> None:
    response = http.get("/ready")
    assert response.status_code == 200  # some upstreams work
    body = response.json()
    assert body["status"] == "degraded"  # ...but not all
    upstreams = {u["name"]: u for u in body["upstreams"]}
    assert set(upstreams) == {"fake", "slow", "dead"}
    assert upstreams["fake"]["ok"] is True and upstreams["fake"]["status"] == "reachable"
    assert upstreams["slow"]["ok"] is True
    assert upstreams["dead"]["ok"] is False and upstreams["dead"]["status"] == "degraded"
    # Error texts name upstream addresses: only the admin key sees them.
    assert all("detail" not in u for u in upstreams.values())
    # The readiness probe really asked the upstream.
    assert any(r.method == "GET" and r.path == "/v1/models" for r in fake.requests)


def test_ready_reports_an_upstream_that_errors(relay_factory: Any, fake: FakeUpstream) -> None:
    # Its own relay: the session relay's /ready caches its probe (server.ready_cache_seconds).
    admin = "ready-admin-key-0123456789abcdef"
    relay = relay_factory(server={"ready_cache_seconds": 0}, auth={"admin_key": admin})
    fake.models_status = 500
    body = httpx.get(relay.url("/ready"), headers={"authorization": f"Bearer {admin}"}, timeout=30.0).json()
    upstreams = {u["name"]: u for u in body["upstreams"]}
    assert upstreams["fake"]["ok"] is False and upstreams["fake"]["status"] == "degraded"
    assert "500" in upstreams["fake"]["detail"]


def test_openapi_docs_served(http: httpx.Client) -> None:
    response = http.get("/docs/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "toolrelay"
    assert "/v1/chat/completions" in spec["paths"]
    assert "post" in spec["paths"]["/v1/chat/completions"]
    ref = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = spec["components"]["schemas"][ref.rpartition("/")[2]]
    assert body["required"] == ["messages"]
    # Nullable, as in the OpenAI reference: the bounds sit on the number branch.
    assert {"type": "number", "minimum": 0, "maximum": 2} in body["properties"]["temperature"]["anyOf"]
    assert {"type": "integer", "minimum": 1, "maximum": 128} in body["properties"]["n"]["anyOf"]
    assert "/v1/models" in spec["paths"]
    page = http.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


@pytest.mark.parametrize(
    "method,path", [("GET", "/nope"), ("POST", "/v1/images/generations"), ("GET", "/v1/chat"), ("POST", "/v1/audio/speech"), ("GET", "/v2/models")]
)
def test_unknown_url_is_openai_shaped_404(http: httpx.Client, method: str, path: str) -> None:
    response = http.request(method, path, json={"model": "fake-model"} if method == "POST" else None)
    err = assert_openai_error(response, 404, code="unknown_url")
    assert path in err["message"]


@pytest.mark.parametrize("method,path", [("GET", "/v1/chat/completions"), ("DELETE", "/v1/models"), ("POST", "/health"), ("PUT", "/v1/models/fake-model")])
def test_wrong_method_is_openai_shaped_405(http: httpx.Client, method: str, path: str) -> None:
    response = http.request(method, path)
    err = assert_openai_error(response, 405, code="method_not_allowed")
    assert method in err["message"]


def test_405_carries_allow_header(http: httpx.Client) -> None:
    response = http.get("/v1/chat/completions")
    assert response.status_code == 405
    assert "POST" in response.headers.get("allow", "")


def test_every_response_has_a_request_id(http: httpx.Client, fake: FakeUpstream) -> None:
    responses = [
        http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER}),
        http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER, "stream": True}),
        http.post("/v1/chat/completions", json={"model": "fake-model", "messages": []}),
        http.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"}),
        http.post("/v1/chat/completions", json={"model": "no-such", "messages": USER}),
        http.post("/v1/chat/completions", json={"model": "dead-model", "messages": USER}),
        http.get("/v1/models"),
        http.get("/v1/models/nope"),
        http.get("/health"),
        http.get("/ready"),
        http.get("/docs/openapi.json"),
        http.get("/nope"),
        http.delete("/v1/models"),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(i and i.startswith("req_") for i in ids), [(r.request.url.path, r.status_code) for r in responses]
    assert len(set(ids)) == len(ids)
    assert [r.status_code for r in responses] == [200, 200, 400, 400, 404, 502, 200, 404, 200, 200, 200, 404, 405]


def test_exactly_one_request_id_header(http: httpx.Client, fake: FakeUpstream) -> None:
    response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": USER}, headers={"x-request-id": "client-chosen"})
    assert response.status_code == 200
    assert len(response.headers.get_list("x-request-id")) == 1
    # The relay does not pass its own request id (or the client's) to the upstream as a credential or header.
    assert "client-chosen" not in str(fake.last_request.headers)
