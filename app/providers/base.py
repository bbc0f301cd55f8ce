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

    async def health(self) -> Health: ...

    async def list_models(self) -> list[str]: ...
