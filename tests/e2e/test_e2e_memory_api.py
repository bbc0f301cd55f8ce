"""/v1/memories and /admin/* as typed Litestar routes: the same answers as before, and their OpenAPI.

The routes went from hand-read query strings and bodies to guards, typed
parameters and Structs (issue 11). What a client sees must not change: the
OpenAI-shaped 400s keep their wording, ``param`` and ``code``; a blank
parameter still means "absent"; bodies still pass the strict JSON parser;
answers are byte-for-byte the old JSON. ``/docs/openapi.json`` now describes
the parameters, bodies and answers.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fakes.admin import Admin
from fakes.server import RunningServer


@pytest.fixture
def user(ahttp: httpx.Client) -> Iterator[str]:
    name = f"typed-{secrets.token_hex(4)}"
    yield name
    ahttp.delete("/v1/memories", params={"user": name})


def _error(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "message", "param", "code"),
    [
        ("GET", "/v1/memories", {"params": {"limit": 0}}, "Invalid 'limit': expected a value between 1 and 100, got 0.", "limit", "invalid_value"),
        ("GET", "/v1/memories", {"params": {"limit": 101}}, "Invalid 'limit': expected a value between 1 and 100, got 101.", "limit", "invalid_value"),
        ("GET", "/v1/memories", {"params": {"limit": "ten"}}, "Invalid 'limit': expected an integer, got 'ten'.", "limit", "invalid_type"),
        (
            "GET",
            "/v1/memories",
            {"params": {"order": "sideways"}},
            "Invalid 'order': 'sideways'. Supported values are: 'asc' and 'desc'.",
            "order",
            "invalid_value",
        ),
        (
            "GET",
            "/v1/memories/search",
            {"params": {"q": "x", "limit": 1000}},
            "Invalid 'limit': expected a value between 1 and 100, got 1000.",
            "limit",
            "invalid_value",
        ),
        ("POST", "/v1/memories", {"json": {"tags": ["x"]}}, "Missing required parameter: 'text'.", "text", "missing_required_parameter"),
        ("POST", "/v1/memories", {"json": ["text"]}, "Missing required parameter: 'text'.", "text", "missing_required_parameter"),
        (
            "POST",
            "/v1/memories",
            {"content": b"null", "headers": {"content-type": "application/json"}},
            "Missing required parameter: 'text'.",
            "text",
            "missing_required_parameter",
        ),
        ("POST", "/v1/memories", {"json": {"text": "ok", "tags": "x"}}, "Invalid 'tags': expected an array of strings.", "tags", "invalid_type"),
        ("POST", "/v1/memories", {"json": {"text": "ok", "tags": ["a", 1]}}, "Invalid 'tags': expected an array of strings.", "tags", "invalid_type"),
    ],
)
def test_refusals_keep_their_wording(ahttp: httpx.Client, method: str, path: str, kwargs: dict[str, Any], message: str, param: str, code: str) -> None:
    error = _error(ahttp.request(method, path, **kwargs))
    assert error == {"message": message, "type": "invalid_request_error", "param": param, "code": code}


@pytest.mark.parametrize(
    "raw", [b"", b"{not json", b'{"text": "x", "n": NaN}', b'{"text": "\\ud800"}', b'{"text": "x", "deep": ' + b"[" * 200 + b"]" * 200 + b"}"]
)
def test_bodies_go_through_the_strict_parser(ahttp: httpx.Client, user: str, raw: bytes) -> None:
    response = ahttp.post("/v1/memories", params={"user": user}, content=raw, headers={"content-type": "application/json"})
    error = _error(response)
    assert error["code"] == "invalid_json" and error["param"] is None
    assert error["message"].startswith("We could not parse the JSON body of your request.")
    assert ahttp.get("/v1/memories", params={"user": user}).json()["data"] == []


def test_blank_parameters_mean_absent(ahttp: httpx.Client, user: str) -> None:
    made = [ahttp.post("/v1/memories", params={"user": user}, json={"text": f"Fact {i}", "tags": ["t"]}).json() for i in range(3)]
    blank = ahttp.get(f"/v1/memories?user={user}&limit=&order=&after=&tag=")
    assert blank.status_code == 200, blank.text
    assert [m["id"] for m in blank.json()["data"]] == [m["id"] for m in made[::-1]]
    search = ahttp.get(f"/v1/memories/search?user={user}&q=&query=Fact&limit=")
    assert search.status_code == 200 and len(search.json()["data"]) == 3
    # `user=` is the key's own scope, not a scope named "".
    assert ahttp.get("/v1/memories?user=").json()["data"] == ahttp.get("/v1/memories").json()["data"]


def test_answers_keep_their_json(ahttp: httpx.Client, user: str) -> None:
    made = ahttp.post("/v1/memories", params={"user": user}, json={"text": "Likes tea", "tags": ["Drinks"], "ignored": 1})
    assert made.status_code == 200
    memory = made.json()
    assert list(memory) == ["id", "object", "text", "tags", "created_at"]  # no `metadata` when there is none
    assert made.content == (f'{{"id":"{memory["id"]}","object":"memory","text":"Likes tea","tags":["drinks"],"created_at":{memory["created_at"]}}}').encode()
    hit = ahttp.get("/v1/memories/search", params={"user": user, "q": "tea"}).json()["data"][0]
    assert list(hit) == ["id", "object", "text", "tags", "created_at", "rank"]
    page = ahttp.get("/v1/memories", params={"user": user}).json()
    assert list(page) == ["object", "data", "first_id", "last_id", "has_more"]
    export = ahttp.get("/v1/memories/export", params={"user": user})
    assert export.headers["content-disposition"] == 'attachment; filename="memories.json"'
    assert export.json() == {"object": "list", "data": [memory]}


def test_guards_answer_before_the_query_and_body_are_read(auth_e2e_relay: RunningServer, admin: Admin) -> None:
    _, key = admin.create_key("typed-guard", rpm=50)
    with httpx.Client(base_url=auth_e2e_relay.root_url, timeout=10.0) as anonymous:
        # Invalid parameters and bodies: still the 401 first.
        assert _error(anonymous.get("/v1/memories", params={"limit": "ten"}), 401)["code"] == "invalid_api_key"
        assert _error(anonymous.post("/v1/memories", content=b"{not json", headers={"content-type": "application/json"}), 401)["code"] == "invalid_api_key"
        assert _error(anonymous.get("/admin/usage", params={"limit": "x"}), 401)["code"] == "invalid_api_key"
        keyed = anonymous.get("/v1/memories", params={"limit": "ten"}, headers={"authorization": f"Bearer {key}"})
        assert _error(keyed)["param"] == "limit"
        # Admitted, then refused: as before, only a success carries the rate-limit headers.
        assert "x-ratelimit-limit-requests" not in keyed.headers
        ok = anonymous.get("/v1/memories", headers={"authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-requests"] == "50"
        assert _error(anonymous.get("/admin/keys", headers={"authorization": f"Bearer {key}"}), 403)["code"] == "insufficient_permissions"


def test_admin_usage_parameters_keep_their_rules(admin: Admin) -> None:
    assert _error(admin.http.get("/admin/usage", params={"group_by": "request", "limit": "x"})) == {
        "message": "'limit' must be an integer.",
        "type": "invalid_request_error",
        "param": "limit",
        "code": "invalid_value",
    }
    assert admin.http.get("/admin/usage", params={"group_by": "request", "limit": "0"}).status_code == 200  # clamped, not refused
    assert _error(admin.http.get("/admin/usage", params={"key_id": "not-a-key"}))["param"] == "key_id"
    assert admin.http.get("/admin/keys", params={"include_revoked": "no"}).status_code == 200


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rpartition("/")[2]] if ref else schema


def _params(operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in operation.get("parameters", [])}


def test_openapi_documents_the_memory_and_admin_routes(ahttp: httpx.Client, auth_e2e_relay: RunningServer) -> None:
    spec = ahttp.get("/docs/openapi.json").json()
    paths = spec["paths"]

    listing = paths["/v1/memories"]["get"]
    params = _params(listing)
    assert {"user", "limit", "order", "after", "tag"} <= set(params)
    assert all(p["in"] == "query" for p in params.values())
    limit = params["limit"]["schema"]
    assert (limit["type"], limit["minimum"], limit["maximum"], limit["default"]) == ("integer", 1, 100, 20)
    assert params["order"]["schema"]["enum"] == ["asc", "desc"]
    page = _resolve(spec, listing["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(page["required"]) == {"object", "data", "first_id", "last_id", "has_more"}
    item = _resolve(spec, page["properties"]["data"]["items"])
    assert {"id", "text", "tags", "created_at"} <= set(item["required"]) and "metadata" in item["properties"]

    create = paths["/v1/memories"]["post"]
    body = _resolve(spec, create["requestBody"]["content"]["application/json"]["schema"])
    assert body["required"] == ["text"] and set(body["properties"]) == {"text", "tags"}
    assert "200" in create["responses"]

    search = paths["/v1/memories/search"]
    assert {"q", "query", "limit", "user"} <= set(_params(search["get"]))
    hit = _resolve(spec, _resolve(spec, search["get"]["responses"]["200"]["content"]["application/json"]["schema"])["properties"]["data"]["items"])
    assert "rank" in hit["required"]
    assert "memory_id" in _params(paths["/v1/memories/{memory_id}"]["delete"])
    assert "content-disposition" in paths["/v1/memories/export"]["get"]["responses"]["200"]["headers"]

    # The admin routes exist only with auth on.
    admin_spec = httpx.get(auth_e2e_relay.url("/docs/openapi.json"), timeout=10.0).json()
    usage = _params(admin_spec["paths"]["/admin/usage"]["get"])
    assert {"since", "until", "group_by", "key_id", "limit"} <= set(usage)
    assert "include_revoked" in _params(admin_spec["paths"]["/admin/keys"]["get"])
    assert admin_spec["paths"]["/admin/keys/{key_id}"]["get"]["tags"] == ["admin"]
