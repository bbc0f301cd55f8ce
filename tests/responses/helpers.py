"""Strict checks of Responses API shapes against the official SDK's pydantic models."""

from __future__ import annotations

from typing import Any

import httpx
import pydantic
from openai import BaseModel
from openai.types.responses import Response, ResponseFunctionCallArgumentsDoneEvent, ResponseStreamEvent

from fakes.sse import parse_sse

__all__ = ["STREAM_EVENT", "assert_no_extra", "parse_event_stream", "strict_response"]

STREAM_EVENT: pydantic.TypeAdapter[ResponseStreamEvent] = pydantic.TypeAdapter(ResponseStreamEvent)


# The API returns ``store`` on a response (the reference's example bodies show it); the SDK's model omits it.
# OpenAI's published schema requires ``name`` on function_call_arguments.done (tests/schemas/); this SDK's model predates it.
_UNDECLARED_BUT_SENT = {(Response, "store"), (ResponseFunctionCallArgumentsDoneEvent, "name")}


def assert_no_extra(value: Any, where: str = "$") -> None:
    """Every field of ``value`` (a parsed SDK model, recursively) is one the API reference declares."""
    if isinstance(value, BaseModel):
        extra = {k for k in value.__pydantic_extra__ or {} if (type(value), k) not in _UNDECLARED_BUT_SENT}
        assert not extra, f"{where}: fields the API reference does not declare: {sorted(extra)}"
        for name in type(value).model_fields:
            assert_no_extra(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for position, entry in enumerate(value):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
            assert_no_extra(entry, f"{where}[{position}]")


def strict_response(body: dict[str, Any]) -> Response:
    """``body`` parsed as the SDK's ``Response``, with no undeclared field anywhere."""
    response = Response.model_validate(body)
    assert_no_extra(response)
    return response


def parse_event_stream(response: httpx.Response) -> list[ResponseStreamEvent]:
    """A whole SSE body as stream events: ``event:`` names match ``type``, sequence numbers strictly increase, each event strict."""
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    events: list[ResponseStreamEvent] = []
    for sse in parse_sse(response.content):
        if sse.data is None:
            continue
        event = STREAM_EVENT.validate_json(sse.data)
        assert sse.event == event.type, (sse.event, event.type)
        assert_no_extra(event)
        events.append(event)
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(set(numbers)) and numbers and numbers[0] == 0, numbers
    return events
