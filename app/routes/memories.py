"""``/v1/memories``: the owner of a memory scope lists, exports and deletes its memories.

The scope is the caller's API key and, within it, the ``user`` query
parameter (the same ``user`` the agent requests carried). A key can only ever
reach its own scopes; with authentication off everything is the one local
scope. Shapes follow OpenAI's list objects and ``{"id", "object": "...deleted",
"deleted": true}`` deletions.

Every request passes the gate like a chat request (issue 10 item 12): it is
authenticated, counted against the key's requests per minute and parallel
slots (it calls no model, so it costs nothing and tokens per minute and the
budget do not apply) and booked in the usage ledger with mode ``memory``.

Model allow-lists: memory is part of agent mode, so a key may use
``/v1/memories`` only when its allow-list admits at least one ``agent/...``
model the server serves (any served model when agent mode is off); otherwise
403 ``memory_not_allowed``. The endpoints only ever reach the key's own
scopes either way. Saving beyond the ``[memory]`` caps is a 403
``memory_limit_reached``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
from litestar import Request, delete, get, post
from litestar.response import Response

from toolrelay.app.errors import OpenAIError, invalid_request
from toolrelay.app.jsonbody import parse_json_body
from toolrelay.app.middleware import request_info
from toolrelay.memory import MemoryQuotaExceeded, MemoryStore, MemoryValidationError, scope_for

if TYPE_CHECKING:
    from toolrelay.app.services import Services

_MAX_PAGE = 100


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response[bytes]:
    return Response(content=orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _not_found(memory_id: str) -> OpenAIError:
    return OpenAIError(404, f"No memory found with id '{memory_id}'.", type="invalid_request_error", param="memory_id", code="memory_not_found")


def _not_allowed() -> OpenAIError:
    return OpenAIError(
        403,
        "This API key may not use long-term memory: its model allow-list admits no agent model.",
        type="invalid_request_error",
        code="memory_not_allowed",
    )


def _int_param(request: Request[Any, Any, Any], name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_request(f"Invalid '{name}': expected an integer, got '{raw[:40]}'.", param=name, code="invalid_type") from None
    if not low <= value <= high:
        raise invalid_request(f"Invalid '{name}': expected a value between {low} and {high}, got {value}.", param=name, code="invalid_value")
    return value


def build_memory_handlers(services: Services, store: MemoryStore) -> list[Any]:
    gate = services.gate

    def may_use_memory(info: Any) -> bool:
        if info.key_id is None or info.key_id == "admin":
            return True
        prefix = "agent/" if services.agent is not None else ""
        return any(gate.allows_model(info, prefix + model_id) for model_id, _ in services.router.served_models())

    @asynccontextmanager
    async def gated(request: Request[Any, Any, Any]) -> AsyncIterator[tuple[str, Mapping[str, str]]]:
        """(scope, rate-limit headers) of an admitted request; the outer ASGI layer releases (and books) it."""
        info = request_info(request.scope)
        await gate.authenticate(request, info)
        info.mode = "memory"
        info.metered = True
        if not may_use_memory(info):
            raise _not_allowed()
        ticket = info.ticket = await gate.admit_unpriced(request, info)
        yield scope_for(info.key_id, request.query_params.get("user") or None), ticket.headers

    @get("/v1/memories", summary="List memories", tags=["memories"])
    async def list_memories(request: Request[Any, Any, Any]) -> Response[bytes]:
        async with gated(request) as (scope, headers):
            limit = _int_param(request, "limit", 20, 1, _MAX_PAGE)
            order = request.query_params.get("order") or "desc"
            if order not in ("asc", "desc"):
                raise invalid_request(f"Invalid 'order': '{order[:20]}'. Supported values are: 'asc' and 'desc'.", param="order", code="invalid_value")
            tags = request.query_params.getall("tag", []) or None
            page = await store.list(scope, limit=limit, after=request.query_params.get("after") or None, order=order, tags=tags)
            return _json(page.to_dict(), headers=headers)

    @get("/v1/memories/export", summary="Export all memories of a scope as JSON", tags=["memories"])
    async def export_memories(request: Request[Any, Any, Any]) -> Response[bytes]:
        async with gated(request) as (scope, headers):
            memories = await store.export(scope)
            return _json(
                {"object": "list", "data": [m.to_dict() for m in memories]},
                headers={**headers, "content-disposition": 'attachment; filename="memories.json"'},
            )

    @get("/v1/memories/search", summary="Search memories", tags=["memories"])
    async def search_memories(request: Request[Any, Any, Any]) -> Response[bytes]:
        async with gated(request) as (scope, headers):
            query = request.query_params.get("q") or request.query_params.get("query") or ""
            limit = _int_param(request, "limit", 5, 1, _MAX_PAGE)
            hits = await store.search(scope, query, limit=limit)
            # Ranks, not BM25 scores: a score carries the word's document frequency
            # over every scope (one FTS5 table), so a key could count how many of
            # other keys' memories contain a word (issue 10 item 13).
            return _json({"object": "list", "data": [{**hit.memory.to_dict(), "rank": rank} for rank, hit in enumerate(hits, 1)]}, headers=headers)

    @post("/v1/memories", summary="Save a memory", tags=["memories"], status_code=200)
    async def create_memory(request: Request[Any, Any, Any]) -> Response[bytes]:
        async with gated(request) as (scope, headers):
            body = parse_json_body(await request.body())
            if not isinstance(body, dict) or not isinstance(body.get("text"), str):
                raise invalid_request("Missing required parameter: 'text'.", param="text", code="missing_required_parameter")
            tags = body.get("tags")
            if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
                raise invalid_request("Invalid 'tags': expected an array of strings.", param="tags", code="invalid_type")
            try:
                memory = await store.save(scope, body["text"], tags=tags)
            except MemoryQuotaExceeded as exc:
                raise OpenAIError(403, str(exc)[:1].upper() + str(exc)[1:] + ".", type="invalid_request_error", param="text", code="memory_limit_reached") from None
            except MemoryValidationError as exc:
                raise invalid_request(str(exc), param="text", code="invalid_value") from None
            return _json(memory.to_dict(), headers=headers)

    @get("/v1/memories/{memory_id:str}", summary="Retrieve a memory", tags=["memories"])
    async def get_memory(request: Request[Any, Any, Any]) -> Response[bytes]:
        async with gated(request) as (scope, headers):
            memory_id = str(request.path_params["memory_id"])
            memory = await store.get(scope, memory_id)
            if memory is None:
                raise _not_found(memory_id)
            return _json(memory.to_dict(), headers=headers)

    @delete("/v1/memories/{memory_id:str}", summary="Delete a memory", tags=["memories"], status_code=200)
    async def delete_memory(request: Request[Any, Any, Any]) -> Response[bytes]:
        async with gated(request) as (scope, headers):
            memory_id = str(request.path_params["memory_id"])
            if not await store.delete(scope, memory_id):
                raise _not_found(memory_id)
            return _json({"id": memory_id, "object": "memory.deleted", "deleted": True}, headers=headers)

    @delete("/v1/memories", summary="Delete every memory of a scope", tags=["memories"], status_code=200)
    async def delete_all_memories(request: Request[Any, Any, Any]) -> Response[bytes]:
        async with gated(request) as (scope, headers):
            count = await store.delete_all(scope)
            return _json({"object": "memory.deleted", "deleted": True, "count": count}, headers=headers)

    return [list_memories, export_memories, search_memories, create_memory, get_memory, delete_memory, delete_all_memories]
