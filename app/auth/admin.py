"""``/admin/keys`` and ``/admin/usage``: key management and usage reports over HTTP, for the admin key only.

Shapes follow OpenAI's admin API where one exists: a key is an
``"object": "api_key"``, listings are ``{"object": "list", "data": [...],
"first_id", "last_id", "has_more"}``, errors are the usual ``{"error": ...}``.
The full key appears exactly once, as ``value`` in the creation response.

Every route is behind :func:`admin_guard` (the admin key, checked before the
query string or the body is read) and declares its query parameters, so
``/docs`` describes them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, cast

import anyio
import orjson
from litestar import Request, Router, delete, get, post
from litestar.params import FromPath, QueryParameter
from litestar.response import Response

from toolrelay.app.auth import errors, keyspec
from toolrelay.app.auth.durations import iso, parse_when
from toolrelay.app.auth.gate import ADMIN_KEY_ID, bearer_token
from toolrelay.app.auth.keyformat import mask, matches, parse_key_id
from toolrelay.app.errors import OpenAIError, invalid_request
from toolrelay.app.middleware import request_info

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

    from toolrelay.app.auth.gate import AuthGate


def _json(body: Any, status: int = 200) -> Response[bytes]:
    return Response(content=orjson.dumps(body), status_code=status, media_type="application/json")


_WHEN = "{edge} this time: Unix seconds, an ISO date or date-time, or a duration back from now (`24h`, `7d`)."


def parse_time(text: str | None, *, now: float, param: str) -> float | None:
    """A query-string time: Unix seconds, an ISO date/date-time, or a duration back from now ("24h")."""
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_when(text, now=now, future=False)
    except ValueError as exc:
        raise invalid_request(str(exc), param=param, code="invalid_value") from None


def admin_guard(gate: AuthGate) -> Any:
    """A Litestar guard letting only the admin key through.

    403 ``admin_api_disabled`` without an admin key configured; 401 without a
    credential or with a wrong one; 403 ``insufficient_permissions`` for a
    valid API key (logged under its id). Wrong guesses are throttled per
    address (429 with ``retry-after``, issue 10 item 21).
    """
    keys = gate.keys

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        scope = cast("dict[str, Any]", connection.scope)  # Litestar's TypedDict, read as the ASGI dict it is
        info = request_info(scope)
        if not gate.admin_enabled:
            raise errors.admin_disabled()
        token = bearer_token(scope)
        if token is None:
            raise errors.missing_key()
        # Throttled: an address that guessed wrong too often gets 429 (issue 10 item 21).
        if gate.admin_credential(scope, token):
            info.key_id = ADMIN_KEY_ID
            return
        key_id = parse_key_id(token)
        keys.refresh(force=True)
        key = keys.get(key_id) if key_id else None
        now = time.time()
        if key is not None and (matches(token, key.key_hash) or key.accepts_previous(token, now)) and key.status(now) == "active":
            info.key_id = key.id
            raise errors.admin_required()
        raise errors.incorrect_key(mask(token))

    return guard


def build_admin_handlers(gate: AuthGate) -> list[Any]:
    keys = gate.keys

    def lookup(raw_id: str) -> Any:
        key_id = keyspec.normalize_id(raw_id)
        keys.refresh(force=True)
        key = keys.get(key_id) if key_id else None
        if key is None:
            # Echo the id only when it is one (never a pasted secret).
            raise errors.key_not_found(key_id or "(not a key id)")
        return key

    @post("/keys", status_code=200, summary="Create an API key")
    async def create_key(request: Request[Any, Any, Any]) -> Response[bytes]:
        # keyspec reads the body itself: its refusals name the field the way `toolrelay keys create` does.
        raw = await request.body()
        try:
            spec = keyspec.spec_from_json(raw)
            key, full = await anyio.to_thread.run_sync(lambda: keyspec.create(keys, spec, time.time()))
        except keyspec.KeySpecError as exc:
            raise invalid_request(str(exc), param=exc.param, code="invalid_value") from None
        keys.refresh(force=True)  # usable on the very next request, from any connection
        return _json({**key.public(spent_usd=0.0 if key.budget_usd is not None else None), "value": full}, 200)

    @get("/keys", summary="List API keys")
    async def list_keys(
        include_revoked: Annotated[str, QueryParameter(description="`false`, `0` or `no`: leave revoked keys out.")] = "true",
    ) -> Response[bytes]:
        keys.refresh(force=True)
        listed = keys.all()
        if include_revoked.lower() in ("false", "0", "no"):
            listed = [k for k in listed if k.revoked_at is None]
        spent = {k.id: await gate.spent_usd(k) for k in listed}
        return _json(keyspec.public_list(listed, spent))

    @get("/keys/{key_id:str}", summary="Show an API key")
    async def show_key(key_id: FromPath[str]) -> Response[bytes]:
        key = lookup(key_id)
        return _json(key.public(spent_usd=await gate.spent_usd(key)))

    @post(
        "/keys/{key_id:str}",
        status_code=200,
        summary="Change an API key: models, MCP servers, limits, budget, expiry, output ceiling (null clears)",
    )
    async def update_key(key_id: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        key = lookup(key_id)
        raw = await request.body()
        try:
            change = keyspec.update_from_json(raw)
            updated = await anyio.to_thread.run_sync(lambda: keyspec.update(keys, key.id, change))
        except keyspec.KeySpecError as exc:
            raise invalid_request(str(exc), param=exc.param, code="invalid_value") from None
        keys.refresh(force=True)  # applies from the very next request
        changed = updated or key
        if changed.budget_usd is not None and (key.budget_usd is None or key.budget_period != changed.budget_period):
            await gate.seed_budget(changed)  # a new budget (or period) counts what the period already spent
        return _json(changed.public(spent_usd=await gate.spent_usd(changed)))

    @post("/keys/{key_id:str}/rotate", status_code=200, summary="Give an API key a new secret; the old one works for grace_seconds more")
    async def rotate_key(key_id: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        key = lookup(key_id)
        if key.revoked_at is not None:
            raise invalid_request(f"The API key tr-{key.id} is revoked; create a new key instead.", param="key_id", code="key_revoked")
        raw = await request.body()
        try:
            grace = keyspec.rotation_from_json(raw).grace_seconds
            rotated = await anyio.to_thread.run_sync(lambda: keyspec.rotate(keys, key.id, grace))
        except keyspec.KeySpecError as exc:
            raise invalid_request(str(exc), param=exc.param, code="invalid_value") from None
        if rotated is None:  # revoked meanwhile
            raise invalid_request(f"The API key tr-{key.id} is revoked; create a new key instead.", param="key_id", code="key_revoked")
        keys.refresh(force=True)  # the new secret works on the very next request
        new, full = rotated
        # The new secret appears here once, as `key` (and as `value`, the creation response's name for it).
        return _json({**new.public(spent_usd=await gate.spent_usd(new)), "key": full, "value": full})

    async def _revoke(key_id: str) -> Response[bytes]:
        key = lookup(key_id)
        revoked = await anyio.to_thread.run_sync(lambda: keys.revoke(key.id))
        keys.refresh(force=True)
        return _json(revoked.public() if revoked else key.public())

    @delete("/keys/{key_id:str}", status_code=200, summary="Revoke an API key")
    async def revoke_key(key_id: FromPath[str]) -> Response[bytes]:
        return await _revoke(key_id)

    @post("/keys/{key_id:str}/revoke", status_code=200, summary="Revoke an API key")
    async def revoke_key_post(key_id: FromPath[str]) -> Response[bytes]:
        return await _revoke(key_id)

    @get("/usage", summary="Usage summary")
    async def usage(
        since: Annotated[str | None, QueryParameter(description=_WHEN.format(edge="From"))] = None,
        until: Annotated[str | None, QueryParameter(description=_WHEN.format(edge="Up to"))] = None,
        group_by: Annotated[
            str | None,
            QueryParameter(description=("Comma-separated: key, model, mode, upstream, status, day, hour (default `key,model`); or `request` for raw rows.")),
        ] = None,
        key_id: Annotated[str | None, QueryParameter(description="Only this key's requests (`admin` for the admin key's).")] = None,
        # A string, not an int: it is clamped to 1..10000 rather than refused, and read only for raw rows.
        limit: Annotated[str | None, QueryParameter(description="With `group_by=request`: at most this many rows (1 to 10000, default 1000).")] = None,
    ) -> Response[bytes]:
        ledger = gate.ledger
        if ledger is None:
            raise OpenAIError(404, "The usage ledger is off (auth.ledger = false).", type="invalid_request_error", code="ledger_disabled")
        now = time.time()
        since_ts = parse_time(since, now=now, param="since")
        until_ts = parse_time(until, now=now, param="until")
        only_key = None
        if key_id:
            only_key = keyspec.normalize_id(key_id) or (key_id if key_id == ADMIN_KEY_ID else None)
            if only_key is None:
                raise invalid_request("'key_id' is not a key id.", param="key_id", code="invalid_value")
        groups = [g.strip() for g in (group_by or "key,model").split(",") if g.strip()]
        # Read-your-writes: rows still queued for the writer thread go in first.
        await anyio.to_thread.run_sync(ledger.flush)
        if groups == ["request"]:
            try:
                rows = max(1, min(10_000, int(limit or 1000)))
            except ValueError:
                raise invalid_request("'limit' must be an integer.", param="limit", code="invalid_value") from None
            data = await anyio.to_thread.run_sync(lambda: ledger.rows(since=since_ts, until=until_ts, key_id=only_key, limit=rows))
        else:
            try:
                data = await anyio.to_thread.run_sync(lambda: ledger.summary(since=since_ts, until=until_ts, group_by=groups, key_id=only_key))
            except ValueError as exc:
                raise invalid_request(str(exc), param="group_by", code="invalid_value") from None
            names = {k.id: k.name for k in keys.all()}
            for row in data:
                if "key" in row:
                    row["key_name"] = names.get(row["key"]) if row["key"] else None
        return _json({"object": "list", "data": data, "since": iso(since_ts), "until": iso(until_ts), "group_by": groups, "has_more": False})

    router = Router(
        "/admin",
        route_handlers=[create_key, list_keys, show_key, update_key, rotate_key, revoke_key, revoke_key_post, usage],
        guards=[admin_guard(gate)],
        tags=["admin"],
    )
    return [router]
