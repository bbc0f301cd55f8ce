"""The checkpoint every API request passes: who is calling, may they, and what did it cost.

:class:`OpenGate` is the zero-configuration gate (local use, no keys): it
admits everything and keeps no records. The keyed gate in :mod:`app.auth`
replaces it when API keys exist.
"""

from __future__ import annotations

from typing import Any, Protocol

from toolrelay.app.middleware import RequestInfo


class Gate(Protocol):
    enabled: bool

    async def authenticate(self, request: Any, info: RequestInfo) -> None:
        """Raise a 401 :class:`app.errors.OpenAIError` unless the caller is known."""

    async def admit(self, request: Any, info: RequestInfo, payload: dict[str, Any], route: Any) -> None:
        """Raise 403/404/429 unless this key may make this request now."""

    async def release(self, info: RequestInfo, usage: Any) -> None:
        """The request ended (``usage`` is None when it never reached a model)."""

    async def check_step(self, info: RequestInfo, body: dict[str, Any], spent: dict[str, Any] | None) -> None:
        """Before each model call of an agent run (``body``, after calls that used ``spent``):
        raise 400/429 when the run could exceed the per-request cost cap or the key's budget."""

    async def admit_unpriced(self, request: Any, info: RequestInfo) -> None:
        """Like :meth:`admit` for a request that calls no model (rate and parallel limits only)."""

    def headers(self, info: RequestInfo) -> dict[str, str]:
        """Rate-limit headers for the response."""

    def allows_model(self, info: RequestInfo, model_id: str) -> bool:
        """Whether the authenticated caller may use ``model_id`` (filters /v1/models)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class OpenGate:
    enabled = False

    async def authenticate(self, request: Any, info: RequestInfo) -> None:
        info.key_id = None

    async def admit(self, request: Any, info: RequestInfo, payload: dict[str, Any], route: Any) -> None:
        return None

    async def admit_unpriced(self, request: Any, info: RequestInfo) -> None:
        return None

    async def release(self, info: RequestInfo, usage: Any) -> None:
        return None

    async def check_step(self, info: RequestInfo, body: dict[str, Any], spent: dict[str, Any] | None) -> None:
        return None

    def headers(self, info: RequestInfo) -> dict[str, str]:
        return {}

    def allows_model(self, info: RequestInfo, model_id: str) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
