"""A chat upstream's refusal on /v1/responses: a ``message`` item with a ``refusal`` part, streamed or not.

The fake streams chat ``refusal`` deltas word by word; the Responses stream
must carry them as ``response.refusal.delta``/``.done`` inside a message item
whose content part is ``{"type": "refusal", "refusal": ...}``, and the plain
answer (built by the same writer) must hold the same item. Raw bytes are
checked against OpenAI's published schema; the SDK must read the refusal.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from fakes.upstream import FakeUpstream, Reply

from .schema import check_stream, parse_stream, validate_response

REFUSAL = "I can't help with that request."

# (name, fake reply, expected output as (item type, part types) per item)
SCENARIOS: list[tuple[str, dict[str, Any], list[list[tuple[str, str]]]]] = [
    ("refusal_only", {"refusal": REFUSAL}, [[("refusal", REFUSAL)]]),
    ("text_then_refusal", {"content": "Let me see.", "refusal": REFUSAL}, [[("output_text", "Let me see.")], [("refusal", REFUSAL)]]),
    ("reasoning_then_refusal", {"reasoning_content": "Not allowed.", "refusal": REFUSAL}, [[("reasoning_text", "Not allowed.")], [("refusal", REFUSAL)]]),
]


def _parts(output: list[dict[str, Any]]) -> list[list[tuple[str, str]]]:
    return [[(part["type"], part.get("text", part.get("refusal"))) for part in item["content"]] for item in output]


def _without_ids(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "id"} for item in output]


@pytest.mark.parametrize(("name", "reply", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_streamed_and_plain_carry_the_refusal_alike(
    http: httpx.Client, fake: FakeUpstream, name: str, reply: dict[str, Any], expected: list[list[tuple[str, str]]]
) -> None:
    fake.enqueue(Reply(**reply), Reply(**reply))
    raw = http.post("/v1/responses", json={"model": "fake-model", "input": f"refuse {name}", "stream": True})
    assert raw.status_code == 200, raw.text
    events = parse_stream(raw.content)
    streamed = check_stream(events)
    validate_response(streamed)
    assert streamed["status"] == "completed"
    assert _parts(streamed["output"]) == expected
    deltas = [event["delta"] for event in events if event["type"] == "response.refusal.delta"]
    assert len(deltas) > 1 and "".join(deltas) == REFUSAL  # streamed as it came, not at the end
    [done] = [event for event in events if event["type"] == "response.refusal.done"]
    assert done["refusal"] == REFUSAL
    [opened] = [event["part"] for event in events if event["type"] == "response.content_part.added" and event["part"]["type"] == "refusal"]
    assert opened == {"type": "refusal", "refusal": ""}
    assert http.get(f"/v1/responses/{streamed['id']}").json()["output"] == streamed["output"]

    plain = http.post("/v1/responses", json={"model": "fake-model", "input": f"refuse {name}"})
    assert plain.status_code == 200, plain.text
    body = plain.json()
    validate_response(body)
    assert _without_ids(body["output"]) == _without_ids(streamed["output"])


def test_sdk_reads_the_refusal(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.enqueue(Reply(refusal=REFUSAL), Reply(refusal=REFUSAL))
    response = client.responses.create(model="fake-model", input="do something bad")
    part = response.output[0].content[0]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownVariableType]
    assert part.type == "refusal" and part.refusal == REFUSAL  # pyright: ignore[reportUnknownMemberType]
    assert response.output_text == ""
    with client.responses.stream(model="fake-model", input="do something bad") as stream:
        deltas = [event.delta for event in stream if event.type == "response.refusal.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == REFUSAL
    part = final.output[0].content[0]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownVariableType]
    assert part.type == "refusal" and part.refusal == REFUSAL  # pyright: ignore[reportUnknownMemberType]
