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

The routes use the framework (this is not the hot path): a guard
(:func:`app.guards.metered_key_guard`) does the gate's part before anything
is read, query parameters are typed, the body is a Struct read through the
API's strict JSON parser (:class:`app.strict_request.StrictJSONRequest`),
answers are Structs, so ``/docs`` describes all of them. Litestar's refusals
of a parameter or body become the usual OpenAI 400s
(:mod:`app.request_errors`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from litestar import Request, Response, Router, delete, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from msgspec import UNSET, Struct, UnsetType

from toolrelay.app.errors import OpenAIError, invalid_request
from toolrelay.app.guards import metered_key_guard, rate_limit_headers
from toolrelay.app.middleware import RequestInfo, request_info
from toolrelay.app.strict_request import StrictJSONRequest
from toolrelay.memory import Memory, MemoryQuotaExceeded, MemoryStore, MemoryValidationError, scope_for

if TYPE_CHECKING:
    from toolrelay.app.services import Services

__all__ = [
    "DeletedMemories",
    "DeletedMemory",
    "MemoryCreate",
    "MemoryExport",
    "MemoryList",
    "MemoryObject",
    "MemorySearchResults",
    "RankedMemory",
    "build_memory_handlers",
]

_MAX_PAGE = 100

# -- wire shapes (toolrelay's own API, so not in app.protocol, which holds OpenAI's)


class MemoryCreate(Struct, kw_only=True):
    """The body of ``POST /v1/memories``; other fields are ignored."""

    text: str
    tags: list[str] | None = None


class MemoryObject(Struct, kw_only=True):
    id: str
    object: Literal["memory"]
    text: str
    tags: list[str]
    created_at: int
    metadata: dict[str, Any] | UnsetType = UNSET

    @classmethod
    def of(cls, memory: Memory) -> MemoryObject:
        return cls(**_memory_fields(memory))


class RankedMemory(MemoryObject, kw_only=True):
    # Ranks, not BM25 scores: a score carries the word's document frequency
    # over every scope (one FTS5 table), so a key could count how many of
    # other keys' memories contain a word (issue 10 item 13).
    rank: int

    @classmethod
    def ranked(cls, memory: Memory, rank: int) -> RankedMemory:
        return cls(**_memory_fields(memory), rank=rank)


def _memory_fields(memory: Memory) -> dict[str, Any]:
    metadata = UNSET if memory.metadata is None else memory.metadata
    return {"id": memory.id, "object": "memory", "text": memory.text, "tags": list(memory.tags), "created_at": memory.created_at, "metadata": metadata}


class MemoryList(Struct, kw_only=True):
    object: Literal["list"]
    data: list[MemoryObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class MemoryExport(Struct, kw_only=True):
    object: Literal["list"]
    data: list[MemoryObject]


class MemorySearchResults(Struct, kw_only=True):
    object: Literal["list"]
    data: list[RankedMemory]


class DeletedMemory(Struct, kw_only=True):
    id: str
    object: Literal["memory.deleted"]
    deleted: bool


class DeletedMemories(Struct, kw_only=True):
    object: Literal["memory.deleted"]
    deleted: bool
    count: int


# -- errors


def _not_found(memory_id: str) -> OpenAIError:
    return OpenAIError(404, f"No memory found with id '{memory_id}'.", type="invalid_request_error", param="memory_id", code="memory_not_found")


def _not_allowed() -> OpenAIError:
    return OpenAIError(
        403,
        "This API key may not use long-term memory: its model allow-list admits no agent model.",
        type="invalid_request_error",
        code="memory_not_allowed",
    )


# -- parameters

User = Annotated[str | None, QueryParameter(description="The end user whose memories these are (the `user` of chat requests); absent: the key's own scope.")]
PageLimit = Annotated[int, QueryParameter(ge=1, le=_MAX_PAGE, description="How many memories to return.")]


def _memory_scope(request: Request[Any, Any, Any], user: User = None) -> str:
    """The scope of the caller's key and ``user`` (admitted by the guard already)."""
    return scope_for(request_info(cast("dict[str, Any]", request.scope)).key_id, user or None)


def _answer(request: Request[Any, Any, Any], content: Struct) -> Response[Any]:
    return Response(content=content, headers=rate_limit_headers(request))


def build_memory_handlers(services: Services, store: MemoryStore) -> list[Any]:
    gate = services.gate

    def may_use_memory(info: RequestInfo) -> None:
        if info.key_id is None or info.key_id == "admin":
            return
        prefix = "agent/" if services.agent is not None else ""
        if not any(gate.allows_model(info, prefix + model_id) for model_id, _ in services.router.served_models()):
            raise _not_allowed()

    @get("/", summary="List memories")
    async def list_memories(
        request: Request[Any, Any, Any],
        memory_scope: NamedDependency[str],
        limit: PageLimit = 20,
        order: Annotated[Literal["asc", "desc"], QueryParameter(description="By creation time.")] = "desc",
        after: Annotated[str | None, QueryParameter(description="A memory id: the page after it (cursor).")] = None,
        tag: Annotated[list[str] | None, QueryParameter(description="Only memories with one of these tags (repeat the parameter for more).")] = None,
    ) -> Response[MemoryList]:
        page = await store.list(memory_scope, limit=limit, after=after or None, order=order, tags=tag or None)
        data = [MemoryObject.of(m) for m in page.data]
        return _answer(request, MemoryList(object="list", data=data, first_id=page.first_id, last_id=page.last_id, has_more=page.has_more))

    @get(
        "/export",
        summary="Export all memories of a scope as JSON",
        response_headers=[ResponseHeader(name="content-disposition", value='attachment; filename="memories.json"')],
    )
    async def export_memories(request: Request[Any, Any, Any], memory_scope: NamedDependency[str]) -> Response[MemoryExport]:
        memories = await store.export(memory_scope)
        return _answer(request, MemoryExport(object="list", data=[MemoryObject.of(m) for m in memories]))

    @get("/search", summary="Search memories")
    async def search_memories(
        request: Request[Any, Any, Any],
        memory_scope: NamedDependency[str],
        q: Annotated[str | None, QueryParameter(description="Words to look for (any order; no query syntax).")] = None,
        query_text: Annotated[str | None, QueryParameter(name="query", description="Same as `q`.")] = None,
        limit: PageLimit = 5,
    ) -> Response[MemorySearchResults]:
        hits = await store.search(memory_scope, q or query_text or "", limit=limit)
        data = [RankedMemory.ranked(hit.memory, rank) for rank, hit in enumerate(hits, 1)]
        return _answer(request, MemorySearchResults(object="list", data=data))

    @post("/", summary="Save a memory", status_code=200)
    async def create_memory(request: Request[Any, Any, Any], memory_scope: NamedDependency[str], data: JSONBody[MemoryCreate]) -> Response[MemoryObject]:
        try:
            memory = await store.save(memory_scope, data.text, tags=data.tags)
        except MemoryQuotaExceeded as exc:
            raise OpenAIError(403, str(exc)[:1].upper() + str(exc)[1:] + ".", type="invalid_request_error", param="text", code="memory_limit_reached") from None
        except MemoryValidationError as exc:
            raise invalid_request(str(exc), param="text", code="invalid_value") from None
        return _answer(request, MemoryObject.of(memory))

    @get("/{memory_id:str}", summary="Retrieve a memory")
    async def get_memory(request: Request[Any, Any, Any], memory_scope: NamedDependency[str], memory_id: FromPath[str]) -> Response[MemoryObject]:
        memory = await store.get(memory_scope, memory_id)
        if memory is None:
            raise _not_found(memory_id)
        return _answer(request, MemoryObject.of(memory))

    @delete("/{memory_id:str}", summary="Delete a memory", status_code=200)
    async def delete_memory(request: Request[Any, Any, Any], memory_scope: NamedDependency[str], memory_id: FromPath[str]) -> Response[DeletedMemory]:
        if not await store.delete(memory_scope, memory_id):
            raise _not_found(memory_id)
        return _answer(request, DeletedMemory(id=memory_id, object="memory.deleted", deleted=True))

    @delete("/", summary="Delete every memory of a scope", status_code=200)
    async def delete_all_memories(request: Request[Any, Any, Any], memory_scope: NamedDependency[str]) -> Response[DeletedMemories]:
        count = await store.delete_all(memory_scope)
        return _answer(request, DeletedMemories(object="memory.deleted", deleted=True, count=count))

    router = Router(
        "/v1/memories",
        route_handlers=[list_memories, export_memories, search_memories, create_memory, get_memory, delete_memory, delete_all_memories],
        guards=[metered_key_guard(gate, mode="memory", check=may_use_memory)],
        dependencies={"memory_scope": Provide(_memory_scope, sync_to_thread=False)},
        request_class=StrictJSONRequest,
        tags=["memories"],
    )
    return [router]
