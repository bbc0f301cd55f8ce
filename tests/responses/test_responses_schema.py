"""Every Responses body and stream event, over real HTTP, against OpenAI's published schema.

Raw bytes through httpx, not the SDK: its models accept unknown fields and
events in any order, so nothing is tolerated silently here. The schema and
the order rules are :mod:`responses.schema`; the last tests show that the
checks fail on broken streams.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from fakes.upstream import FakeUpstream, Reply

from .schema import SchemaMismatch, check_stream, parse_stream, validate_deleted, validate_error, validate_event, validate_input_items, validate_response
from .test_responses_create import WEATHER_TOOL

CLOCK_TOOL = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}, "strict": False}
NUMBER_FORMAT = {
    "type": "json_schema",
    "name": "number",
    "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False},
    "strict": True,
}
PARALLEL_CALLS = [
    {"id": "call_p1", "name": "get_weather", "arguments": {"city": "Rome"}},
    {"id": "call_p2", "name": "get_weather", "arguments": {"city": "Oslo"}},
    {"id": "call_p3", "name": "get_time", "arguments": {"zone": "UTC"}},
]

# (name, fake reply, request fields beyond model/input, expected status, expected output item types)
SCENARIOS: list[tuple[str, dict[str, Any], dict[str, Any], str, list[str]]] = [
    ("text", {"content": "one two three four"}, {}, "completed", ["message"]),
    (
        "reasoning",
        {"content": "Forty-two.", "reasoning_content": "Let me think it over."},
        {"reasoning": {"effort": "low"}},
        "completed",
        ["reasoning", "message"],
    ),
    ("one_tool_call", {"tool_calls": PARALLEL_CALLS[:1], "arg_chunks": 3}, {"tools": [WEATHER_TOOL]}, "completed", ["function_call"]),
    (
        "parallel_tool_calls",
        {"tool_calls": PARALLEL_CALLS, "arg_chunks": 2},
        {"tools": [WEATHER_TOOL, CLOCK_TOOL], "parallel_tool_calls": True, "tool_choice": "required"},
        "completed",
        ["function_call"] * 3,
    ),
    ("text_then_tool_call", {"content": "Checking.", "tool_calls": PARALLEL_CALLS[:1]}, {"tools": [WEATHER_TOOL]}, "completed", ["message", "function_call"]),
    ("json_schema", {"content": '{"n": 3}'}, {"text": {"format": NUMBER_FORMAT}}, "completed", ["message"]),
    ("incomplete", {"content": "cut short", "finish_reason": "length"}, {"max_output_tokens": 2}, "incomplete", ["message"]),
    (
        "settings_echoed",
        {"content": "ok"},
        {
            "instructions": "Be brief.",
            "temperature": 0.2,
            "top_p": 0.5,
            "metadata": {"k": "v"},
            "user": "alice",
            "safety_identifier": "s1",
            "truncation": "auto",
            "tool_choice": {"type": "function", "name": "get_weather"},
            "tools": [WEATHER_TOOL],
            "store": False,
        },
        "completed",
        ["message"],
    ),
]


def _ids(scenarios: list[Any]) -> list[str]:
    return [scenario[0] for scenario in scenarios]


@pytest.mark.parametrize(("name", "reply", "extra", "status", "types"), SCENARIOS, ids=_ids(SCENARIOS))
def test_stream_events_validate(
    http: httpx.Client, fake: FakeUpstream, name: str, reply: dict[str, Any], extra: dict[str, Any], status: str, types: list[str]
) -> None:
    fake.enqueue(Reply(**reply))
    raw = http.post("/v1/responses", json={"model": "fake-model", "input": f"scenario {name}", "stream": True, **extra})
    assert raw.status_code == 200, raw.text
    assert raw.headers["content-type"].startswith("text/event-stream")
    final = check_stream(parse_stream(raw.content))
    assert final["status"] == status
    assert [item["type"] for item in final["output"]] == types
    validate_response(final)
    if final["store"]:
        stored = http.get(f"/v1/responses/{final['id']}")
        assert stored.status_code == 200
        validate_response(stored.json())
        assert stored.json()["output"] == final["output"]


@pytest.mark.parametrize(("name", "reply", "extra", "status", "types"), SCENARIOS, ids=_ids(SCENARIOS))
def test_bodies_validate(
    http: httpx.Client, fake: FakeUpstream, name: str, reply: dict[str, Any], extra: dict[str, Any], status: str, types: list[str]
) -> None:
    fake.enqueue(Reply(**reply))
    created = http.post("/v1/responses", json={"model": "fake-model", "input": f"scenario {name}", **extra})
    assert created.status_code == 200, created.text
    body = created.json()
    validate_response(body)
    assert body["status"] == status
    assert [item["type"] for item in body["output"]] == types
    if not body["store"]:
        return
    fetched = http.get(f"/v1/responses/{body['id']}")
    validate_response(fetched.json())
    listing = http.get(f"/v1/responses/{body['id']}/input_items")
    validate_input_items(listing.json())
    deleted = http.delete(f"/v1/responses/{body['id']}")
    assert deleted.status_code == 200
    validate_deleted(deleted.json())


def test_failed_mid_stream_validates(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="one two three four five six", break_after=3))
    raw = http.post("/v1/responses", json={"model": "fake-model", "input": "x", "stream": True})
    assert raw.status_code == 200
    final = check_stream(parse_stream(raw.content))
    assert final["status"] == "failed" and final["error"]["message"]


def test_every_input_item_kind_lists_validly(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(content="Done."))
    created = http.post(
        "/v1/responses",
        json={
            "model": "fake-model",
            "tools": [WEATHER_TOOL],
            "input": [
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Look"}, {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}],
                },
                {"role": "assistant", "content": "Earlier."},
                {"type": "reasoning", "id": "rs_prev", "summary": [{"type": "summary_text", "text": "thought"}]},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Rome"}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"type": "message", "role": "user", "content": "And now?"},
            ],
        },
    )
    assert created.status_code == 200, created.text
    validate_response(created.json())
    for order in ("asc", "desc"):
        listing = http.get(f"/v1/responses/{created.json()['id']}/input_items", params={"order": order, "limit": 100}).json()
        validate_input_items(listing)
        assert len(listing["data"]) == 7
    page = http.get(f"/v1/responses/{created.json()['id']}/input_items", params={"limit": 2}).json()
    validate_input_items(page)
    assert page["has_more"] is True


def test_continued_response_validates(http: httpx.Client, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(tool_calls=PARALLEL_CALLS[:2]))
    first = http.post("/v1/responses", json={"model": "fake-model", "input": "Weather?", "tools": [WEATHER_TOOL]}).json()
    validate_response(first)
    fake.enqueue(Reply(content="Sunny and cold."))
    outputs = [{"type": "function_call_output", "call_id": item["call_id"], "output": "ok"} for item in first["output"]]
    raw = http.post("/v1/responses", json={"model": "fake-model", "previous_response_id": first["id"], "input": outputs, "stream": True})
    final = check_stream(parse_stream(raw.content))
    assert final["previous_response_id"] == first["id"]
    validate_input_items(http.get(f"/v1/responses/{final['id']}/input_items").json())


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/responses", {"model": "fake-model"}, 400),
        ("POST", "/v1/responses", {"model": "no-such-model", "input": "x"}, 404),
        ("POST", "/v1/responses", {"model": "fake-model", "input": "x", "previous_response_id": "resp_missing"}, 404),
        ("GET", "/v1/responses/resp_missing", None, 404),
        ("GET", "/v1/responses/resp_missing/input_items", None, 404),
        ("DELETE", "/v1/responses/resp_missing", None, 404),
    ],
)
def test_error_bodies_validate(http: httpx.Client, fake: FakeUpstream, method: str, path: str, body: Any, status: int) -> None:
    response = http.request(method, path, json=body)
    assert response.status_code == status
    validate_error(response.json())


# -------------------------------------------------------------------------- the checks can fail


def _good_stream(http: httpx.Client, fake: FakeUpstream) -> list[dict[str, Any]]:
    fake.enqueue(Reply(content="alpha beta", tool_calls=PARALLEL_CALLS[:2], arg_chunks=2))
    return parse_stream(http.post("/v1/responses", json={"model": "fake-model", "input": "x", "stream": True, "tools": [WEATHER_TOOL]}).content)


def _index(events: list[dict[str, Any]], kind: str) -> int:
    return next(i for i, event in enumerate(events) if event["type"] == kind)


def _renumber(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


def _drop(kind: str) -> Any:
    return lambda events: _renumber([e for i, e in enumerate(events) if i != _index(events, kind)])


def _move_delta_after_done(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    delta = events.pop(_index(events, "response.output_text.delta"))
    events.insert(_index(events, "response.output_text.done") + 1, delta)
    return _renumber(events)


def _set(kind: str, key: str, value: Any) -> Any:
    def edit(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        events[_index(events, kind)][key] = value
        return events

    return edit


BREAKAGES = {
    "sequence_gap": lambda events: [*events[:3], *({**e, "sequence_number": e["sequence_number"] + 1} for e in events[3:])],
    "starts_at_one": lambda events: [{**e, "sequence_number": e["sequence_number"] + 1} for e in events],
    "no_in_progress": _drop("response.in_progress"),
    "no_terminal": lambda events: events[:-1],
    "two_terminals": lambda events: [*events, {**events[-1], "sequence_number": len(events)}],
    "item_never_done": _drop("response.output_item.done"),
    "part_never_done": _drop("response.content_part.done"),
    "delta_after_done": _move_delta_after_done,
    "undeclared_field": _set("response.output_text.delta", "obfuscation_extra", "x"),
    "wrong_field_type": _set("response.output_text.delta", "output_index", "0"),
    "missing_required": lambda events: [{k: v for k, v in e.items() if not (e["type"] == "response.output_text.done" and k == "text")} for e in events],
    "done_text_differs": _set("response.output_text.done", "text", "something else"),
    "unknown_event": _set("response.output_text.delta", "type", "response.output_text.extra"),
    "foreign_item_id": _set("response.function_call_arguments.delta", "item_id", "fc_other"),
    "final_output_differs": lambda events: [
        *events[:-1],
        {**events[-1], "response": {**events[-1]["response"], "output": events[-1]["response"]["output"][:1]}},
    ],
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_check_stream_refuses_broken_streams(http: httpx.Client, fake: FakeUpstream, breakage: str) -> None:
    events = _good_stream(http, fake)
    check_stream(copy.deepcopy(events))
    with pytest.raises(SchemaMismatch):
        check_stream(BREAKAGES[breakage](copy.deepcopy(events)))


def test_parse_stream_refuses_a_mismatched_event_line() -> None:
    with pytest.raises(SchemaMismatch):
        parse_stream(b'event: response.created\ndata: {"type": "response.in_progress"}\n\n')


def test_validators_refuse_what_the_schema_refuses() -> None:
    with pytest.raises(SchemaMismatch):
        validate_event({"type": "response.output_text.delta", "sequence_number": 1})
    with pytest.raises(SchemaMismatch):
        validate_response({"id": "resp_1", "object": "response"})
    with pytest.raises(SchemaMismatch):
        validate_deleted({"id": "resp_1", "object": "response", "deleted": False})
    with pytest.raises(SchemaMismatch):
        validate_input_items({"object": "list", "data": [{"type": "message"}], "has_more": False, "first_id": "a", "last_id": "a"})
    with pytest.raises(SchemaMismatch):
        validate_error({"error": {"message": "m", "type": "t"}})
