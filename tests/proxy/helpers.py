"""Assertions shared by the proxy-mode tests."""

from __future__ import annotations

from typing import Any

import httpx
import openai

from fakes.clients import stream_raw
from fakes.sse import SSEEvent, data_events

__all__ = ["USER", "assert_openai_error", "assert_still_serving", "chat_body", "content_of", "stream_events", "stream_raw"]

USER = [{"role": "user", "content": "Say hello to the tests"}]
_MISSING: Any = object()


def chat_body(model: str = "fake-model", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": USER, **extra}


def assert_openai_error(
    response: httpx.Response,
    status: int,
    *,
    code: Any = _MISSING,
    param: Any = _MISSING,
    type: Any = _MISSING,
) -> dict[str, Any]:
    """The response is an OpenAI-shaped error with this status; return its ``error`` object."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers.get("content-type")
    assert response.headers.get("x-request-id", "").startswith("req_"), dict(response.headers)
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    if code is not _MISSING:
        assert err["code"] == code, err
    if param is not _MISSING:
        assert err["param"] == param, err
    if type is not _MISSING:
        assert err["type"] == type, err
    return err


def assert_still_serving(client: openai.OpenAI, fake: Any, text: str = "still here") -> None:
    """After a failure, the next ordinary request works end to end."""
    from fakes.upstream import Reply

    fake.enqueue(Reply(content=text))
    result = client.chat.completions.create(model="fake-model", messages=USER)
    assert result.choices[0].message.content == text
    assert result.choices[0].finish_reason == "stop"


def stream_events(http: httpx.Client, body: dict[str, Any]) -> tuple[httpx.Response, list[SSEEvent], bytes]:
    response, raw = stream_raw(http, body)
    assert response.status_code == 200, raw
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    return response, data_events(raw), raw


def content_of(chunks: list[dict[str, Any]], index: int = 0) -> str:
    return "".join((c["delta"].get("content") or "") for chunk in chunks for c in chunk.get("choices") or [] if c["index"] == index)
