"""Litestar guards for the routes that are not the chat hot path.

A guard runs after routing and before Litestar reads the query string or the
body, so a caller is refused on its headers alone, exactly as the chat
handler does by hand (it stays framework-light: a guard, a kwargs model and a
signature check per request would cost the proxy CPU). Refusals are
:class:`app.errors.OpenAIError`, rendered by the app's exception handlers.

The admin guard lives with the admin API (:mod:`app.auth.admin`): it needs
the key store, which this package must not import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from toolrelay.app.middleware import RequestInfo, request_info

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

    from toolrelay.app.gate import Gate

__all__ = ["Guard", "metered_key_guard", "rate_limit_headers"]

Guard = Callable[["ASGIConnection[Any, Any, Any, Any]", "BaseRouteHandler"], Any]


def metered_key_guard(gate: Gate, *, mode: str, check: Callable[[RequestInfo], None] | None = None, parallel: bool = True) -> Guard:
    """A guard admitting an API key to a route that calls no model, booked like a chat request.

    It authenticates the caller (401, and the failed-auth throttle's 429),
    marks the request metered under ``mode`` (the outer ASGI layer releases
    it once, with the status sent, and the ledger gets its row, refusals
    included), runs ``check`` (a route's own permission, which raises), then
    admits it against the key's request and parallel limits (429 with
    ``x-ratelimit-*`` and ``retry-after``). The :class:`app.gate.Ticket` is
    kept on ``RequestInfo.ticket``; its rate-limit headers are the handler's
    to put on its answer (:func:`rate_limit_headers`). With ``parallel`` false the request takes
    no parallel slot (polling or cancelling a background response, whose run holds one).
    """

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        info = _info(connection)
        await gate.authenticate(connection, info)
        info.mode = mode
        info.metered = True
        if check is not None:
            check(info)
        info.ticket = await gate.admit_unpriced(connection, info, parallel=parallel)

    return guard


def rate_limit_headers(connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, str]:
    """The rate-limit headers of the request's admission ticket (none before admission)."""
    ticket = _info(connection).ticket
    return dict(ticket.headers) if ticket is not None else {}


def _info(connection: ASGIConnection[Any, Any, Any, Any]) -> RequestInfo:
    # Litestar types the scope as a TypedDict; RequestInfo lives in it under a key of ours.
    return request_info(cast("dict[str, Any]", connection.scope))
