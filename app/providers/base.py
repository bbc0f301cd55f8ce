"""What every upstream provider offers the rest of the server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from toolrelay.app.events import Event


@dataclass(slots=True)
class UpstreamCall:
    """One Chat Completions call to an upstream.

    ``body`` is the request as the upstream should receive it (its own model
    name already in place). ``stream`` says whether to stream from the
    upstream; the events are the same either way, only their granularity
    differs.
    """

    body: dict[str, Any]
    stream: bool
    request_id: str = ""
    # Extra headers for this call only (the W3C trace context of its client span); the
    # providers add ``x-request-id`` from ``request_id`` themselves.
    headers: dict[str, str] | None = None


@dataclass(slots=True)
class ForwardCall:
    """One call to an upstream endpoint passed through as it is (``/embeddings``, ``/completions``).

    ``path`` is relative to the upstream's base URL; ``body`` is the request
    as the upstream should receive it (its own model name in place).
    ``model`` and ``endpoint`` (the client's id and the path it called) name
    them in the error a client gets when the upstream lacks the endpoint.
    """

    path: str
    body: dict[str, Any]
    stream: bool
    model: str
    endpoint: str
    request_id: str = ""
    # Bytes one streamed event, or a whole plain answer, may take (None: unbounded);
    # set where the reply is parsed and kept rather than relayed (the Responses passthrough).
    max_event_bytes: int | None = None
    headers: dict[str, str] | None = None  # as UpstreamCall.headers


def call_headers(request_id: str, extra: dict[str, str] | None) -> dict[str, str] | None:
    """The per-call headers of an upstream request: the request id (so the upstream's logs can be
    matched with ours) and ``extra``; None when there are none (aiohttp then merges nothing)."""
    if extra:
        return {"x-request-id": request_id, **extra} if request_id else extra
    return {"x-request-id": request_id} if request_id else None


@dataclass(slots=True)
class Health:
    name: str
    kind: str
    ok: bool
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict[str, Any])


class Provider(Protocol):
    name: str
    kind: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def complete(self, call: UpstreamCall) -> AsyncIterator[Event]:
        """Yield the answer's events.

        Errors known before the first event (HTTP status from the upstream,
        connection failure) are raised as :class:`app.errors.OpenAIError` from
        the first ``__anext__``; later failures arrive as a ``Failure`` event.
        """
        ...

    def forward(self, call: ForwardCall) -> AsyncIterator[bytes]:
        """Yield the reply to a passed-through call: a plain answer's whole body once, or a
        stream's ``data:`` payloads as they arrive (``[DONE]`` included).

        Errors are raised as :class:`app.errors.OpenAIError`: before the first
        payload the upstream's HTTP error (a missing endpoint as 400
        ``unsupported_endpoint``), later a broken or stalled stream.
        """
        ...

    async def health(self) -> Health: ...

    async def list_models(self) -> list[str]: ...
