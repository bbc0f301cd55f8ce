"""The checkpoint every API request passes: who is calling, may they, and what did it cost.

:class:`OpenGate` is the zero-configuration gate (local use, no keys): it
admits everything and keeps no records. The keyed gate in :mod:`app.auth`
replaces it when API keys exist.

The life of a metered request (chat completions, memories): the handler
calls :meth:`Gate.authenticate`, then :meth:`Gate.admit` (or
:meth:`Gate.admit_unpriced`) and keeps the returned :class:`Ticket` on the
request's :class:`app.middleware.RequestInfo` (its rate-limit headers go on
the response); when the body ends it attaches a
:class:`app.usage.RequestUsage` there. The outermost ASGI layer
(:func:`app.middleware.wrap_app`) owns the end: it calls
:meth:`Gate.release` exactly once, when the status has been sent, also for
requests refused before admission, a client that went away, or an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from toolrelay.app.middleware import RequestInfo


class Ticket(Protocol):
    """What admission decided, kept on ``RequestInfo.ticket`` until release."""

    # Read-only here (a property in a protocol): a gate's own ticket may hold a
    # plain dict that it replaces, which a mutable ``Mapping`` member would refuse.
    @property
    def headers(self) -> Mapping[str, str]:
        """Rate-limit headers for the response."""
        ...


class OpenTicket:
    """The ticket of the open gate: no limits, so no headers."""

    __slots__ = ()
    headers: Mapping[str, str] = MappingProxyType({})


OPEN_TICKET = OpenTicket()


class Gate(Protocol):
    @property
    def enabled(self) -> bool:
        """Whether callers must authenticate (the keyed gate computes it; the open gate says no)."""
        ...

    async def authenticate(self, request: Any, info: RequestInfo) -> None:
        """Raise a 401 :class:`app.errors.OpenAIError` unless the caller is known."""

    async def admit(self, request: Any, info: RequestInfo, payload: dict[str, Any], route: Any) -> Ticket:
        """Raise 403/404/429 unless this key may make this request now."""
        ...

    async def release(self, info: RequestInfo) -> None:
        """The request ended and ``info.status`` was sent: book ``info.usage`` (None when it
        reached no model), free what ``info.ticket`` holds. Called once, by the outer ASGI layer
        (or by the owner :meth:`RequestInfo.hand_off` gave the request to)."""

    async def check_step(self, info: RequestInfo, body: dict[str, Any], spent: dict[str, Any] | None) -> None:
        """Before each model call of an agent run (``body``, after calls that used ``spent``):
        raise 400/429 when the run could exceed the per-request cost cap or the key's budget."""

    async def admit_unpriced(self, request: Any, info: RequestInfo, *, parallel: bool = True) -> Ticket:
        """Like :meth:`admit` for a request that calls no model (rate and, unless ``parallel`` is
        false, parallel limits only)."""
        ...

    def allows_model(self, info: RequestInfo, model_id: str) -> bool:
        """Whether the authenticated caller may use ``model_id`` (filters /v1/models)."""
        ...

    def mcp_servers_for(self, key_id: str | None) -> tuple[str, ...] | None:
        """The ``[mcp.servers]`` names whose tools the caller (key ``key_id``) may use; None: every one."""
        ...

    def use_model_catalogue(self, catalogue: Callable[[], list[str]]) -> None:
        """Every model id the server serves (read when a key is refused a model, to name the ones it may use)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class OpenGate:
    enabled = False

    async def authenticate(self, request: Any, info: RequestInfo) -> None:
        info.key_id = None

    async def admit(self, request: Any, info: RequestInfo, payload: dict[str, Any], route: Any) -> Ticket:
        return OPEN_TICKET

    async def admit_unpriced(self, request: Any, info: RequestInfo, *, parallel: bool = True) -> Ticket:
        return OPEN_TICKET

    async def release(self, info: RequestInfo) -> None:
        return None

    async def check_step(self, info: RequestInfo, body: dict[str, Any], spent: dict[str, Any] | None) -> None:
        return None

    def allows_model(self, info: RequestInfo, model_id: str) -> bool:
        return True

    def mcp_servers_for(self, key_id: str | None) -> tuple[str, ...] | None:
        return None

    def use_model_catalogue(self, catalogue: Callable[[], list[str]]) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
