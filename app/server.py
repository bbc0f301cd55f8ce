"""Assemble the Litestar application from settings."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, cast

from litestar import Litestar, Request
from litestar.config.cors import CORSConfig
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.response import Response

from toolrelay.app import __version__
from toolrelay.app.config import Settings
from toolrelay.app.database import database_unavailable, unavailable_errors
from toolrelay.app.errors import OpenAIError, error_response, server_error
from toolrelay.app.heap import settle_after_startup
from toolrelay.app.http_guard import HttpGuard
from toolrelay.app.metrics_workers import METRICS_DIR_ENV, WorkerMetrics
from toolrelay.app.middleware import ASGIApp, RequestInfo, request_info, wrap_app
from toolrelay.app.request_errors import openai_validation_error
from toolrelay.app.routes.chat import build_chat_handler
from toolrelay.app.routes.completions import build_completions_handler
from toolrelay.app.routes.embeddings import build_embeddings_handler
from toolrelay.app.routes.health import build_health_handlers, build_metrics_handler
from toolrelay.app.routes.models import build_model_handlers
from toolrelay.app.routes.openapi_docs import attach_protocol_schemas
from toolrelay.app.services import Services

log = logging.getLogger("toolrelay.error")


def _info(request: Request[Any, Any, Any]) -> RequestInfo:
    # Litestar types the scope as a TypedDict; ours is the same ASGI dict.
    return request_info(cast("dict[str, Any]", request.scope))


def _openai_error_handler(request: Request[Any, Any, Any], exc: OpenAIError) -> Response[bytes]:
    return error_response(exc, _info(request))


def _http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        # A typed query parameter or Struct body refused by Litestar: `param` names the field.
        signature = getattr(getattr(request.scope.get("route_handler"), "parsed_fn_signature", None), "parameters", {})
        err = openai_validation_error(exc, signature=signature, query=request.query_params)
    elif status == 404:
        err = OpenAIError(
            404, f"Unknown request URL: {request.method} {request.url.path}. Please check the URL for typos.", type="invalid_request_error", code="unknown_url"
        )
    elif status == 405:
        allow = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
        err = OpenAIError(
            405, f"Method {request.method} is not allowed for {request.url.path}.", type="invalid_request_error", code="method_not_allowed", headers=allow
        )
    elif status == 413:
        err = OpenAIError(413, "Request body too large.", type="invalid_request_error", code="request_too_large")
    elif status < 500:
        err = OpenAIError(status, str(exc.detail or "Invalid request."), type="invalid_request_error")
    else:
        err = server_error()
    return error_response(err, _info(request))


def _unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("unhandled %s in %s %s (request %s)", type(exc).__name__, request.method, request.url.path, _info(request).request_id, exc_info=exc)
    return error_response(server_error(), _info(request))


def _database_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.warning("database unavailable in %s %s (request %s): %s", request.method, request.url.path, _info(request).request_id, type(exc).__name__)
    return error_response(database_unavailable(), _info(request))


def _flush_log_handlers() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


def create_litestar(settings: Settings, services: Services, extra_handlers: list[Any] | None = None) -> Litestar:
    handlers = [
        build_chat_handler(services),
        build_embeddings_handler(services),
        build_completions_handler(services),
        *build_model_handlers(services),
        *build_health_handlers(services),
        build_metrics_handler(services),
        *(extra_handlers or []),
    ]
    cors = (
        CORSConfig(allow_origins=settings.server.cors_origins, allow_headers=["*"], expose_headers=["x-request-id"]) if settings.server.cors_origins else None
    )
    exception_handlers: dict[Any, Any] = {OpenAIError: _openai_error_handler, HTTPException: _http_error_handler, Exception: _unexpected_error_handler}
    if services.database is not None:
        # A store that could not reach the shared database within its timeout: 503, never a 500 (psycopg imported only here).
        exception_handlers.update(dict.fromkeys(unavailable_errors(), _database_error_handler))
    app = Litestar(
        route_handlers=handlers,
        on_startup=[services.start],
        # Logs flushed last: uvicorn re-raises SIGTERM once shutdown is over, which ends the process
        # without atexit, so the writer thread's last batch must be out by then (app/logs/).
        on_shutdown=[services.close, _flush_log_handlers],
        exception_handlers=exception_handlers,
        openapi_config=OpenAPIConfig(
            title="toolrelay", version=__version__, path="/docs", description="OpenAI-compatible Chat Completions server with an agent mode."
        ),
        request_max_body_size=settings.server.max_body_bytes,
        cors_config=cors,
        logging_config=None,
        debug=False,
    )
    attach_protocol_schemas(app)
    return app


def create_app(settings: Settings, services: Services | None = None) -> tuple[ASGIApp, Services]:
    """The ASGI application to serve, and the services behind it."""
    services = services or Services(settings)
    # The agent, tools and admin routes plug in here.
    from toolrelay.app.wiring import extend_services

    extra = extend_services(services)
    litestar = create_litestar(settings, services, extra)
    gate = services.gate
    # Asked per request only for a Host the guard does not know: keys created later turn auth on.
    guard = HttpGuard(settings.server, auth_enabled=lambda: bool(getattr(gate, "enabled", False)))
    asgi = wrap_app(cast("ASGIApp", litestar), gate=gate, log_requests=settings.server.access_log, metrics=services.metrics, guard=guard)
    if services.tracer.enabled:
        from toolrelay.app.tracing.asgi import traced_app

        asgi = traced_app(asgi, services.tracer)
    return asgi, services


def app_from_env() -> ASGIApp:
    """ASGI factory for multi-worker serving (``toolrelay serve --workers N``).

    Each worker process builds its own app from the same configuration, which
    reaches it through ``TOOLRELAY_*`` environment variables.
    """
    from toolrelay.app.cli import configure_logging
    from toolrelay.app.config import load_settings

    settings = load_settings()
    configure_logging(settings.server.log_level, settings.server.log_format)
    asgi, services = create_app(settings)
    metrics_dir = os.environ.get(METRICS_DIR_ENV)
    if metrics_dir:
        # One scrape counts every worker's requests (app/metrics_workers.py).
        workers = WorkerMetrics(Path(metrics_dir), services.metrics)
        services.on_start(workers.start)
        services.on_close(workers.close)
    services.on_start(settle_after_startup)
    return asgi
