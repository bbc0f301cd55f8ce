"""OpenAI-shaped errors.

Every non-2xx response body is ``{"error": {"message", "type", "param",
"code"}}`` because the OpenAI SDKs read exactly that object to pick the
exception class and message. Raise :class:`OpenAIError` anywhere below the
HTTP layer. :func:`error_response` is the one way it becomes a response
(Litestar's exception handlers in :mod:`app.server`, the handlers that answer
an error themselves); :func:`error_messages` is the same for the ASGI layer
below Litestar (:mod:`app.middleware`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import orjson
from litestar.response import Response

from toolrelay.app.json_response import JSONBytes

_STATUS_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class OpenAIError(Exception):
    """An error the client should see, with its HTTP status and headers."""

    __slots__ = ("status", "message", "type", "param", "code", "headers")

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _STATUS_TYPE.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.code = code
        self.headers = headers or {}

    def payload(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return orjson.dumps(self.payload())

    def __repr__(self) -> str:
        return f"OpenAIError({self.status}, {self.message!r}, code={self.code!r})"


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, type="invalid_request_error", param=param, code=code)


# Model ids named in a model_not_found message; the rest are counted.
_MAX_NAMED_MODELS = 20


def model_not_found(model: str, available: Sequence[str] | None = None) -> OpenAIError:
    """OpenAI's 404 for a model; ``available``: the ids the caller may use, named (at most 20) to help a wrong guess."""
    message = f"The model `{model}` does not exist or you do not have access to it."
    if available is not None:
        shown = sorted(available)[:_MAX_NAMED_MODELS]
        if not shown:
            message += " This key may use no model."
        else:
            more = len(available) - len(shown)
            message += " Models available to you: " + ", ".join(shown) + (f" (and {more} more; see GET /v1/models)." if more > 0 else ".")
    return OpenAIError(404, message, type="invalid_request_error", param="model", code="model_not_found")


def upstream_unreachable(detail: str) -> OpenAIError:
    return OpenAIError(502, f"The upstream provider could not be reached: {detail}", type="upstream_error", code="upstream_connection_error")


class UpstreamDisconnected(OpenAIError):
    """The upstream dropped the connection after the request was sent: it may have processed (and
    billed) it, so failover does not retry it unless the operator allows it. The client sees the same 502."""


def upstream_disconnected(detail: str) -> UpstreamDisconnected:
    return UpstreamDisconnected(502, f"The upstream provider could not be reached: {detail}", type="upstream_error", code="upstream_connection_error")


def upstream_timeout(detail: str = "the upstream provider did not answer in time") -> OpenAIError:
    return OpenAIError(504, f"Upstream timeout: {detail}", type="timeout_error", code="upstream_timeout")


def server_error(message: str = "The server had an error while processing your request.") -> OpenAIError:
    return OpenAIError(500, message, type="server_error", code="internal_error")


class _Recorded(Protocol):
    """Where a response's error code is noted for the access log and the ledger (``RequestInfo``)."""

    error_code: str | None


def error_response(err: OpenAIError, info: _Recorded | None = None) -> Response[bytes]:
    """``err`` as a Litestar response; its code (else its type) is recorded on ``info``."""
    if info is not None:
        info.error_code = err.code or err.type
    return JSONBytes(err.body(), status_code=err.status, headers=err.headers)


_JSON = (b"content-type", b"application/json")


def error_messages(err: OpenAIError, *headers: tuple[bytes, bytes]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``err`` as the two ASGI messages (start, body) that send it, with ``headers`` added."""
    raw = [_JSON, *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in err.headers.items()), *headers]
    return {"type": "http.response.start", "status": err.status, "headers": raw}, {"type": "http.response.body", "body": err.body()}
