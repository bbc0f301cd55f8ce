"""The tracing interface the server is written against, and its no-op implementation.

Code that records spans receives a :class:`Tracer` explicitly (from
``Services.tracer``) and never looks one up in a module global. The default is
:data:`NOOP_TRACER`: its methods return at once and import nothing, so a server
with tracing off pays a few attribute calls per agent step and nothing on the
proxy path (the ASGI and provider wrappers are only put in place when
``enabled``). The OpenTelemetry implementation (:mod:`toolrelay.app.tracing.otel`)
is built only when ``[tracing] enabled`` is set.

Attribute values are names, numbers and ids only: never message text, tool
arguments, keys or header values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

__all__ = ["NOOP_SPAN", "NOOP_TRACER", "AttributeValue", "Attributes", "NoopTracer", "Span", "Tracer"]

AttributeValue = str | int | float | bool | Sequence[str]
Attributes = Mapping[str, AttributeValue]


class Span(Protocol):
    """One operation being timed; ended exactly once by the code that started it."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def set_error(self, error_type: str) -> None:
        """Mark the span failed; ``error_type`` is a low-cardinality code (``rate_limit_exceeded``, ``cancelled``)."""
        ...

    def rename(self, name: str) -> None: ...

    def end(self) -> None: ...


class Tracer(Protocol):
    #: False for the no-op tracer: callers that would build attributes only for a span may skip the work.
    enabled: bool

    def start_server(self, name: str, headers: Iterable[tuple[bytes, bytes]], attributes: Attributes) -> Span:
        """The span of one HTTP request, a child of the client's W3C ``traceparent`` among ``headers`` if any."""
        ...

    def start(self, name: str, attributes: Attributes, *, client: bool = False) -> Span:
        """A span that is a child of this task's active span (see :meth:`activate`); ``client`` for calls to an upstream."""
        ...

    def activate(self, span: Span) -> object:
        """Make ``span`` the parent of spans started in this task (and in tasks it starts); returns a token for :meth:`deactivate`."""
        ...

    def deactivate(self, token: object) -> None: ...

    def propagation_headers(self, span: Span) -> dict[str, str]:
        """The W3C trace-context headers (``traceparent``, ``tracestate``) naming ``span`` as the parent."""
        ...

    def shutdown(self) -> None:
        """Export what is still buffered (blocking, bounded); called once at server shutdown."""
        ...


class _NoopSpan:
    __slots__ = ()

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass

    def set_error(self, error_type: str) -> None:
        pass

    def rename(self, name: str) -> None:
        pass

    def end(self) -> None:
        pass


NOOP_SPAN: Span = _NoopSpan()


class NoopTracer:
    """Tracing off: every span is :data:`NOOP_SPAN`."""

    __slots__ = ()
    enabled = False

    def start_server(self, name: str, headers: Iterable[tuple[bytes, bytes]], attributes: Attributes) -> Span:
        return NOOP_SPAN

    def start(self, name: str, attributes: Attributes, *, client: bool = False) -> Span:
        return NOOP_SPAN

    def activate(self, span: Span) -> object:
        return None

    def deactivate(self, token: object) -> None:
        pass

    def propagation_headers(self, span: Span) -> dict[str, str]:
        return {}

    def shutdown(self) -> None:
        pass


NOOP_TRACER: Tracer = NoopTracer()
