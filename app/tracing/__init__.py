"""Tracing: a small interface (:class:`Tracer`), a no-op default and an OpenTelemetry implementation built only when enabled."""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolrelay.app.tracing.api import NOOP_SPAN, NOOP_TRACER, Attributes, AttributeValue, NoopTracer, Span, Tracer

if TYPE_CHECKING:
    from toolrelay.app.settings import TracingSettings

__all__ = ["NOOP_SPAN", "NOOP_TRACER", "AttributeValue", "Attributes", "NoopTracer", "Span", "Tracer", "build_tracer"]


def build_tracer(settings: TracingSettings) -> Tracer:
    """The OpenTelemetry tracer when ``settings.enabled`` (the ``toolrelay[otel]`` extra), else :data:`NOOP_TRACER`."""
    if not settings.enabled:
        return NOOP_TRACER
    try:
        from toolrelay.app.tracing.otel import OtelTracer
    except ImportError as exc:
        raise RuntimeError(f"[tracing] enabled needs the OpenTelemetry SDK: pip install 'toolrelay[otel]' ({exc})") from None
    return OtelTracer(settings)
