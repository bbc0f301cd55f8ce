"""Google's Gemini (the Generative Language API) as a native upstream: ``kind = "gemini"``.

The transport only: one long-lived upstream client, as for OpenAI-compatible
upstreams (:mod:`toolrelay.app.providers.openai`), with the request built by
:mod:`~toolrelay.app.providers.gemini_request` and the answer read by
:mod:`~toolrelay.app.providers.gemini_parser` (both pure).

The API key goes in the ``x-goog-api-key`` header, never in the URL
(Google also accepts ``?key=``), so it cannot reach an access log or an
error message that quotes the URL. ``/v1/embeddings`` is served through
``:batchEmbedContents``; the legacy ``/v1/completions`` has no Gemini
counterpart and gets the clear ``unsupported_endpoint`` error.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import orjson

from toolrelay.app.config import UpstreamSettings
from toolrelay.app.errors import OpenAIError, invalid_request
from toolrelay.app.events import Event
from toolrelay.app.jsonbody import JSONValue
from toolrelay.app.providers.base import ForwardCall, Health, UpstreamCall, call_headers
from toolrelay.app.providers.forward import map_forward_error, unsupported_endpoint
from toolrelay.app.providers.gemini_parser import GeminiReader, GeminiSSEParser, map_gemini_error
from toolrelay.app.providers.gemini_request import model_path, to_gemini
from toolrelay.app.providers.openai import dumps_body, get_json, post, probe, read_body, read_error_body, read_stream
from toolrelay.app.providers.openai_parser import malformed_response
from toolrelay.app.providers.upstream_http import UpstreamClient, UpstreamResponse

__all__ = ["DEFAULT_BASE_URL", "GeminiProvider", "embeddings_reply", "embeddings_request"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
_API = "/v1beta/"


def embeddings_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(model path, ``batchEmbedContents`` body) for an OpenAI embeddings body; 400 for token-id input."""
    model = model_path(str(body.get("model") or ""))
    inputs = body.get("input")
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise invalid_request("A Gemini embedding model takes text input (a string or a list of strings), not token ids.", "input")
    dimensions = body.get("dimensions")
    requests: list[dict[str, Any]] = []
    for text in texts:
        request: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
        if isinstance(dimensions, int):
            request["outputDimensionality"] = dimensions
        requests.append(request)
    return model, {"requests": requests}


def embeddings_reply(raw: bytes, model: str, encoding_format: Any, upstream: str) -> bytes:
    """A ``batchEmbedContents`` answer as an OpenAI embeddings list (no usage: Gemini reports none)."""
    payload: JSONValue
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed_response(upstream) from None
    embeddings: JSONValue = payload.get("embeddings") if isinstance(payload, dict) else None
    if not isinstance(embeddings, list):
        raise malformed_response(upstream)
    data: list[dict[str, Any]] = []
    for index, embedding in enumerate(embeddings):
        values: JSONValue = embedding.get("values") if isinstance(embedding, dict) else None
        if not isinstance(values, list):
            raise malformed_response(upstream)
        vector: Any = values
        if encoding_format == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    return orjson.dumps({"object": "list", "data": data, "model": model})


class GeminiProvider:
    """An upstream that speaks Gemini's ``generateContent``."""

    kind = "gemini"

    def __init__(self, name: str, settings: UpstreamSettings, api_key: str | None) -> None:
        self.name = name
        self.settings = settings
        self.base_url = (settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._headers = {"content-type": "application/json", "accept": "application/json", **settings.headers}
        if api_key:
            self._headers["x-goog-api-key"] = api_key
        self._client: UpstreamClient | None = None

    async def start(self) -> None:
        if self._client is None:
            self._client = UpstreamClient(
                self.base_url, headers=self._headers, max_connections=self.settings.max_connections, connect_timeout=self.settings.connect_timeout
            )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def client(self) -> UpstreamClient:
        if self._client is None:
            raise RuntimeError(f"provider {self.name} used before start()")
        return self._client

    def _url(self, model: str, method: str) -> str:
        return f"{self.base_url}{_API}{model}:{method}"

    async def _post(self, url: str, body: dict[str, Any], stream: bool, headers: dict[str, str] | None = None) -> UpstreamResponse:
        # No retry here, as for OpenAI upstreams: a request the upstream already read may be billed.
        return await post(self.client, url, dumps_body(body), stream, self.settings.timeout, headers, self.name)

    async def _read(self, response: UpstreamResponse) -> bytes:
        return await read_body(response, self.name)

    async def _error(self, response: UpstreamResponse) -> OpenAIError:
        return map_gemini_error(response.status, await read_error_body(response), response.headers, self.name)

    async def complete(self, call: UpstreamCall) -> AsyncIterator[Event]:
        request = to_gemini(call.body)
        url = self._url(request.model, "streamGenerateContent?alt=sse" if call.stream else "generateContent")
        response = await self._post(url, request.body, call.stream, call_headers(call.request_id, call.headers))
        finished = False
        try:
            if response.status >= 400:
                raise await self._error(response)
            if not call.stream:
                for event in GeminiReader(self.name).body_events(_json_body(await self._read(response), self.name)):
                    yield event
                finished = True
                return
            async for event in read_stream(response, GeminiSSEParser(self.name), self.name):
                yield event
            finished = True
        finally:
            if finished:
                response.release()
            else:
                response.close()  # the upstream learns the client left

    async def forward(self, call: ForwardCall) -> AsyncIterator[bytes]:
        if call.path != "/embeddings":
            raise unsupported_endpoint(call.model, call.endpoint, f"its upstream '{self.name}' is a Gemini upstream, which has no such endpoint.")
        model, body = embeddings_request(call.body)
        response = await self._post(self._url(model, "batchEmbedContents"), body, False, call_headers(call.request_id, call.headers))
        try:
            if response.status >= 400:
                error = await self._error(response)
                if error.status in (404, 405, 501) and error.code != "model_not_found":
                    raw = orjson.dumps({"error": {"message": error.message}})
                    error = map_forward_error(error.status, raw, {}, self.name, model=call.model, endpoint=call.endpoint)
                raise error
            yield embeddings_reply(await self._read(response), str(call.body.get("model") or ""), call.body.get("encoding_format"), self.name)
        finally:
            response.release()

    async def health(self) -> Health:
        def describe(status: int, raw: bytes) -> tuple[bool, str] | None:
            if map_gemini_error(status, raw, {}, self.name).code == "upstream_auth_error":
                return False, f"reachable, but it rejected the API key (HTTP {status})"
            return None

        return await probe(self.client, self.base_url + _API + "models?pageSize=1", self.name, self.kind, describe)

    async def list_models(self) -> list[str]:
        """The models that can ``generateContent`` (ids without ``models/``); first 1,000."""
        payload = await get_json(self.client, self.base_url + _API + "models?pageSize=1000")
        models = payload.get("models") if isinstance(payload, dict) else None
        return [
            model["name"].removeprefix("models/")
            for model in models or []
            if isinstance(model, dict) and isinstance(model.get("name"), str) and "generateContent" in (model.get("supportedGenerationMethods") or ())
        ]


def _json_body(raw: bytes, upstream: str) -> JSONValue:
    """A plain answer's JSON; the 502 when it is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed_response(upstream) from None
