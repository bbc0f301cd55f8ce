"""``/admin/memories``: the admin acts on any key's memories (list, search, delete).

The same answers as ``/v1/memories`` (its Structs), for the scope of the ``key_id`` query
parameter and, within it, ``user``; behind the admin guard, so the admin key never needs to be
sent to ``/v1/*`` and a key never reaches another key's scope. Not metered: admin requests are
not a key's usage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from litestar import Router, delete, get
from litestar.params import FromPath, QueryParameter

from toolrelay.app.auth import keyspec
from toolrelay.app.auth.admin import admin_guard
from toolrelay.app.auth.gate import ADMIN_KEY_ID
from toolrelay.app.errors import OpenAIError, invalid_request
from toolrelay.app.routes.memories import DeletedMemory, MemoryList, MemoryObject, MemorySearchResults, RankedMemory
from toolrelay.app.strict_request import StrictJSONRequest
from toolrelay.memory import MemoryStore, scope_for

if TYPE_CHECKING:
    from toolrelay.app.auth.gate import AuthGate

__all__ = ["build_admin_memory_handlers"]

_MAX_PAGE = 100

KeyId = Annotated[str, QueryParameter(description="The key whose memories these are (`admin` for the admin key's own).")]
User = Annotated[str | None, QueryParameter(description="The end user within the key's scope (the `user` of chat requests); absent: the key's own scope.")]


def _scope(key_id: str, user: str | None) -> str:
    key = keyspec.normalize_id(key_id) or (key_id if key_id == ADMIN_KEY_ID else None)
    if key is None:
        raise invalid_request("'key_id' is not a key id.", param="key_id", code="invalid_value")
    return scope_for(key, user or None)


def build_admin_memory_handlers(gate: AuthGate, store: MemoryStore) -> list[Any]:
    @get("/", summary="List a key's memories")
    async def list_memories(
        key_id: KeyId,
        user: User = None,
        limit: Annotated[int, QueryParameter(ge=1, le=_MAX_PAGE, description="How many memories to return.")] = 20,
        order: Annotated[Literal["asc", "desc"], QueryParameter(description="By creation time.")] = "desc",
        after: Annotated[str | None, QueryParameter(description="A memory id: the page after it (cursor).")] = None,
    ) -> MemoryList:
        page = await store.list(_scope(key_id, user), limit=limit, after=after or None, order=order)
        data = [MemoryObject.of(m) for m in page.data]
        return MemoryList(object="list", data=data, first_id=page.first_id, last_id=page.last_id, has_more=page.has_more)

    @get("/search", summary="Search a key's memories")
    async def search_memories(
        key_id: KeyId,
        user: User = None,
        q: Annotated[str | None, QueryParameter(description="Words to look for (any order; no query syntax).")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=_MAX_PAGE, description="How many memories to return.")] = 20,
    ) -> MemorySearchResults:
        hits = await store.search(_scope(key_id, user), q or "", limit=limit)
        return MemorySearchResults(object="list", data=[RankedMemory.ranked(hit.memory, rank) for rank, hit in enumerate(hits, 1)])

    @delete("/{memory_id:str}", summary="Delete one of a key's memories", status_code=200)
    async def delete_memory(memory_id: FromPath[str], key_id: KeyId, user: User = None) -> DeletedMemory:
        if not await store.delete(_scope(key_id, user), memory_id):
            raise OpenAIError(404, f"No memory found with id '{memory_id}'.", type="invalid_request_error", param="memory_id", code="memory_not_found")
        return DeletedMemory(id=memory_id, object="memory.deleted", deleted=True)

    router = Router(
        "/admin/memories",
        route_handlers=[list_memories, search_memories, delete_memory],
        guards=[admin_guard(gate)],
        request_class=StrictJSONRequest,
        tags=["admin"],
    )
    return [router]
