"""``/v1/memories``: the owner of a memory scope lists, exports and deletes its memories.

The scope is the caller's API key and, within it, the ``user`` query
parameter (the same ``user`` the agent requests carried). A key can only ever
reach its own scopes; with authentication off everything is the one local
scope. Shapes follow OpenAI's list objects and ``{"id", "object": "...deleted",
"deleted": true}`` deletions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from litestar import Request, delete, get, post
from litestar.response import Response

from app.errors import OpenAIError, invalid_request
from app.jsonbody import parse_json_body
from app.middleware import request_info
from memory import MemoryStore, MemoryValidationError, scope_for

if TYPE_CHECKING:
    from app.services import Services

_MAX_PAGE = 100


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(content=orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _not_found(memory_id: str) -> OpenAIError:
    return OpenAIError(404, f"No memory found with id '{memory_id}'.", type="invalid_request_error", param="memory_id", code="memory_not_found")


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


def build_memory_handlers(services: "Services", store: MemoryStore) -> list[Any]:
    async def scope_of(request: Request[Any, Any, Any]) -> str:
        info = request_info(request.scope)
        await services.gate.authenticate(request, info)
        user = request.query_params.get("user") or None
        return scope_for(info.key_id, user)

    @get("/v1/memories", summary="List memories", tags=["memories"])
    async def list_memories(request: Request[Any, Any, Any]) -> Response[bytes]:
        scope = await scope_of(request)
        limit = _int_param(request, "limit", 20, 1, _MAX_PAGE)
        order = request.query_params.get("order") or "desc"
        if order not in ("asc", "desc"):
            raise invalid_request(f"Invalid 'order': '{order[:20]}'. Supported values are: 'asc' and 'desc'.", param="order", code="invalid_value")
        tags = request.query_params.getall("tag", []) or None
        page = await store.list(scope, limit=limit, after=request.query_params.get("after") or None, order=order, tags=tags)
        return _json(page.to_dict())

    @get("/v1/memories/export", summary="Export all memories of a scope as JSON", tags=["memories"])
    async def export_memories(request: Request[Any, Any, Any]) -> Response[bytes]:
        scope = await scope_of(request)
        memories = await store.export(scope)
        return _json(
            {"object": "list", "data": [m.to_dict() for m in memories]},
            headers={"content-disposition": 'attachment; filename="memories.json"'},
        )

    @get("/v1/memories/search", summary="Search memories", tags=["memories"])
    async def search_memories(request: Request[Any, Any, Any]) -> Response[bytes]:
        scope = await scope_of(request)
        query = request.query_params.get("q") or request.query_params.get("query") or ""
        limit = _int_param(request, "limit", 5, 1, _MAX_PAGE)
        hits = await store.search(scope, query, limit=limit)
        return _json({"object": "list", "data": [{**hit.memory.to_dict(), "score": hit.score} for hit in hits]})

    @post("/v1/memories", summary="Save a memory", tags=["memories"], status_code=200)
    async def create_memory(request: Request[Any, Any, Any]) -> Response[bytes]:
        scope = await scope_of(request)
        body = parse_json_body(await request.body())
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise invalid_request("Missing required parameter: 'text'.", param="text", code="missing_required_parameter")
        tags = body.get("tags")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            raise invalid_request("Invalid 'tags': expected an array of strings.", param="tags", code="invalid_type")
        try:
            memory = await store.save(scope, body["text"], tags=tags)
        except MemoryValidationError as exc:
            raise invalid_request(str(exc), param="text", code="invalid_value") from None
        return _json(memory.to_dict())

    @get("/v1/memories/{memory_id:str}", summary="Retrieve a memory", tags=["memories"])
    async def get_memory(request: Request[Any, Any, Any]) -> Response[bytes]:
        scope = await scope_of(request)
        memory_id = str(request.path_params["memory_id"])
        memory = await store.get(scope, memory_id)
        if memory is None:
            raise _not_found(memory_id)
        return _json(memory.to_dict())

    @delete("/v1/memories/{memory_id:str}", summary="Delete a memory", tags=["memories"], status_code=200)
    async def delete_memory(request: Request[Any, Any, Any]) -> Response[bytes]:
        scope = await scope_of(request)
        memory_id = str(request.path_params["memory_id"])
        if not await store.delete(scope, memory_id):
            raise _not_found(memory_id)
        return _json({"id": memory_id, "object": "memory.deleted", "deleted": True})

    @delete("/v1/memories", summary="Delete every memory of a scope", tags=["memories"], status_code=200)
    async def delete_all_memories(request: Request[Any, Any, Any]) -> Response[bytes]:
        scope = await scope_of(request)
        count = await store.delete_all(scope)
        return _json({"object": "memory.deleted", "deleted": True, "count": count})

    return [list_memories, export_memories, search_memories, create_memory, get_memory, delete_memory, delete_all_memories]
