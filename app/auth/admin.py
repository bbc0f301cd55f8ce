"""``/admin/keys`` and ``/admin/usage``: key management and usage reports over HTTP, for the admin key only.

Shapes follow OpenAI's admin API where one exists: a key is an
``"object": "api_key"``, listings are ``{"object": "list", "data": [...],
"first_id", "last_id", "has_more"}``, errors are the usual ``{"error": ...}``.
The full key appears exactly once, as ``value`` in the creation response.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from litestar import Request, delete, get, post
from litestar.params import FromPath
from litestar.response import Response

from toolrelay.app.auth import errors, keyspec
from toolrelay.app.auth.durations import iso, parse_when
from toolrelay.app.auth.gate import ADMIN_KEY_ID, bearer_token
from toolrelay.app.auth.keyformat import mask, matches, parse_key_id
from toolrelay.app.errors import OpenAIError, invalid_request
from toolrelay.app.middleware import request_info

if TYPE_CHECKING:
    from toolrelay.app.auth.gate import AuthGate


def _json(body: Any, status: int = 200) -> Response[bytes]:
    return Response(content=orjson.dumps(body), status_code=status, media_type="application/json")


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


def build_admin_handlers(gate: AuthGate) -> list[Any]:
    keys = gate.keys

    def require_admin(request: Request[Any, Any, Any]) -> None:
        info = request_info(request.scope)
        if not gate.admin_enabled:
            raise errors.admin_disabled()
        token = bearer_token(request.scope)
        if token is None:
            raise errors.missing_key()
        # Throttled: an address that guessed wrong too often gets 429 (issue 10 item 21).
        if gate.admin_credential(request.scope, token):
            info.key_id = ADMIN_KEY_ID
            return
        key_id = parse_key_id(token)
        keys.refresh()
        key = keys.get(key_id) if key_id else None
        if key is not None and matches(token, key.key_hash) and key.status(time.time()) == "active":
            info.key_id = key.id
            raise errors.admin_required()
        raise errors.incorrect_key(mask(token))

    def lookup(raw_id: str) -> Any:
        key_id = keyspec.normalize_id(raw_id)
        keys.refresh()
        key = keys.get(key_id) if key_id else None
        if key is None:
            # Echo the id only when it is one (never a pasted secret).
            raise errors.key_not_found(key_id or "(not a key id)")
        return key

    @post("/admin/keys", status_code=200, summary="Create an API key", tags=["admin"], include_in_schema=True)
    async def create_key(request: Request[Any, Any, Any]) -> Response[bytes]:
        require_admin(request)
        raw = await request.body()
        try:
            spec = keyspec.spec_from_json(raw)
            key, full = await anyio.to_thread.run_sync(lambda: keyspec.create(keys, spec, time.time()))
        except keyspec.KeySpecError as exc:
            raise invalid_request(str(exc), param=exc.param, code="invalid_value") from None
        keys.refresh()  # usable on the very next request, from any connection
        return _json({**key.public(spent_usd=0.0 if key.budget_usd is not None else None), "value": full}, 200)

    @get("/admin/keys", summary="List API keys", tags=["admin"])
    async def list_keys(request: Request[Any, Any, Any]) -> Response[bytes]:
        require_admin(request)
        keys.refresh()
        listed = keys.all()
        if request.query_params.get("include_revoked", "true").lower() in ("false", "0", "no"):
            listed = [k for k in listed if k.revoked_at is None]
        spent = {k.id: await gate.spent_usd(k) for k in listed}
        return _json(keyspec.public_list(listed, spent))

    @get("/admin/keys/{key_id:str}", summary="Show an API key", tags=["admin"])
    async def show_key(request: Request[Any, Any, Any], key_id: FromPath[str]) -> Response[bytes]:
        require_admin(request)
        key = lookup(key_id)
        return _json(key.public(spent_usd=await gate.spent_usd(key)))

    async def _revoke(request: Request[Any, Any, Any], key_id: str) -> Response[bytes]:
        require_admin(request)
        key = lookup(key_id)
        revoked = await anyio.to_thread.run_sync(lambda: keys.revoke(key.id))
        keys.refresh()
        return _json(revoked.public() if revoked else key.public())

    @delete("/admin/keys/{key_id:str}", status_code=200, summary="Revoke an API key", tags=["admin"])
    async def revoke_key(request: Request[Any, Any, Any], key_id: FromPath[str]) -> Response[bytes]:
        return await _revoke(request, key_id)

    @post("/admin/keys/{key_id:str}/revoke", status_code=200, summary="Revoke an API key", tags=["admin"])
    async def revoke_key_post(request: Request[Any, Any, Any], key_id: FromPath[str]) -> Response[bytes]:
        return await _revoke(request, key_id)

    @get("/admin/usage", summary="Usage summary", tags=["admin"], description=(
        "Query: since, until (Unix seconds, ISO date/time, or a duration back from now such as 24h or 7d), "
        "group_by (comma-separated: key, model, mode, upstream, status, day, hour; or 'request' for raw rows), key_id, limit."
    ))
    async def usage(request: Request[Any, Any, Any]) -> Response[bytes]:
        require_admin(request)
        ledger = gate.ledger
        if ledger is None:
            raise OpenAIError(404, "The usage ledger is off (auth.ledger = false).", type="invalid_request_error", code="ledger_disabled")
        now = time.time()
        params = request.query_params
        since = parse_time(params.get("since"), now=now, param="since")
        until = parse_time(params.get("until"), now=now, param="until")
        raw_key = params.get("key_id")
        key_id = None
        if raw_key:
            key_id = keyspec.normalize_id(raw_key) or (raw_key if raw_key == ADMIN_KEY_ID else None)
            if key_id is None:
                raise invalid_request("'key_id' is not a key id.", param="key_id", code="invalid_value")
        group_by = [g.strip() for g in (params.get("group_by") or "key,model").split(",") if g.strip()]
        # Read-your-writes: rows still queued for the writer thread go in first.
        await anyio.to_thread.run_sync(ledger.flush)
        if group_by == ["request"]:
            try:
                limit = max(1, min(10_000, int(params.get("limit") or 1000)))
            except ValueError:
                raise invalid_request("'limit' must be an integer.", param="limit", code="invalid_value") from None
            data = await anyio.to_thread.run_sync(lambda: ledger.rows(since=since, until=until, key_id=key_id, limit=limit))
        else:
            try:
                data = await anyio.to_thread.run_sync(lambda: ledger.summary(since=since, until=until, group_by=group_by, key_id=key_id))
            except ValueError as exc:
                raise invalid_request(str(exc), param="group_by", code="invalid_value") from None
            names = {k.id: k.name for k in keys.all()}
            for row in data:
                if "key" in row:
                    row["key_name"] = names.get(row["key"]) if row["key"] else None
        return _json({"object": "list", "data": data, "since": iso(since), "until": iso(until), "group_by": group_by, "has_more": False})

    return [create_key, list_keys, show_key, revoke_key, revoke_key_post, usage]
