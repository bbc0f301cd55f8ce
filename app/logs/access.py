"""The access line: one per HTTP request, written when the request ends (app/middleware.py).

Fields: method, path, status, latency, and once known the routed model, the mode, the tokens, the
key id, the error code and the request id; never a query string, a header or a body (they can hold
keys and user data). Client text (path, model) goes through :func:`log_safe` in both formats.

Lines go through the ``toolrelay.access`` logger, so any handler an embedding application attaches
to it (or to ``toolrelay`` or the root logger) receives them as records: the message is the plain
line and the record carries the fields in ``record.access``. When the only handler the logger
would reach is toolrelay's own :class:`WriterHandler` (what ``toolrelay serve`` installs), the line
skips the ``LogRecord`` and is handed to that handler's writer directly, in its format: the same
bytes for a fraction of the CPU (``bench/access_log.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from toolrelay.app.logs.formats import ACCESS_FIELDS, WriterHandler
from toolrelay.app.logs.safe import MAX_FIELD_CHARS, MAX_MODEL_CHARS, MAX_PATH_CHARS, log_safe

if TYPE_CHECKING:
    from toolrelay.app.middleware import RequestInfo

ACCESS_LOGGER = "toolrelay.access"
_INFO = logging.INFO


class AccessLog:
    """Writes the access line of each request to ``logger`` (by default ``toolrelay.access``)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)

    def record(self, scope: Mapping[str, Any], info: RequestInfo) -> None:
        logger = self.logger
        if not logger.isEnabledFor(_INFO):
            return
        latency_ms = (time.perf_counter() - info.started) * 1000
        method = log_safe(str(scope.get("method", "-")), MAX_FIELD_CHARS)
        path = log_safe(str(scope.get("path", "-")), MAX_PATH_CHARS)
        mode = info.mode
        # Only a routed model: an unknown id is the client's text, not something this server served.
        model = log_safe(info.model, MAX_MODEL_CHARS) if info.model and mode else None
        usage = info.usage
        prompt = None if usage is None else usage.prompt_tokens
        completion = None if usage is None else (usage.completion_tokens or 0)
        key = log_safe(info.key_id, MAX_FIELD_CHARS) if info.key_id else None
        error = log_safe(info.error_code, MAX_FIELD_CHARS) if info.error_code else None
        cache_hit = usage is not None and usage.cache_hit
        handler = _sole_writer(logger)
        if handler is not None and handler.log_format == "plain":
            message = _plain(method, path, info.status, latency_ms, model, mode, prompt, completion, key, error, cache_hit, info.request_id)
            handler.writer.write(f"{handler.clock.stamp(time.time())} INFO {logger.name} {message}\n")
            return
        fields = {
            "method": method,
            "path": path,
            "status": info.status,
            "latency_ms": round(latency_ms, 1),
            "model": model,
            "mode": mode,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "key": key,
            "error": error,
            "cache_hit": cache_hit,
            "request_id": info.request_id,
        }
        if handler is not None:
            head = {"time": handler.clock.stamp(time.time()), "level": "INFO", "logger": logger.name}
            handler.writer.write(orjson.dumps(head | fields).decode() + "\n")
            return
        message = _plain(method, path, info.status, latency_ms, model, mode, prompt, completion, key, error, cache_hit, info.request_id)
        logger.info(message, extra={ACCESS_FIELDS: fields})


def _plain(
    method: str,
    path: str,
    status: int,
    latency_ms: float,
    model: str | None,
    mode: str | None,
    prompt: int | None,
    completion: int | None,
    key: str | None,
    error: str | None,
    cache_hit: bool,
    request_id: str,
) -> str:
    line = f"{method} {path} {status} {latency_ms:.1f}ms"
    if model:
        line += f" model={model}"
    if mode:
        line += f" mode={mode}"
    if prompt is not None:
        line += f" tokens={prompt}+{completion}"
    if key:
        line += f" key={key}"
    if error:
        line += f" error={error}"
    if cache_hit:
        line += " cache=hit"  # answered from the response cache ([cache]): no upstream call, no cost
    return f"{line} id={request_id}"


def _sole_writer(logger: logging.Logger) -> WriterHandler | None:
    """toolrelay's handler when it is the only one a record of ``logger`` would reach, and nothing
    (a filter, a handler level) would treat the record differently from a direct write."""
    sole: WriterHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if sole is not None or type(handler) is not WriterHandler or handler.filters or handler.level > _INFO:
                return None
            sole = handler
        if not current.propagate:
            break
        current = current.parent
    return sole
