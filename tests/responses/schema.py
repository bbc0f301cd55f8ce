"""Responses API bodies and streams checked against OpenAI's published schema.

The schema is vendored (``tests/schemas/openai_responses.schema.json``, see the
README there): the closure of ``Response``, ``ResponseStreamEvent``, the item
types, ``ResponseItemList`` and the error object from OpenAI's OpenAPI
document, as JSON Schema Draft 2020-12.

Validation is strict by default: every object the document declares with
``properties`` refuses properties it does not declare (``unevaluatedProperties:
false`` added here, not in the vendored file), so a field toolrelay invents is
caught rather than tolerated. The one field the API sends but the document
omits (``store`` on a response) is allowed.

- :func:`validate_event`, :func:`validate_response`, :func:`validate_input_items`,
  :func:`validate_deleted`, :func:`validate_error`: one value, raising
  :class:`SchemaMismatch` with the path and the first failing rule.
- :func:`parse_stream`: a raw SSE body as event dicts (``event:`` names match ``type``).
- :func:`check_stream`: every event valid, ``sequence_number`` 0, 1, 2..., and
  the order rules OpenAI's streams follow (see its docstring).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from fakes.sse import parse_sse

__all__ = [
    "SchemaMismatch",
    "check_stream",
    "parse_stream",
    "validate_deleted",
    "validate_error",
    "validate_event",
    "validate_input_items",
    "validate_response",
]

SCHEMA_PATH = Path(__file__).parent.parent / "schemas" / "openai_responses.schema.json"

# Where OpenAI's own examples (the document's ``x-oaiMeta``, dropped from the
# vendored file) contradict the document: the API sends ``store`` on a response,
# which the document does not declare, and ``"usage": null`` (response.created)
# and ``"user": null``, which it declares non-null.
_SENT_BUT_UNDECLARED: dict[str, dict[str, Any]] = {"Response": {"store": {"type": "boolean"}}}
_NULL_IN_EXAMPLES = (("Response", "usage"), ("ModelResponseProperties", "user"))

TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_OPENING = ("response.created", "response.in_progress")


class SchemaMismatch(AssertionError):
    """A value the published schema refuses (or a stream breaking the order rules)."""


# -------------------------------------------------------------------------- the schema


def _allof_members(defs: dict[str, Any]) -> set[str]:
    """Components used as ``allOf`` parts: each declares only part of an object, so it cannot refuse the rest."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for part in node.get("allOf", []):
                ref = part.get("$ref") if isinstance(part, dict) else None
                if isinstance(ref, str):
                    found.add(ref.rpartition("/")[2])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(defs)
    return found


def _close_objects(node: Any, *, partial: bool = False) -> None:
    """Add ``unevaluatedProperties: false`` to every whole object schema below ``node``."""
    if isinstance(node, list):
        for value in node:
            _close_objects(value)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "allOf":
            for part in value:
                # An inline allOf part is partial; its own children are not.
                _close_objects(part, partial=True)
        elif key == "properties":
            for schema in value.values():
                _close_objects(schema)
        elif key in ("if", "not"):
            continue  # a condition, not a shape: closing it would change what it matches
        elif key not in ("enum", "const", "required"):
            _close_objects(value)
    dispatch = any("if" in part for part in node.get("allOf", []))
    # A dispatch on ``type`` closes nothing itself: the variant it picks does.
    declares = not dispatch and ("properties" in node or "allOf" in node)
    if declares and not partial and "additionalProperties" not in node and "unevaluatedProperties" not in node:
        node["unevaluatedProperties"] = False


def _allow_null(schema: dict[str, Any], prop: str) -> None:
    for node in (schema, *schema.get("allOf", [])):
        properties = node.get("properties", {})
        if prop in properties:
            properties[prop] = {"anyOf": [properties[prop], {"type": "null"}]}
            return
    raise KeyError(prop)


@cache
def _registry(strict: bool) -> Registry[Any]:
    document = json.loads(SCHEMA_PATH.read_text())
    defs: dict[str, Any] = document["$defs"]
    for name, prop in _NULL_IN_EXAMPLES:
        _allow_null(defs[name], prop)
    for name, extra in _SENT_BUT_UNDECLARED.items():
        defs[name].setdefault("properties", {}).update(extra)
    if strict:
        partial = _allof_members(defs)
        for name, schema in defs.items():
            _close_objects(schema, partial=name in partial)
    resource: Resource[Any] = Resource.from_contents(document)
    return Registry().with_resource(document["$id"], resource)


@cache
def _validator(name: str, strict: bool) -> Draft202012Validator:
    registry = _registry(strict)
    base = next(iter(registry))
    return Draft202012Validator({"$ref": f"{base}#/$defs/{name}"}, registry=registry)


def _check(name: str, value: Any, strict: bool) -> None:
    # The document's own rules first: a value failing one inside an allOf part also
    # leaves its properties unevaluated, and that message would hide the real one.
    error = best_match(_validator(name, False).iter_errors(value))
    if error is None and strict:
        error = best_match(_validator(name, True).iter_errors(value))
    if error is not None:
        where = "".join(f"[{p!r}]" for p in error.absolute_path) or "(root)"
        raise SchemaMismatch(f"{name}{where}: {error.message} (rule {'/'.join(map(str, error.absolute_schema_path))})")


def validate_event(event: dict[str, Any], *, strict: bool = True) -> None:
    """One stream event (``ResponseStreamEvent``: every variant, dispatched on ``type``)."""
    _check("ResponseStreamEvent", event, strict)


def validate_response(body: dict[str, Any], *, strict: bool = True) -> None:
    """A ``Response`` (a non-streamed answer, a ``GET``, the response inside an event)."""
    _check("Response", body, strict)


def validate_input_items(listing: dict[str, Any], *, strict: bool = True) -> None:
    """``GET /v1/responses/{id}/input_items`` (``ResponseItemList``)."""
    _check("ResponseItemList", listing, strict)


def validate_deleted(body: dict[str, Any], *, strict: bool = True) -> None:
    """``DELETE /v1/responses/{id}`` (the reference's example body; the document declares none)."""
    _check("ResponseDeleted", body, strict)


def validate_error(body: dict[str, Any], *, strict: bool = True) -> None:
    """An error body (``ErrorResponse``)."""
    _check("ErrorResponse", body, strict)


# -------------------------------------------------------------------------- streams


def parse_stream(raw: bytes) -> list[dict[str, Any]]:
    """A whole SSE body as event dicts; each ``event:`` line names its event's ``type``, keep-alive comments skipped."""
    events: list[dict[str, Any]] = []
    for sse in parse_sse(raw):
        if sse.data is None:
            continue
        if not sse.raw.endswith(b"\n\n"):
            raise SchemaMismatch(f"stream cut inside an event: {sse.raw[:200]!r}")
        event = json.loads(sse.data)
        if sse.event != event.get("type"):
            raise SchemaMismatch(f"event: {sse.event!r} line for an event of type {event.get('type')!r}")
        events.append(event)
    return events


class _Item:
    __slots__ = ("id", "type", "done", "parts", "texts")

    def __init__(self, item: dict[str, Any]) -> None:
        self.id: str | None = item.get("id")
        self.type: str = item["type"]
        self.done: dict[str, Any] | None = None
        # content_index -> open (True) / done (False)
        self.parts: dict[int, bool] = {}
        # (event family, content_index) -> deltas so far
        self.texts: dict[tuple[str, int], list[str]] = {}


def _fail(position: int, event: dict[str, Any], why: str) -> SchemaMismatch:
    return SchemaMismatch(f"event {position} ({event.get('type')}, sequence_number {event.get('sequence_number')}): {why}")


def check_stream(events: list[dict[str, Any]], *, strict: bool = True) -> dict[str, Any]:
    """Check a whole stream and return the terminal event's response.

    - every event validates (:func:`validate_event`);
    - ``sequence_number`` is 0, 1, 2, ... (strictly increasing by one, as OpenAI numbers them);
    - ``response.created`` first (``response.queued`` may follow it), then
      ``response.in_progress``; the same response id in every response event;
    - exactly one terminal event (``response.completed`` / ``.incomplete`` /
      ``.failed``), last, its ``response.status`` matching (an ``error`` event
      may precede ``response.failed``);
    - ``response.output_item.added`` with ``output_index`` 0, 1, 2..., each
      closed once by ``response.output_item.done`` with the same index, id and
      type (before a completed or incomplete end; a failed one may leave items open);
    - ``response.content_part.added``/``.done`` paired per (item, ``content_index``),
      inside their item;
    - every other event naming an ``output_index`` refers to an open item with
      that ``item_id``, and one naming a ``content_index`` to an open part of it
      (``response.reasoning_summary_*`` use ``summary_index`` and are only
      required to be inside their item);
    - a ``*.done`` text event carries the concatenation of its deltas;
    - the terminal response's ``output`` is the items as ``output_item.done`` sent them.
    """
    if not events:
        raise SchemaMismatch("empty stream")
    for position, event in enumerate(events):
        try:
            validate_event(event, strict=strict)
        except SchemaMismatch as exc:
            raise _fail(position, event, str(exc)) from None
        if event["sequence_number"] != position:
            raise _fail(position, event, f"sequence_number should be {position}")

    kinds = [event["type"] for event in events]
    opening = [kind for kind in kinds[:3] if kind != "response.queued"][:2]
    if opening != list(_OPENING) or kinds[0] != "response.created":
        raise SchemaMismatch(f"a stream opens with response.created, response.in_progress: {kinds[:3]}")
    terminal = events[-1]
    if terminal["type"] not in TERMINAL:
        raise SchemaMismatch(f"the stream ends with {terminal['type']}, not a terminal event")
    for position, kind in enumerate(kinds[:-1]):
        if kind in TERMINAL:
            raise _fail(position, events[position], "a terminal event before the end")
        if kind == "error" and not (position == len(kinds) - 2 and terminal["type"] == "response.failed"):
            raise _fail(position, events[position], "an error event only right before response.failed")
    status = terminal["type"].removeprefix("response.")
    if terminal["response"]["status"] != status:
        raise SchemaMismatch(f"{terminal['type']} carries a response with status {terminal['response']['status']!r}")
    response_id = events[0]["response"]["id"]
    for position, event in enumerate(events):
        if "response" in event and event["response"]["id"] != response_id:
            raise _fail(position, event, f"response id {event['response']['id']!r}, the stream's is {response_id!r}")

    items: list[_Item] = []
    for position, event in enumerate(events):
        _follow(items, position, event)
    if status != "failed":
        for index, item in enumerate(items):
            if item.done is None:
                raise SchemaMismatch(f"output item {index} ({item.type}) was added and never done")
            if any(item.parts.values()):
                raise SchemaMismatch(f"output item {index} has content parts never done")
        output = terminal["response"]["output"]
        sent = [item.done for item in items]
        if output != sent:
            raise SchemaMismatch(f"the final response's output differs from the items output_item.done sent:\n{output}\n!=\n{sent}")
    return terminal["response"]


def _follow(items: list[_Item], position: int, event: dict[str, Any]) -> None:
    kind: str = event["type"]
    if kind == "response.output_item.added":
        if event["output_index"] != len(items):
            raise _fail(position, event, f"output_index should be {len(items)}")
        items.append(_Item(event["item"]))
        return
    if "output_index" not in event:
        return
    index = event["output_index"]
    if not 0 <= index < len(items):
        raise _fail(position, event, f"output_index {index} was never added")
    item = items[index]
    if item.done is not None:
        raise _fail(position, event, f"output item {index} is already done")
    if kind == "response.output_item.done":
        done = event["item"]
        if (done.get("id"), done["type"]) != (item.id, item.type):
            raise _fail(position, event, f"done item {done.get('id')}/{done['type']} was added as {item.id}/{item.type}")
        if any(item.parts.values()):
            raise _fail(position, event, "the item still has open content parts")
        item.done = done
        return
    if "item_id" in event and event["item_id"] != item.id:
        raise _fail(position, event, f"item_id {event['item_id']!r}, output item {index} is {item.id!r}")
    if "content_index" not in event:
        _text(item, position, event, kind, -1)
        return
    part = event["content_index"]
    if kind == "response.content_part.added":
        if part in item.parts:
            raise _fail(position, event, f"content part {part} added twice")
        item.parts[part] = True
        return
    if not item.parts.get(part):
        raise _fail(position, event, f"content part {part} of item {index} is not open")
    if kind == "response.content_part.done":
        item.parts[part] = False
        return
    _text(item, position, event, kind, part)


def _text(item: _Item, position: int, event: dict[str, Any], kind: str, part: int) -> None:
    """Deltas are collected per family; the family's ``.done`` must carry their concatenation."""
    family, _, step = kind.rpartition(".")
    if kind.startswith("response.reasoning_summary"):
        part = event.get("summary_index", part)
    if step == "delta" and isinstance(event.get("delta"), str):
        item.texts.setdefault((family, part), []).append(event["delta"])
    elif step == "done":
        sent = next((event[key] for key in ("text", "arguments", "refusal", "code", "partial_json") if isinstance(event.get(key), str)), None)
        deltas = item.texts.get((family, part))
        if sent is not None and deltas is not None and "".join(deltas) != sent:
            raise _fail(position, event, f"done text {sent!r} is not the deltas joined {''.join(deltas)!r}")
