"""The server span of every HTTP request: an ASGI layer outside ``wrap_app``, put in place only when tracing is on."""

from __future__ import annotations

from typing import Any

from toolrelay.app.middleware import ASGIApp, request_info
from toolrelay.app.tracing.api import Tracer

__all__ = ["traced_app"]

# The path is the client's text: bounded like the access line's.
_MAX_PATH_CHARS = 512


def traced_app(app: ASGIApp, tracer: Tracer) -> ASGIApp:
    """``app`` with a server span per HTTP request (HTTP semantic conventions plus ``toolrelay.request_id``).

    The span is the active one while the request runs, so upstream calls,
    agent steps and tool calls made for it are its children; a client's W3C
    ``traceparent`` makes it a child of the client's span.
    """

    async def toolrelay_traced(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        info = request_info(scope)  # the same RequestInfo wrap_app then uses (kept on the scope)
        method = str(scope.get("method", ""))
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.path": str(scope.get("path", ""))[:_MAX_PATH_CHARS],
            "url.scheme": str(scope.get("scheme", "http")),
            "network.protocol.version": str(scope.get("http_version", "1.1")),
            "toolrelay.request_id": info.request_id,
        }
        server = scope.get("server")
        if server and server[1] is not None:
            attributes["server.port"] = int(server[1])
        span = tracer.start_server(method, scope.get("headers") or (), attributes)
        token = tracer.activate(span)
        try:
            await app(scope, receive, send)
        finally:
            tracer.deactivate(token)
            route = scope.get("path_template") if scope.get("route_handler") is not None else None
            if route:
                span.set_attribute("http.route", route)
                span.rename(f"{method} {route}")
            span.set_attribute("http.response.status_code", info.status)
            if info.mode and info.model:
                # Only a routed model (canonical id from the configuration), as in the access line.
                span.set_attribute("toolrelay.mode", info.mode)
                span.set_attribute("gen_ai.request.model", info.model)
            if info.key_id:
                span.set_attribute("toolrelay.key_id", info.key_id)  # the key's public id, never its secret
            if info.deployment:
                span.set_attribute("toolrelay.deployment", info.deployment)
            if info.status >= 500 or info.status == 0:
                span.set_error(info.error_code or (str(info.status) if info.status else "no_response"))
            span.end()

    return toolrelay_traced
