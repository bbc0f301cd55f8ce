"""The :class:`~toolrelay.app.tracing.api.Tracer` built on the OpenTelemetry SDK, exporting over OTLP/HTTP (protobuf).

Imported only when ``[tracing] enabled`` (the SDK is the ``toolrelay[otel]``
extra). OTLP over HTTP rather than gRPC: the HTTP exporter needs protobuf and
requests, the gRPC one grpcio (a 30 MB native wheel) for the same spans.

The tracer has its own ``TracerProvider`` and its own active-span context
variable, never the SDK's globals, so two servers in one process (the tests)
trace independently, and a library that also uses OpenTelemetry (the MCP SDK
imports the API) neither sees nor changes our spans.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from toolrelay.app import __version__
from toolrelay.app.tracing.api import Attributes, AttributeValue, Span

if TYPE_CHECKING:
    from toolrelay.app.settings import TracingSettings

__all__ = ["OtelTracer", "traces_url"]

_TRACE_HEADERS = (b"traceparent", b"tracestate")


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector given by its base URL (a full ``.../v1/traces`` is kept)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


class _OtelSpan:
    __slots__ = ("raw",)

    def __init__(self, raw: trace.Span) -> None:
        self.raw = raw

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.raw.set_attribute(key, value)

    def set_error(self, error_type: str) -> None:
        self.raw.set_attribute("error.type", error_type)
        self.raw.set_status(trace.Status(trace.StatusCode.ERROR))

    def rename(self, name: str) -> None:
        self.raw.update_name(name)

    def end(self) -> None:
        self.raw.end()


class OtelTracer:
    """Spans recorded by the OpenTelemetry SDK and sent to ``settings.otlp_endpoint`` in batches, off the event loop."""

    enabled = True

    def __init__(self, settings: TracingSettings, *, exporter: SpanExporter | None = None) -> None:
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # headers=None: the exporter reads OTEL_EXPORTER_OTLP_(TRACES_)HEADERS, so a backend's key stays out of the config file.
            exporter = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint))
        resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
        self._provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
        # The batch processor exports from its own thread; OTEL_BSP_* variables tune it.
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("toolrelay", __version__)
        self._propagator = TraceContextTextMapPropagator()
        self._active: ContextVar[trace.Span | None] = ContextVar("toolrelay_active_span", default=None)

    def _parent(self) -> Context:
        active = self._active.get()
        return Context() if active is None else trace.set_span_in_context(active, Context())

    def start_server(self, name: str, headers: Iterable[tuple[bytes, bytes]], attributes: Attributes) -> Span:
        carrier = {key.decode(): value.decode("latin-1") for key, value in headers if key in _TRACE_HEADERS}
        # A malformed traceparent is ignored by the propagator: the request starts a trace of its own.
        parent = self._propagator.extract(carrier, context=Context()) if carrier else Context()
        return _OtelSpan(self._tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes))

    def start(self, name: str, attributes: Attributes, *, client: bool = False) -> Span:
        kind = trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL
        return _OtelSpan(self._tracer.start_span(name, context=self._parent(), kind=kind, attributes=attributes))

    def activate(self, span: Span) -> object:
        return self._active.set(span.raw if isinstance(span, _OtelSpan) else None)

    def deactivate(self, token: object) -> None:
        if isinstance(token, Token):
            self._active.reset(token)  # pyright: ignore[reportUnknownMemberType] - a Token of this variable

    def propagation_headers(self, span: Span) -> dict[str, str]:
        if not isinstance(span, _OtelSpan):
            return {}
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(span.raw, Context()))
        return carrier

    def shutdown(self) -> None:
        self._provider.shutdown()
