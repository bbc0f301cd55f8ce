"""A client span per upstream call (GenAI semantic conventions), around any provider; used only when tracing is on.

Each upstream provider is wrapped once at start-up, below the failover
router, so every attempt of a routed model is a span of its own. The span's
W3C ``traceparent`` goes upstream with the call (``UpstreamCall.headers``),
so an upstream that traces (vLLM, a gateway) continues the client's trace.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from toolrelay.app.errors import OpenAIError
from toolrelay.app.events import ChoiceDelta, ChoiceMessage, Event, Failure, UsageReport
from toolrelay.app.providers.base import ForwardCall, Health, Provider, UpstreamCall
from toolrelay.app.tracing.api import Span, Tracer

__all__ = ["TracedProvider", "provider_name"]

# gen_ai.provider.name (and the older gen_ai.system) by upstream kind; "openai" stands for any OpenAI-compatible server.
_PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "local": "llama_cpp"}
# gen_ai.operation.name of a passed-through endpoint.
_OPERATIONS = {"/embeddings": "embeddings", "/completions": "text_completion", "/responses": "chat"}
# Usage and model of a passed-through reply, read from its ends only: an embeddings body
# can be tens of megabytes of vectors, which are never parsed (docs/architecture.md).
_PROMPT_TOKENS = re.compile(rb'"(?:prompt_tokens|input_tokens)"\s*:\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"(?:completion_tokens|output_tokens)"\s*:\s*(\d+)')
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
_ENDS = 2048


def provider_name(kind: str) -> str:
    return _PROVIDER_NAMES.get(kind, kind)


def _error_type(err: OpenAIError) -> str:
    return err.code or str(err.status)


class TracedProvider:
    """``inner`` with a client span around each ``complete`` and ``forward`` call."""

    def __init__(self, inner: Provider, tracer: Tracer, base_url: str) -> None:
        self._inner = inner
        self._tracer = tracer
        self.name = inner.name
        self.kind = inner.kind
        system = provider_name(inner.kind)
        parts = urlsplit(base_url)
        self._attributes: dict[str, str | int] = {"gen_ai.provider.name": system, "gen_ai.system": system}
        if parts.hostname:
            self._attributes["server.address"] = parts.hostname
            self._attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)

    def __getattr__(self, name: str) -> Any:
        # Provider-specific members (the local model's, the OpenAI session) stay reachable.
        return getattr(self._inner, name)

    async def start(self) -> None:
        await self._inner.start()

    async def close(self) -> None:
        await self._inner.close()

    async def health(self) -> Health:
        return await self._inner.health()

    async def list_models(self) -> list[str]:
        return await self._inner.list_models()

    def _start(self, operation: str, body: dict[str, Any], stream: bool) -> Span:
        model = body.get("model")
        attributes: dict[str, Any] = {**self._attributes, "gen_ai.operation.name": operation, "toolrelay.upstream": self.name}
        if isinstance(model, str):
            attributes["gen_ai.request.model"] = model
        for field, key in (
            ("max_completion_tokens", "gen_ai.request.max_tokens"),
            ("max_tokens", "gen_ai.request.max_tokens"),
            ("temperature", "gen_ai.request.temperature"),
        ):
            value = body.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool) and key not in attributes:
                attributes[key] = value
        attributes["toolrelay.stream"] = stream
        return self._tracer.start(f"{operation} {model}" if isinstance(model, str) else operation, attributes, client=True)

    def _headers(self, span: Span, given: dict[str, str] | None) -> dict[str, str]:
        headers = self._tracer.propagation_headers(span)
        return {**given, **headers} if given else headers

    async def complete(self, call: UpstreamCall) -> AsyncIterator[Event]:
        span = self._start("chat", call.body, call.stream)
        call = UpstreamCall(call.body, call.stream, call.request_id, self._headers(span, call.headers))
        finish_reasons: list[str] = []
        usage: dict[str, Any] | None = None
        try:
            async for event in self._inner.complete(call):
                kind = type(event)
                if kind is ChoiceDelta or kind is ChoiceMessage:
                    reason = event.finish_reason  # type: ignore[union-attr]
                    if reason:
                        finish_reasons.append(reason)
                elif kind is UsageReport:
                    usage = event.usage  # type: ignore[union-attr]
                elif kind is Failure:
                    span.set_error(_error_type(event.error))  # type: ignore[union-attr]
                yield event
        except OpenAIError as err:
            span.set_error(_error_type(err))
            raise
        except asyncio.CancelledError:
            span.set_error("cancelled")
            raise
        finally:
            if finish_reasons:
                span.set_attribute("gen_ai.response.finish_reasons", finish_reasons)
            if usage is not None:
                for field, key in (("prompt_tokens", "gen_ai.usage.input_tokens"), ("completion_tokens", "gen_ai.usage.output_tokens")):
                    value = usage.get(field)
                    if isinstance(value, int):
                        span.set_attribute(key, value)
            span.end()

    async def forward(self, call: ForwardCall) -> AsyncIterator[bytes]:
        span = self._start(_OPERATIONS.get(call.path, call.path.strip("/")), call.body, call.stream)
        call = ForwardCall(
            call.path, call.body, call.stream, call.model, call.endpoint, call.request_id, call.max_event_bytes, self._headers(span, call.headers)
        )
        first: bytes | None = None
        last: bytes | None = None
        try:
            async for payload in self._inner.forward(call):
                if first is None:
                    first = payload
                if payload != b"[DONE]":
                    last = payload
                yield payload
        except OpenAIError as err:
            span.set_error(_error_type(err))
            raise
        except asyncio.CancelledError:
            span.set_error("cancelled")
            raise
        finally:
            if first is not None:
                _reply_attributes(span, first[:_ENDS], (last or first)[-_ENDS:])
            span.end()


def _reply_attributes(span: Span, head: bytes, tail: bytes) -> None:
    model = _MODEL.search(head) or _MODEL.search(tail)
    if model:
        span.set_attribute("gen_ai.response.model", model.group(1).decode("utf-8", "replace"))
    prompt = _PROMPT_TOKENS.search(tail)
    if prompt:
        span.set_attribute("gen_ai.usage.input_tokens", int(prompt.group(1)))
    completion = _COMPLETION_TOKENS.search(tail)
    if completion:
        span.set_attribute("gen_ai.usage.output_tokens", int(completion.group(1)))
