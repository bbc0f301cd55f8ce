"""A server's tool declarations are hostile input: bound them before a model sees them.

A tool whose input schema is too large, too deep, not an object schema, or
not a valid JSON Schema is skipped (the operator sees why in the log and in
``/ready``); descriptions are cut. The registry compiles the accepted schema
for argument validation, so an unbounded one would cost every call.
"""

from __future__ import annotations

from typing import Any

import orjson
from jsonschema import exceptions as schema_errors
from jsonschema import validators

__all__ = ["SchemaLimits", "bounded_parameters"]


class SchemaLimits:
    __slots__ = ("max_bytes", "max_depth")

    def __init__(self, *, max_bytes: int, max_depth: int) -> None:
        self.max_bytes = max_bytes
        self.max_depth = max_depth


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of ``value``, iteratively (a hostile schema must not exhaust the stack); stops past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())  # pyright: ignore[reportUnknownVariableType,reportUnknownArgumentType]
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)  # pyright: ignore[reportUnknownVariableType,reportUnknownArgumentType]
    return deepest


def bounded_parameters(schema: Any, limits: SchemaLimits) -> tuple[dict[str, Any] | None, str | None]:
    """(the schema to offer, None) or (None, why the tool is skipped)."""
    if not isinstance(schema, dict):
        return None, "its input schema is not an object"
    try:
        size = len(orjson.dumps(schema))
    except (TypeError, orjson.JSONEncodeError):
        return None, "its input schema is not JSON"
    if size > limits.max_bytes:
        return None, f"its input schema is {size} bytes (limit {limits.max_bytes})"
    if _depth(schema, limits.max_depth) > limits.max_depth:
        return None, f"its input schema is nested deeper than {limits.max_depth}"
    parameters: dict[str, Any] = dict(schema)  # pyright: ignore[reportUnknownArgumentType]
    if parameters.get("type", "object") != "object":
        return None, "its input schema does not describe an object"
    parameters.setdefault("type", "object")
    parameters.setdefault("properties", {})
    try:
        validators.validator_for(parameters).check_schema(parameters)
    except schema_errors.SchemaError as exc:
        return None, f"its input schema is invalid ({exc.message[:200]})"
    return parameters, None
