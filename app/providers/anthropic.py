"""Anthropic's Messages API as an upstream (``kind = "anthropic"``).

The transport only: the upstream client, timeouts and connection handling
are :class:`~toolrelay.app.providers.openai.OpenAIProvider`'s own (one
transport for every upstream kind); the wire lives in the pure modules
:mod:`~toolrelay.app.providers.anthropic_request` (chat body to Messages
body) and :mod:`~toolrelay.app.providers.anthropic_reply` (Messages replies
and errors to events). The Messages API has no embeddings, legacy
completions or Responses endpoint, so :meth:`AnthropicProvider.forward`
refuses with the 400 every upstream without the endpoint gives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from toolrelay.app.config import UpstreamSettings
from toolrelay.app.events import Event
from toolrelay.app.providers.anthropic_reply import MessagesStreamReader, events_from_message, map_anthropic_error
from toolrelay.app.providers.anthropic_request import messages_request
from toolrelay.app.providers.base import ForwardCall, Health, UpstreamCall, call_headers
from toolrelay.app.providers.forward import unsupported_endpoint
from toolrelay.app.providers.openai import OpenAIProvider, get_json, probe, read_body, read_error_body, read_stream

__all__ = ["ANTHROPIC_BASE_URL", "ANTHROPIC_VERSION", "AnthropicProvider"]

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
#: The API version every request names (the one Anthropic's SDKs send); override with ``headers``.
ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(OpenAIProvider):
    """An upstream that speaks Anthropic's Messages API (``POST /v1/messages``)."""

    kind = "anthropic"

    def __init__(self, name: str, settings: UpstreamSettings, api_key: str | None) -> None:
        super().__init__(name, settings, None)
        self.base_url = (settings.base_url or ANTHROPIC_BASE_URL).rstrip("/")
        self._messages_url = self.base_url + "/v1/messages"
        self._default_max_tokens = settings.default_max_tokens
        headers = {"content-type": "application/json", "accept": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        # The client is made in start() from these; the operator's `headers` win (a newer version, a beta flag).
        self._headers = {**headers, **settings.headers}

    async def complete(self, call: UpstreamCall) -> AsyncIterator[Event]:
        body = messages_request(call.body, default_max_tokens=self._default_max_tokens)
        response = await self._post(self._messages_url, body, call.stream, call_headers(call.request_id, call.headers))
        finished = False
        try:
            if response.status >= 400:
                raise map_anthropic_error(response.status, await read_error_body(response), response.headers, self.name)
            if not call.stream or response.content_type == "application/json":
                for event in events_from_message(await read_body(response, self.name), self.name):
                    yield event
                finished = True
                return
            async for event in read_stream(response, MessagesStreamReader(self.name), self.name):
                yield event
            finished = True
        finally:
            if finished:
                response.release()
            else:
                response.close()  # the upstream learns the client left

    async def forward(self, call: ForwardCall) -> AsyncIterator[bytes]:
        raise unsupported_endpoint(call.model, call.endpoint, f"its upstream '{self.name}' speaks Anthropic's Messages API, which has no such endpoint.")
        yield b""  # pragma: no cover - makes this an async generator, as the protocol says

    async def health(self) -> Health:
        return await probe(self.client, self.base_url + "/v1/models", self.name, self.kind)

    async def list_models(self) -> list[str]:
        # One page of up to 1000 (the API's maximum) holds every Claude model.
        payload = await get_json(self.client, self.base_url + "/v1/models?limit=1000")
        data = payload.get("data") if isinstance(payload, dict) else None
        return [m["id"] for m in data or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
