"""A JSON answer whose body is already bytes, sent as two ASGI messages built once.

Litestar's :class:`~litestar.response.Response` does per answer what a
proxied request does not need: a mutable header structure filled and
re-encoded header by header, the content rendered through a serializer
lookup, the status checked for a body. Measured in-process on a proxied
chat request (cProfile), building and sending it took about a tenth of the
request's own CPU. Here the body is JSON already (orjson) and the headers
are ours (rate-limit and retry headers, plain ASCII), so the messages are
made directly. It is still a Litestar ``Response``: handlers, the exception
layer and the OpenAPI types treat it as one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from litestar.response import Response

if TYPE_CHECKING:
    from litestar.types import Receive, Scope, Send

__all__ = ["JSONBytes", "set_bare"]

_JSON = (b"content-type", b"application/json")


def set_bare(response: Response[bytes], content: bytes, status_code: int, headers: Mapping[str, str] | None, media_type: str) -> None:
    """Fill the attributes of a Response whose ``__init__`` is skipped: it normalizes cookies,
    headers and encoders that answers built from bytes do not have."""
    response.content = content
    response.status_code = status_code
    response.headers = dict(headers) if headers else {}
    response.background = None
    response.cookies = []
    response.encoding = "utf-8"
    response.media_type = media_type
    response.response_type_encoders = {}


class JSONBytes(Response[bytes]):
    """``body`` (JSON bytes) with ``status_code`` and ``headers`` (name to value)."""

    __slots__ = ()

    def __init__(self, body: bytes, *, status_code: int = 200, headers: Mapping[str, str] | None = None) -> None:
        set_bare(self, body, status_code, headers, "application/json")

    def to_asgi_response(self, app: Any, request: Any, **_: Any) -> _SendJSON:  # type: ignore[override]
        return _SendJSON(self.status_code or 200, self.content, self.headers)


class _SendJSON:
    """The ASGI app that sends one JSON answer."""

    __slots__ = ("_start", "_body")

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        raw = [_JSON, (b"content-length", b"%d" % len(body))]
        if headers:
            raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        self._start = {"type": "http.response.start", "status": status, "headers": raw}
        self._body = {"type": "http.response.body", "body": body, "more_body": False}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(self._start)  # type: ignore[arg-type]
        await send(self._body)  # type: ignore[arg-type]
