"""Clients on a running relay: the OpenAI SDK (sync and async) and httpx, with the test key.

Every suite used to build these by hand with slightly different timeouts;
one place keeps the defaults (no retries, so a failure shows at once) alike.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai

from fakes.server import RunningServer

__all__ = ["CLIENT_KEY", "async_sdk", "rest", "sdk", "stream_raw"]

#: The key clients send when auth is off (any key is accepted then).
CLIENT_KEY = "sk-test"


def sdk(
    relay: RunningServer,
    key: str = CLIENT_KEY,
    *,
    max_retries: int = 0,
    timeout: float = 60.0,
    **options: Any,
) -> openai.OpenAI:
    """An ``openai.OpenAI`` on ``relay`` (use it as a context manager)."""
    return openai.OpenAI(
        base_url=relay.base_url,
        api_key=key,
        max_retries=max_retries,
        timeout=timeout,
        **options,
    )


def async_sdk(
    relay: RunningServer,
    key: str = CLIENT_KEY,
    *,
    max_retries: int = 0,
    timeout: float = 60.0,
    **options: Any,
) -> openai.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` on ``relay`` (``await client.close()`` when done)."""
    return openai.AsyncOpenAI(
        base_url=relay.base_url,
        api_key=key,
        max_retries=max_retries,
        timeout=timeout,
        **options,
    )


def rest(relay: RunningServer, key: str | None = CLIENT_KEY, *, timeout: float = 30.0) -> httpx.Client:
    """An ``httpx.Client`` on the relay's root URL sending ``Bearer <key>`` (no header for ``key=None``)."""
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.Client(base_url=relay.root_url, timeout=timeout, headers=headers)


def stream_raw(http: httpx.Client, body: dict[str, Any], path: str = "/v1/chat/completions") -> tuple[httpx.Response, bytes]:
    """POST ``body`` as JSON and read the whole (streamed) response body as bytes."""
    with http.stream("POST", path, json=body) as response:
        raw = response.read()
    return response, raw
