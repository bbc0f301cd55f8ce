"""The Responses dicts the translation builds are the Structs app.protocol declares, and /docs shows them.

The code builds plain dicts (cheap on the hot path); these tests convert what
it builds over real HTTP to the Structs and require it to encode back
unchanged, so a field added on one side only fails here.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest

from fakes.upstream import FakeUpstream, Reply
from toolrelay.app import protocol

from .schema import parse_stream
from .test_responses_create import WEATHER_TOOL
from .test_responses_schema import SCENARIOS

_EVENT = msgspec.json.Decoder(protocol.ResponseStreamEvent)


def _same(value: Any, cls: Any) -> None:
    """``value`` converts to ``cls`` and back unchanged: nothing missing, nothing undeclared."""
    assert msgspec.to_builtins(msgspec.convert(value, cls)) == value


@pytest.mark.parametrize(("name", "reply", "extra", "status", "types"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_streamed_and_plain_answers_are_the_protocol_structs(
    http: httpx.Client, fake: FakeUpstream, name: str, reply: dict[str, Any], extra: dict[str, Any], status: str, types: list[str]
) -> None:
    fake.enqueue(Reply(**reply))
    raw = http.post("/v1/responses", json={"model": "fake-model", "input": name, "stream": True, **extra})
    for event in parse_stream(raw.content):
        _same(event, protocol.ResponseStreamEvent)
    fake.enqueue(Reply(**reply))
    body = http.post("/v1/responses", json={"model": "fake-model", "input": name, **extra}).json()
    _same(body, protocol.ResponseObject)


def test_stored_routes_are_the_protocol_structs(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="x"))
    request = {
        "model": "fake-model",
        "tools": [WEATHER_TOOL],
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Look"}, {"type": "input_image", "image_url": "data:,", "detail": "low"}]},
            {"role": "assistant", "content": "Earlier."},
            {"type": "reasoning", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ],
    }
    _same(request, protocol.CreateResponseRequest)
    created = http.post("/v1/responses", json=request).json()
    _same(http.get(f"/v1/responses/{created['id']}").json(), protocol.ResponseObject)
    _same(http.get(f"/v1/responses/{created['id']}/input_items").json(), protocol.ResponseItemList)
    _same(http.delete(f"/v1/responses/{created['id']}").json(), protocol.ResponseDeleted)


def test_the_request_struct_refuses_what_the_route_refuses() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"model": "m"}, protocol.CreateResponseRequest)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"input": "x", "temperature": 3}, protocol.CreateResponseRequest)


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rpartition("/")[2]] if ref else schema


def test_openapi_describes_the_responses_routes(http: httpx.Client) -> None:
    spec = http.get("/docs/openapi.json").json()
    create = spec["paths"]["/v1/responses"]["post"]
    request = _resolve(spec, create["requestBody"]["content"]["application/json"]["schema"])
    assert set(request["properties"]) == set(protocol.CreateResponseRequest.__struct_fields__)
    assert request["required"] == ["input"]
    ok = create["responses"]["200"]["content"]
    response = _resolve(spec, ok["application/json"]["schema"])
    assert set(response["properties"]) == set(protocol.ResponseObject.__struct_fields__)
    events = {_resolve(spec, member)["properties"]["type"]["enum"][0] for member in ok["text/event-stream"]["schema"]["oneOf"]}
    assert {"response.created", "response.output_text.delta", "response.function_call_arguments.done", "response.completed", "error"} <= events
    assert "429" in create["responses"]
    stored = spec["paths"]["/v1/responses/{response_id}"]
    assert _resolve(spec, stored["get"]["responses"]["200"]["content"]["application/json"]["schema"]) == response
    deleted = _resolve(spec, stored["delete"]["responses"]["200"]["content"]["application/json"]["schema"])
    assert deleted["required"] == ["id", "object", "deleted"]
    listing = spec["paths"]["/v1/responses/{response_id}/input_items"]["get"]
    assert _resolve(spec, listing["responses"]["200"]["content"]["application/json"]["schema"])["required"] == [
        "object",
        "data",
        "first_id",
        "last_id",
        "has_more",
    ]
    assert {p["name"] for p in listing["parameters"]} >= {"limit", "order", "after"}
