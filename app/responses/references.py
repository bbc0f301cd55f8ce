"""``item_reference`` input items, resolved from the caller's stored responses.

Clients that keep state on the server (the Vercel AI SDK by default) send an
earlier response's items back as ``{"type": "item_reference", "id": ...}``
instead of their content. toolrelay owns the state on every path (a native
Responses upstream gets ``store: false`` and the whole conversation), so the
references are replaced by the stored items here, in the raw body, before
the body is parsed: proxy, agent and native paths then read them as if the
client had sent them in full. Only the caller's own scope is searched; an id
that is not there (another key's, a ``store: false`` response's, an expired
one) is the 404 OpenAI gives.
"""

from __future__ import annotations

from typing import Any, cast

from toolrelay.app.errors import OpenAIError, invalid_request
from toolrelay.app.jsonbody import JSONValue
from toolrelay.app.responses.store import ResponseStorage

__all__ = ["resolve_item_references"]


def _reference_id(item: Any) -> str | None:
    """The id an input item refers to, when it is a reference (its ``type`` may be omitted)."""
    if not isinstance(item, dict):
        return None
    fields = cast("dict[str, Any]", item)
    kind = fields.get("type")
    if kind == "item_reference" or (kind is None and "role" not in fields and set(fields) <= {"id", "type"}):
        ref = fields.get("id")
        return ref if isinstance(ref, str) else None
    return None


def _not_found(item_id: str, position: int) -> OpenAIError:
    return OpenAIError(
        404,
        f"Item with id '{item_id}' not found. Items are not persisted when `store` is set to false. "
        "Try again with `store` set to true, or remove this item from your input.",
        type="invalid_request_error",
        param=f"input[{position}]",
        code=None,
    )


async def resolve_item_references(store: ResponseStorage, scope: str, body: JSONValue, *, max_items: int) -> JSONValue:
    """``body`` with each ``item_reference`` in ``input`` replaced by the stored item (a new dict; ``body`` is left as it was)."""
    if not isinstance(body, dict):
        return body
    raw_input = body.get("input")
    if not isinstance(raw_input, list):
        return body
    items = cast("list[Any]", raw_input)
    if len(items) > max_items:
        # Before any lookup: each reference costs a database read, so their number is bounded like messages.
        raise invalid_request(f"Too many input items: {len(items)} (at most {max_items}).", param="input", code="array_above_max_length")
    wanted = {position: ref for position, item in enumerate(items) if (ref := _reference_id(item)) is not None}
    if not wanted:
        return body
    found = await store.find_items(scope, list(wanted.values()))
    resolved = list(items)
    for position, ref in wanted.items():
        item = found.get(ref)
        if item is None:
            raise _not_found(ref, position)
        resolved[position] = item
    return {**body, "input": resolved}
