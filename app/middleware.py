"""The outermost ASGI layer: request id, the end of a metered request, access log line, last-resort errors.

It wraps the whole Litestar app rather than being a Litestar middleware so
that every response gets an ``x-request-id``, including the ones Litestar
produces before routing (unknown path, wrong method).

It owns the end of every metered request (:attr:`RequestInfo.metered`): it
calls the gate's ``release`` exactly once, with the status that was really
sent, when the response's last message is about to go out, or when the app
returns without one (the client went away, an exception). Releasing just
before the last message rather than after it keeps a sequential client from
racing its own slot: with Redis, freeing a parallel slot is a round trip,
and a client with ``max_parallel = 1`` that sends its next request the
moment it has the whole answer must find the slot free.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from toolrelay.app.errors import error_messages, server_error
from toolrelay.app.ids import new_request_id
from toolrelay.app.logs.access import AccessLog
from toolrelay.app.logs.safe import log_safe as log_safe  # re-exported: its home before app/logs/
from toolrelay.app.security_headers import API_POLICY, DOCS_PREFIX, SECURITY_HEADERS, UI_POLICY, UI_PREFIX, docs_send

if TYPE_CHECKING:
    from toolrelay.app.gate import Gate, Ticket
    from toolrelay.app.usage import RequestUsage

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]

access_log = logging.getLogger("toolrelay.access")
_API_SECURITY = (*SECURITY_HEADERS, API_POLICY)
_UI_SECURITY = (*SECURITY_HEADERS, UI_POLICY)
_PAGE_PREFIXES = (DOCS_PREFIX, UI_PREFIX)
error_log = logging.getLogger("toolrelay.error")


class RequestInfo:
    """What the handlers learn about a request, for the gate's release, the access log and the usage ledger."""

    __slots__ = (
        "deployment",
        "ending",
        "error_code",
        "key_id",
        "metered",
        "mode",
        "model",
        "request_id",
        "served_model",
        "started",
        "status",
        "ticket",
        "upstream",
        "usage",
    )

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.started = time.perf_counter()
        self.model: str | None = None
        self.mode: str | None = None
        self.status = 0
        self.key_id: str | None = None
        self.upstream: str | None = None
        # Set by the failover router (app/providers/routing/) when a deployment answered: the
        # model and deployment named in x-toolrelay-model / x-toolrelay-deployment.
        self.served_model: str | None = None
        self.deployment: str | None = None
        self.error_code: str | None = None
        # Set by a handler whose requests the gate books (released at the end, refused ones too).
        self.metered = False
        # What admission decided (the gate's), until release.
        self.ticket: Ticket | None = None
        # What the request used; attached by the handler when the body ends.
        self.usage: RequestUsage | None = None
        # A streamed body's last step, awaited once before release: Litestar leaves the body's
        # generator suspended when a disconnect cancels a send, and estimating the usage of a
        # cut stream awaits a token count, which must not run inside that cancelled scope.
        self.ending: Callable[[], Awaitable[None]] | None = None

    def hand_off(self) -> RequestInfo:
        """Give the end of this request to a new owner that outlives the HTTP exchange (a
        ``background: true`` response): the returned copy carries the ticket, the slot and the
        ledger row, and its owner must pass it to ``gate.release`` exactly once. This request stops
        being metered, so the ASGI layer only logs it: one release, never two, never none."""
        heir = RequestInfo(self.request_id)
        heir.started = self.started
        heir.model = self.model
        heir.mode = self.mode
        heir.key_id = self.key_id
        heir.upstream = self.upstream
        heir.ticket = self.ticket
        heir.metered = True
        self.metered = False
        return heir

    @property
    def prompt_tokens(self) -> int | None:
        usage = self.usage
        return None if usage is None else usage.prompt_tokens

    @property
    def completion_tokens(self) -> int | None:
        usage = self.usage
        return None if usage is None else usage.completion_tokens


#: The HTTP request this task serves, for code far from the handler that must note something on it
#: (the failover router: which deployment answered). Each request runs in its own task (context).
current_request: ContextVar[RequestInfo | None] = ContextVar("toolrelay_current_request", default=None)


def request_info(scope: Mapping[str, Any]) -> RequestInfo:
    """The request's :class:`RequestInfo`, made on first use and kept on the ASGI scope.

    ``scope`` is the raw ASGI dict or Litestar's view of it (a TypedDict, which
    does not declare our key); both are the same mutable dict at run time.
    """
    info = scope.get("toolrelay")
    if info is None:
        info = scope["toolrelay"] = RequestInfo(new_request_id())  # pyright: ignore[reportIndexIssue] - a dict, see above
    return info


def wrap_app(app: ASGIApp, *, gate: Gate, log_requests: bool = True, metrics: Any = None, guard: Any = None) -> ASGIApp:
    """``gate`` releases metered requests; ``guard`` (:class:`app.http_guard.HttpGuard`) refuses
    cross-site and rebinding requests before any handler."""
    access = AccessLog() if log_requests else None

    async def toolrelay_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        info = request_info(scope)
        id_header = (b"x-request-id", info.request_id.encode())
        path = scope.get("path", "")
        # The docs pages and the console get their own policy (app/security_headers.py), everything else the strictest.
        docs = False
        security = _API_SECURITY
        if path.startswith(_PAGE_PREFIXES):
            docs = path.startswith(DOCS_PREFIX)
            security = SECURITY_HEADERS if docs else _UI_SECURITY
        started = False
        released = False

        async def release() -> None:
            nonlocal released
            released = True
            ending = info.ending
            # The pyright ignores below: the checker reads this file as ``app.middleware`` and the
            # gate's signature through the ``toolrelay.app`` symlinks (.ci/typing), so it sees two
            # RequestInfo classes where Python has one.
            try:
                if ending is None:
                    await gate.release(info)  # pyright: ignore[reportArgumentType] - same class, see above
                    return
                info.ending = None
                # Nothing cancels this: a stream sends its last message after its disconnect watch
                # stopped (app/sse_response.py), and a request that was cancelled ends here in the
                # finally below, the cancellation spent. (An anyio shield, used here before, cost a
                # stream ~30 us and does not stop a task.cancel() anyway.)
                try:
                    await ending()
                finally:
                    await gate.release(info)  # pyright: ignore[reportArgumentType] - same class, see above
            except Exception:  # noqa: BLE001 - the books must not break or replace the response
                error_log.exception("could not account for request %s", info.request_id)

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal started
            kind = message["type"]
            if kind == "http.response.start":
                started = True
                info.status = message["status"]
                if metrics is not None:
                    metrics.response_started(info, message.get("headers", ()))
                if info.deployment is None:
                    message["headers"] = [*message.get("headers", ()), id_header, *security]
                else:
                    message["headers"] = [*message.get("headers", ()), id_header, *security, *_served_headers(info)]
            elif kind == "http.response.body" and not message.get("more_body") and info.metered and not released:
                await release()
            await send(message)

        current_request.set(info)
        if metrics is not None:
            metrics.inflight += 1  # taken back in record_request, in the finally below
        try:
            refusal = guard.check(scope) if guard is not None else None
            if refusal is None:
                await app(scope, receive, docs_send(send_with_id) if docs else send_with_id)
            else:
                info.error_code = refusal.code
                for message in error_messages(refusal):
                    await send_with_id(message)
        except Exception:  # noqa: BLE001 - the last line of defence: never a traceback to the client
            error_log.exception("unhandled error in %s %s (request %s)", scope.get("method"), scope.get("path"), info.request_id)
            if not started:
                err = server_error()
                info.status = err.status
                for message in error_messages(err, id_header, *_API_SECURITY):
                    await send(message)
        finally:
            if info.metered and not released:
                await release()
            if metrics is not None:
                metrics.record_request(scope, info, time.perf_counter() - info.started)
            if access is not None:
                access.record(scope, info)  # pyright: ignore[reportArgumentType] - same class, see release()

    return toolrelay_asgi


def _served_headers(info: RequestInfo) -> tuple[tuple[bytes, bytes], ...]:
    # Names from the configuration (latin-1 safe header values), never the client's text.
    return (
        (b"x-toolrelay-model", (info.served_model or "").encode("latin-1", "replace")),
        (b"x-toolrelay-deployment", (info.deployment or "").encode("latin-1", "replace")),
    )
